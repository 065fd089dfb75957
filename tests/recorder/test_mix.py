"""Mixed-stream CloudRecording of a real room (LiveKit and Janus): four anchors in distinct colours
and tones; the recorded canvas is checked window by window through layout changes made while
recording, with watermarks served over HTTP, and the mixed sound for every anchor's tone."""

from __future__ import annotations

import http.server
import io
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest

from capstan.media import naming, playlist
from devstack import podrunner
from tests.conftest import wait_for
from tests.recorder.test_recording import ANCHORS, MORE_ANCHORS, SDKAPPID, decode, objects, recorder_operator, recording

__all__ = ["recorder_operator"]  # the fixture, used by name

pytestmark = [pytest.mark.stack, pytest.mark.timeout(400)]

USERS = ["alice", "bob", "carol", "dave"]
COLOURS = {u: (ANCHORS | MORE_ANCHORS)[u][0] for u in USERS}
TONES = {u: (ANCHORS | MORE_ANCHORS)[u][1] for u in USERS}
W, H = 640, 360
PTS_OFFSET = 1.0  # capstan.media.timeline.PTS_OFFSET_SECONDS: TS time 1.0 is the playlist's start
BROKEN = "http://169.254.169.254/latest/meta-data/mark.png"  # link-local: the URL policy refuses it


BACKGROUND = (250, 130, 0)  # the background image's colour: no anchor's, not the placeholder's
PLACEHOLDER = (128, 128, 128)


def png(rgba: np.ndarray) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="image2pipe") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = rgba.shape[1], rgba.shape[0], "rgba"
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(rgba, format="rgba")), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def watermark_png() -> bytes:
    rgba = np.zeros((32, 64, 4), np.uint8)
    rgba[:, :32] = (255, 255, 255, 255)  # opaque white on the left, transparent on the right
    return png(rgba)


@pytest.fixture
def image_server() -> Iterator[str]:
    """Images on loopback (allowlisted for the tests): ``/mark.png`` (a watermark), ``/bg.png`` (a
    background in :data:`BACKGROUND`)."""
    bodies = {"/mark.png": watermark_png(), "/bg.png": png(np.full((36, 64, 4), (*BACKGROUND, 255), np.uint8))}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = bodies.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mark.png"
    server.shutdown()


def canvases(stored: dict[str, bytes], playlist_name: str) -> list[tuple[float, np.ndarray]]:
    """(wall time, RGB picture) of every mixed canvas, from the stored segments."""
    listed = playlist.parse(stored[playlist_name].decode())
    start = listed.start_rec_time_ms / 1000
    out = []
    for entry in listed.entries:
        # MPEG-TS named: a short last segment (a few packets) is too short for FFmpeg to guess the format
        with av.open(io.BytesIO(stored[entry.uri]), format="mpegts") as container:
            for frame in container.decode(video=0):
                out.append((start + float(frame.time or 0) - PTS_OFFSET, frame.to_ndarray(format="rgb24")))
    return out


def who(picture: np.ndarray, x: int, y: int) -> str | None:
    """The anchor whose colour is at (x, y), or None."""
    pixel = picture[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3).mean(axis=0)
    for user, colour in COLOURS.items():
        if np.abs(pixel - np.array(colour)).max() < 35:
            return user
    return None


def between(pictures: list[tuple[float, np.ndarray]], begin: float, end: float) -> list[np.ndarray]:
    chosen = [p for t, p in pictures if begin <= t <= end]
    assert chosen, f"no canvas between {begin} and {end}"
    return chosen


def test_four_anchors_mixed_through_layout_changes_with_watermarks(recorder_operator, tasks, room, s3, bucket,
                                                                    receiver, image_server):
    for user in USERS:
        room.start(user)
    marks = [{"url": image_server, "left": 560, "top": 8, "width": 64, "height": 32},
             {"url": BROKEN, "left": 0, "top": 0, "width": 32, "height": 32}]
    tasks.create(recording("mix", room, bucket, receiver, recordMode="mix",
                           video={"width": W, "height": H, "fps": 15, "bitrate": 600000, "gop": 2},
                           mixLayout={"mode": "grid", "backgroundColor": "#000000"}, watermarks=marks))
    st = tasks.wait_phase("mix", "recording", timeout=60)
    task_id = st["taskId"]
    wait_for(lambda: len(tasks.status("mix").get("anchors", [])) == 4, 30, what="four anchors mixed")
    time.sleep(5)
    changes = {}
    for mode, layout in [("floating", {"mode": "floating", "mainUserId": "carol"}),
                         ("screenShare", {"mode": "screenShare", "mainUserId": "bob"}),
                         ("custom", {"mode": "custom", "regions": [
                             {"userId": "alice", "left": 0, "top": 0, "width": W, "height": H, "zOrder": 1},
                             {"userId": "bob", "left": 100, "top": 60, "width": 300, "height": 200, "zOrder": 3},
                             {"userId": "carol", "left": 200, "top": 100, "width": 300, "height": 200, "zOrder": 2,
                              "renderMode": "fit"}]})]:
        tasks.patch_spec("mix", {"mixLayout": layout})
        changes[mode] = time.time()  # ModifyCloudRecording has returned
        time.sleep(4)
    room.stop("dave")  # leaves: gone from the next canvas (he has no window in the custom layout anyway)
    time.sleep(2)
    stopped = time.time()
    tasks.patch_spec("mix", {"stop": True})
    st = tasks.wait_phase("mix", "finished", timeout=240)

    stored = objects(s3, bucket, task_id)
    name = naming.mixed_playlist_name(SDKAPPID, room.name)
    assert name in stored, sorted(stored)
    text = stored[name].decode()
    assert f"#EXT-X-TRTC-VIDEO-METADATA:WIDTH:{W} HEIGHT:{H}" in text and "#EXT-X-ENDLIST" in text
    assert naming.mixed_mp4_name(SDKAPPID, room.name, 1) in stored
    assert all(naming.USER_START not in k for k in stored), sorted(stored)
    pictures = canvases(stored, name)

    # grid: four windows, each one anchor's colour, every anchor once; the watermark over the top right
    for picture in between(pictures, changes["floating"] - 3, changes["floating"] - 0.5):
        tiles = [who(picture, x, y) for x, y in ((160, 90), (480, 90), (160, 270), (480, 270))]
        assert sorted(t or "-" for t in tiles) == sorted(USERS), tiles
        assert np.abs(picture[24, 570].astype(int) - 255).max() < 30  # the opaque half of the PNG
        assert who(picture, 612, 24) == tiles[1]  # its transparent half shows the window under it
    # floating, carol full: her colour behind, the others in 23.5% tiles from the bottom left
    for picture in between(pictures, changes["floating"] + 1, changes["screenShare"] - 0.5):
        assert who(picture, 320, 100) == "carol"
        small = [who(picture, round((0.012 + i * 0.247 + 0.1175) * W), round((1 - 0.012 - 0.1175) * H))
                 for i in range(3)]
        assert sorted(s or "-" for s in small) == ["alice", "bob", "dave"], small
    # screen sharing, bob large on the left, the others 1/5 x 1/4 down the right
    for picture in between(pictures, changes["screenShare"] + 1, changes["custom"] - 0.5):
        assert who(picture, 256, 180) == "bob"
        small = [who(picture, 576, 45 + 90 * i) for i in range(3)]
        assert sorted(s or "-" for s in small) == ["alice", "carol", "dave"], small
    # custom: alice underneath, bob (z 3) over carol (z 2) where they overlap, dave nowhere
    seen = [(round(t - changes["custom"], 2), who(p, 20, 340), who(p, 300, 200)) for t, p in pictures
            if t > changes["custom"] - 1][::5]
    for picture in between(pictures, changes["custom"] + 1, stopped - 0.5):
        assert who(picture, 20, 340) == "alice", f"(seconds after the change, bottom left, overlap): {seen}"
        assert who(picture, 300, 200) == "bob"
        assert who(picture, 450, 250) == "carol"
        assert "dave" not in {who(picture, x, y) for x in range(20, W, 40) for y in range(20, H, 40)}

    # the mix holds every anchor's tone (the last seconds with all four: before dave left)
    with av.open(io.BytesIO(stored[naming.mixed_mp4_name(SDKAPPID, room.name, 1)])) as container:
        samples = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)])
    assert len(samples) / 48000 > 15
    begin = playlist.parse(text).start_rec_time_ms / 1000  # the MP4 starts where the playlist does
    end = round((changes["custom"] + 3 - begin) * 48000)
    window = samples[max(0, end - 96000):end]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    freqs = np.fft.rfftfreq(len(window), 1 / 48000)
    for user, tone in TONES.items():
        assert spectrum[np.abs(freqs - tone) < 4].max() > spectrum.max() / 8, f"{user}'s {tone} Hz not in the mix"

    # events: the mixed playlist's 307 (no user), 309 for the broken watermark only, the usual ending
    assert not receiver.bad
    types = receiver.types()
    assert types[:2] == [301, 303] and 307 in types and 304 in types, types
    assert types[-4:] == [302, 310, 305, 0], types
    image_errors = [b["EventInfo"]["Payload"] for b in receiver.bodies if b.get("EventType") == 309]
    assert image_errors and all(p == {"Url": BROKEN} for p in image_errors), image_errors
    slice_ = next(b["EventInfo"]["Payload"] for b in receiver.bodies if b.get("EventType") == 307)
    assert slice_["FileName"].endswith(name) and slice_["TrackType"] == "audio_video"


def looks(picture: np.ndarray, x: int, y: int) -> str | None:
    """Who or what is at (x, y): an anchor, "placeholder", "background" (the image) or None."""
    pixel = picture[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3).mean(axis=0)
    for name, colour in {**COLOURS, "placeholder": PLACEHOLDER, "background": BACKGROUND}.items():
        if np.abs(pixel - np.array(colour)).max() < 35:
            return name
    return None


QUADRANTS = ((160, 90), (480, 90), (160, 270), (480, 270))  # grid of 3 or 4 at 640x360, row by row


def status_anchors(tasks: Any, name: str) -> set[str]:
    return set(tasks.status(name).get("anchors", []))


def test_anchors_joining_and_leaving_move_the_grid_over_a_background_image_and_a_placeholder(
        recorder_operator, tasks, room, s3, bucket, image_server):
    """carol publishes audio only: her window is the placeholder colour; the background image shows in
    the quarter a grid of three leaves empty; dave joins (four windows), then bob leaves (three)."""
    room.start("alice")
    room.start("carol", video=False)
    room.start("bob")
    background = image_server.rsplit("/", 1)[0] + "/bg.png"
    tasks.create(recording("mixjoin", room, bucket, recordMode="mix",
                           video={"width": W, "height": H, "fps": 15, "bitrate": 600000, "gop": 2},
                           output={"formats": ["hls"], "prefix": "rec", "segmentSeconds": 2},
                           mixLayout={"mode": "grid", "backgroundImageUrl": background,
                                      "placeholderColor": "#808080"}))
    task_id = tasks.wait_phase("mixjoin", "recording", timeout=60)["taskId"]
    wait_for(lambda: status_anchors(tasks, "mixjoin") == {"alice", "bob", "carol"}, 30, what="three anchors mixed")
    time.sleep(5)  # record three windows for a while
    before_join = time.time()
    room.start("dave")
    wait_for(lambda: "dave" in status_anchors(tasks, "mixjoin"), 30, what="dave mixed")
    dave_mixed = time.time()
    time.sleep(6)
    before_leave = time.time()
    room.stop("bob")
    wait_for(lambda: "bob" not in status_anchors(tasks, "mixjoin"), 30, what="bob out of the mix")
    bob_gone = time.time()
    time.sleep(4)
    stopped = time.time()
    tasks.patch_spec("mixjoin", {"stop": True})
    tasks.wait_phase("mixjoin", "finished", timeout=180)

    stored = objects(s3, bucket, task_id)
    pictures = canvases(stored, naming.mixed_playlist_name(SDKAPPID, room.name))

    def tiles(picture: np.ndarray) -> list[str]:
        return [looks(picture, x, y) or "-" for x, y in QUADRANTS]

    inside = [(x, y) for x in range(20, W, 40) for y in range(20, H, 40)
              if abs(x - W // 2) > 16 and abs(y - H // 2) > 16]  # not on the windows' edges (codec blur)

    def anywhere(picture: np.ndarray) -> dict[str | None, tuple[int, int]]:
        return {looks(picture, x, y): (x, y) for x, y in inside}

    # three windows: alice, bob and carol's placeholder; the background image in the fourth quarter
    for picture in between(pictures, before_join - 2.5, before_join - 0.3):
        t = tiles(picture)
        assert sorted(t[:3]) == ["alice", "bob", "placeholder"] and t[3] == "background", t
    # (1 s of slack: a picture's capture time comes from the sender's RTP/RTCP clock mapping)
    early = [(round(t - before_join, 2), anywhere(p)["dave"]) for t, p in pictures
             if t < before_join - 1.0 and "dave" in anywhere(p)]
    assert not early, f"dave before he joined (seconds before, where): {early[:5]}"
    # dave joins: four windows, no background left
    for picture in between(pictures, dave_mixed + 3, before_leave - 0.3):
        assert sorted(tiles(picture)) == ["alice", "bob", "dave", "placeholder"], tiles(picture)
    # bob leaves: three windows again (alice, carol, dave), bob nowhere, the background back
    for picture in between(pictures, bob_gone + 0.5, stopped - 0.5):
        t = tiles(picture)
        assert sorted(t[:3]) == ["alice", "dave", "placeholder"] and t[3] == "background", t
        assert "bob" not in anywhere(picture), anywhere(picture)


def tone_levels(samples: np.ndarray) -> dict[float, float]:
    """Each anchor tone's peak relative to the loudest peak of ``samples`` (48 kHz mono)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / 48000)
    return {tone: float(spectrum[np.abs(freqs - tone) < 4].max() / spectrum.max()) for tone in TONES.values()}


def test_audio_only_mix_to_mp3_holds_every_anchors_tone(recorder_operator, tasks, room, s3, bucket):
    for user in USERS[:3]:
        room.start(user)
    tasks.create(recording("mixmp3", room, bucket, recordMode="mix", streamType="audio",
                           output={"formats": ["hls", "mp3"], "prefix": "rec", "segmentSeconds": 2}))
    task_id = tasks.wait_phase("mixmp3", "recording", timeout=60)["taskId"]
    wait_for(lambda: status_anchors(tasks, "mixmp3") == set(USERS[:3]), 30, what="three anchors mixed")
    time.sleep(6)
    tasks.patch_spec("mixmp3", {"stop": True})
    st = tasks.wait_phase("mixmp3", "finished", timeout=180)

    stored = objects(s3, bucket, task_id)
    name = naming.mixed_mp3_name(SDKAPPID, room.name)
    assert name in stored, sorted(stored)
    assert not any(k.endswith(".mp4") or naming.USER_START in k for k in stored), sorted(stored)
    assert "#EXT-X-TRTC-VIDEO-METADATA" not in stored[naming.mixed_playlist_name(SDKAPPID, room.name)].decode()
    with av.open(io.BytesIO(stored[name])) as container:
        assert not container.streams.video
        samples = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)])
    assert len(samples) / 48000 > 5
    levels = tone_levels(samples[-96000:])  # the last 2 s: all three were in the room
    for user in USERS[:3]:
        assert levels[TONES[user]] > 1 / 8, f"{user}'s {TONES[user]} Hz not in the mix: {levels}"
    assert levels[TONES["dave"]] < 1 / 20, f"a tone nobody published: {levels}"
    assert name in {f["fileName"].rsplit("/", 1)[-1] for f in st["files"]}


def test_a_killed_mix_recorder_keeps_its_segments_and_goes_on_in_ha1_files(recorder_operator, tasks, room, s3,
                                                                          bucket, namespace, receiver):
    room.start("alice")
    room.start("bob")
    tasks.create(recording("mixha", room, bucket, receiver, recordMode="mix",
                           video={"width": W, "height": H, "fps": 15, "bitrate": 600000, "gop": 2}))
    task_id = tasks.wait_phase("mixha", "recording", timeout=60)["taskId"]
    first = naming.mixed_playlist_name(SDKAPPID, room.name)
    prefix = f"rec/{task_id}/"

    def stored_segments() -> list[str]:
        return [o.object_name[len(prefix):] for o in s3.list_objects(bucket, prefix=prefix, recursive=True)
                if o.object_name.endswith(".ts")]

    wait_for(lambda: len(stored_segments()) >= 2, 60, what="two segments of the first attempt stored")
    podrunner.kill_container(namespace, "mixha-crec-a1", sig=signal.SIGKILL)
    killed = time.time()
    before_kill = stored_segments()
    wait_for(lambda: (s := tasks.status("mixha")).get("attempt") == 2 and s.get("phase") == "recording", 90,
             what="attempt 2 recording")
    wait_for(lambda: any(k.startswith("ha1_") for k in stored_segments()), 60, what="an ha1_ segment stored")
    time.sleep(3)
    tasks.patch_spec("mixha", {"stop": True})
    tasks.wait_phase("mixha", "finished", timeout=180)

    stored = objects(s3, bucket, task_id)
    second = naming.mixed_playlist_name(SDKAPPID, room.name, ha=1)
    assert first in stored and second in stored, sorted(stored)
    assert set(before_kill) <= set(stored), "segments of the killed attempt were lost"
    for entry in playlist.parse(stored[first].decode()).entries:
        assert entry.uri in stored and not entry.uri.startswith("ha"), entry.uri
    listed = playlist.parse(stored[second].decode())
    assert listed.ended and listed.entries and all(e.uri.startswith("ha1_") and e.uri in stored
                                                   for e in listed.entries), sorted(stored)
    assert naming.USER_START not in "".join(stored)
    # both attempts' canvases are the grid of two: alice on the left, bob on the right
    for name, begin, end in ((first, 0.0, killed - 0.5), (second, killed, time.time())):
        shown = [p for t, p in canvases(stored, name) if begin <= t <= end]
        assert shown, name
        for picture in shown[len(shown) // 2:]:
            assert sorted(who(picture, x, H // 2) or "-" for x in (160, 480)) == ["alice", "bob"], name
    assert 306 in receiver.types() and not receiver.bad
    # the MP4 is made from both attempts: it spans them, with the failover's gap
    _, seconds = decode(stored[naming.mixed_mp4_name(SDKAPPID, room.name, 1)], "audio")
    both = sum(e.duration for name in (first, second) for e in playlist.parse(stored[name].decode()).entries)
    assert seconds >= both - 1.0, (seconds, both)
