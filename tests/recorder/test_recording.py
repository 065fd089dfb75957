"""Single-stream CloudRecording of a real room, end to end, on each room backend (LiveKit and Janus):
real API server and operator, the pod runner, a real room with synthetic anchors (a colour and a
tone each), real MinIO, and a callback receiver that checks every signature. Assertions are on the
media in the bucket."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
import uuid
from typing import Any

import av
import numpy as np
import pytest
from kubernetes import client

from capstan.api import GROUP, VERSION
from capstan.media import naming, playlist
from devstack import podrunner
from devstack.anchors import SyntheticAnchor
from devstack.harness import BackgroundLoop
from tests.conftest import wait_for
from tests.operator.test_callbacks_stack import KEY, Receiver
from tests.operator.test_operator_stack import Tasks

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

SDKAPPID = 1400000000
ANCHORS = {"alice": ((220, 40, 40), 440.0), "bob": ((40, 200, 60), 660.0), "carol": ((40, 60, 220), 1000.0)}
LIVEKIT_ONLY = pytest.mark.parametrize("room_server", ["livekit"], indirect=True)
MORE_ANCHORS = {"dave": ((200, 200, 40), 1320.0), "erin": ((200, 40, 200), 1760.0)}


class Room:
    """A room on one of the stack's room servers, with the anchors of ANCHORS joining and leaving."""

    def __init__(self, server: Any, loop: BackgroundLoop) -> None:
        self.server, self.loop = server, loop
        self.name = f"rec-{uuid.uuid4().hex[:8]}"
        self.control = server.control()
        self.anchors: dict[str, SyntheticAnchor] = {}
        self.started: dict[str, float] = {}
        self.stopped: dict[str, float] = {}
        loop.run(self.control.create_room(self.name))

    def start(self, user: str, **kw: Any) -> SyntheticAnchor:
        color, tone = ANCHORS.get(user) or MORE_ANCHORS[user]
        anchor = SyntheticAnchor(self.server, self.name, user, color=color, tone_hz=tone, **kw)
        self.loop.run(anchor.start())
        self.anchors[user], self.started[user] = anchor, time.time()
        return anchor

    def stop(self, user: str) -> None:
        # the moment it stops sending (its first step), not after the leave: leaving took 0.7 s on a
        # loaded CI machine, and the anchor's files rightly end at its last frame
        self.stopped[user] = time.time()
        self.loop.run(self.anchors.pop(user).stop())

    def kick(self, user: str) -> None:
        self.loop.run(self.control.remove_participant(self.name, user))

    def destroy(self) -> None:
        self.loop.run(self.control.close_room(self.name))

    def close(self) -> None:
        for user in list(self.anchors):
            self.stop(user)
        with contextlib.suppress(Exception):
            self.destroy()
        self.loop.run(self.control.aclose())


@pytest.fixture
def room(room_server, kube_api):
    loop = BackgroundLoop()
    r = Room(room_server, loop)
    yield r
    r.close()
    loop.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def recorder_operator(operator_factory, room_server):
    return operator_factory(CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE="media", **room_server.worker_env())


USE = {"labels": {"capstan.dev/use": "true"}}  # Secrets opt in to being used by tasks


@pytest.fixture
def tasks(kube_api, namespace, stack, room_server):
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "storage", **USE}, "stringData": {
        "accessKey": stack.s3_access_key, "secretKey": stack.s3_secret_key}}, _request_timeout=30)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "room-credentials", **USE},
                                              "stringData": room_server.secret_data()}, _request_timeout=30)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "callback-key", **USE},
                                              "stringData": {"key": KEY}}, _request_timeout=30)
    return Tasks(kube_api, namespace)


def recording(name: str, room: Room, bucket: str, receiver: Receiver | None = None, **spec: Any) -> dict:
    body: dict[str, Any] = {
        "room": room.server.room_spec(room.name, SDKAPPID),
        "recorderUserId": "robot",
        "video": {"width": 320, "height": 180, "fps": 15, "bitrate": 300000, "gop": 2},
        "output": {"formats": ["hls", "mp4"], "prefix": "rec", "segmentSeconds": 2},
        "storage": {"endpoint": os.environ["S3_ENDPOINT"], "bucket": bucket, "secure": False,
                    "credentialsSecretRef": {"name": "storage"}},
        "maxIdleTime": 30,
    }
    if receiver is not None:
        body["callback"] = {"url": receiver.url, "signingKeySecretRef": {"name": "callback-key", "key": "key"}}
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CloudRecording", "metadata": {"name": name}, "spec": body}


def objects(s3: Any, bucket: str, task_id: str) -> dict[str, bytes]:
    prefix = f"rec/{task_id}/"
    return {o.object_name[len(prefix):]: s3.get_object(bucket, o.object_name).read()
            for o in s3.list_objects(bucket, prefix=prefix, recursive=True)}


def decode(data: bytes, kind: str) -> tuple[list[np.ndarray], float]:
    """Frames (RGB for video, mono samples for audio) and the duration in seconds."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        frames, first, last = [], None, 0.0
        for frame in container.decode(stream):
            t = float(frame.time or 0.0)
            first = t if first is None else first
            if kind == "video":
                last = t + 1 / 15
                frames.append(frame.to_ndarray(format="rgb24"))
            else:
                last = t + frame.samples / frame.sample_rate
                frames.append(frame.to_ndarray().mean(axis=0))
    return frames, last - (first or 0.0)


def dominant_hz(samples: np.ndarray, rate: int = 48000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def playlist_seconds(text: str) -> float:
    return sum(seg.duration for seg in playlist.parse(text).entries)


def test_three_anchors_each_in_their_own_files(recorder_operator, tasks, room, s3, bucket, receiver):
    for user in ANCHORS:
        room.start(user)
    tasks.create(recording("three", room, bucket, receiver))
    st = tasks.wait_phase("three", "recording", timeout=60)
    task_id = st["taskId"]
    wait_for(lambda: len(tasks.status("three").get("anchors", [])) == 3, 30, what="three anchors recorded")
    time.sleep(6)
    room.stop("carol")  # carol leaves early: her files end there
    time.sleep(4)
    tasks.patch_spec("three", {"stop": True})
    st = tasks.wait_phase("three", "finished", timeout=180)

    stored = objects(s3, bucket, task_id)
    for user, (color, tone) in ANCHORS.items():
        for track in ("audio", "video"):
            name = naming.single_playlist_name(SDKAPPID, room.name, user, "main", track)
            assert name in stored, f"{name} missing; stored: {sorted(stored)}"
            text = stored[name].decode()
            assert "#EXT-X-TRTC-START-REC-TIME:" in text and "#EXT-X-ENDLIST" in text
            if track == "video":
                assert "#EXT-X-TRTC-VIDEO-METADATA:WIDTH:320 HEIGHT:180" in text
            for seg in playlist.parse(text).entries:
                assert seg.uri in stored, f"{seg.uri} listed but not stored"
                parsed = naming.parse_name(seg.uri)
                assert (parsed.user_id, parsed.track.value if parsed.track else None) == (user, track)
        mp4 = naming.single_mp4_name(SDKAPPID, room.name, user, "main", 1)
        assert mp4 in stored, f"{mp4} missing"
        pictures, _ = decode(stored[mp4], "video")
        middle = pictures[len(pictures) // 2].reshape(-1, 3).mean(axis=0)
        assert np.abs(middle - np.array(color)).max() < 30, f"{user}: colour {middle} is not {color}"
        samples, audio_seconds = decode(stored[mp4], "audio")
        tail = np.concatenate(samples)[-48000:]
        assert abs(dominant_hz(tail) - tone) < 15, f"{user}: tone {dominant_hz(tail)} is not {tone}"
        # each user's audio holds only that user's tone: no other anchor's frequency is strong in it
        spectrum = np.abs(np.fft.rfft(tail))
        freqs = np.fft.rfftfreq(len(tail), 1 / 48000)
        for other, (_, other_tone) in ANCHORS.items():
            if other != user:
                near = spectrum[np.abs(freqs - other_tone) < 5].max()
                assert near < spectrum.max() / 20, f"{other}'s tone found in {user}'s audio"

    # durations: carol published until she left; the others until the stop
    audio = {u: stored[naming.single_playlist_name(SDKAPPID, room.name, u, "main", "audio")].decode()
             for u in ANCHORS}
    start = {u: playlist.parse(t).start_rec_time_ms / 1000 for u, t in audio.items()}
    carol_expected = room.stopped["carol"] - start["carol"]
    assert abs(playlist_seconds(audio["carol"]) - carol_expected) < 0.5, (playlist_seconds(audio["carol"]),
                                                                          carol_expected)
    assert playlist_seconds(audio["alice"]) > playlist_seconds(audio["carol"]) + 2

    # status tells the truth
    names = {f["fileName"] for f in st["files"]}
    for user in ANCHORS:
        for file_name in (naming.single_mp4_name(SDKAPPID, room.name, user, "main", 1),
                          naming.single_playlist_name(SDKAPPID, room.name, user, "main", "audio"),
                          naming.single_playlist_name(SDKAPPID, room.name, user, "main", "video")):
            assert f"rec/{task_id}/{file_name}" in names, f"status.files lacks {file_name}: {sorted(names)}"
    # callbacks: signed, in order
    assert not receiver.bad
    types = receiver.types()
    assert types[:3] == [301, 303, 307] and 304 in types
    assert types[-4:] == [302, 310, 305, 0], types
    assert types.count(307) == 6
    reasons = [r for r, _ in tasks.events("three")]  # Kubernetes Events mirror the callbacks
    for reason in ("RecorderStart", "UploadStart", "FileSlice", "FileInfo", "RecorderStop", "Mp4Stop", "UploadStop",
                   "Result"):
        assert reason in reasons, reasons
    result = receiver.bodies[-1]
    assert {f["UserId"] for f in result["Files"]} >= set(ANCHORS) and all(f["Status"] == 1 for f in result["Files"])


def test_subscription_change_starts_and_stops_files(recorder_operator, tasks, room, s3, bucket):
    room.start("alice")
    room.start("bob")
    tasks.create(recording("subs", room, bucket, subscribe={"audioAllow": ["alice"], "videoAllow": ["alice"]},
                           output={"formats": ["hls"], "prefix": "rec", "segmentSeconds": 2}))
    st = tasks.wait_phase("subs", "recording", timeout=60)
    time.sleep(5)
    changed_at = time.time()
    tasks.patch_spec("subs", {"subscribe": {"audioAllow": [], "videoAllow": [], "videoDeny": ["alice"]}})
    wait_for(lambda: "bob" in tasks.status("subs").get("anchors", []), 30, what="bob recorded after the change")
    time.sleep(5)
    tasks.patch_spec("subs", {"stop": True})
    tasks.wait_phase("subs", "finished", timeout=120)
    stored = objects(s3, bucket, st["taskId"])

    def pl(user: str, track: str) -> str | None:
        data = stored.get(naming.single_playlist_name(SDKAPPID, room.name, user, "main", track))
        return data.decode() if data else None

    assert pl("alice", "audio") and pl("alice", "video") and pl("bob", "audio") and pl("bob", "video")
    bob_start = playlist.parse(pl("bob", "audio")).start_rec_time_ms / 1000
    assert bob_start >= changed_at - 1.0, "bob's audio started before he was subscribed"
    alice_video = playlist.parse(pl("alice", "video"))
    alice_video_end = alice_video.start_rec_time_ms / 1000 + playlist_seconds(pl("alice", "video"))
    assert alice_video_end < changed_at + 3.0, "alice's video went on after videoDeny"
    assert playlist_seconds(pl("alice", "audio")) > playlist_seconds(pl("alice", "video")) + 3


def test_killed_recorder_continues_in_ha1_files(recorder_operator, tasks, room, s3, bucket, namespace, receiver):
    room.start("alice")
    tasks.create(recording("ha", room, bucket, receiver))
    st = tasks.wait_phase("ha", "recording", timeout=60)
    time.sleep(6)
    podrunner.kill_container(namespace, "ha-crec-a1", sig=signal.SIGKILL)
    wait_for(lambda: (s := tasks.status("ha")).get("attempt") == 2 and s.get("phase") == "recording", 90,
             what="attempt 2 recording")
    time.sleep(6)
    tasks.patch_spec("ha", {"stop": True})
    st = tasks.wait_phase("ha", "finished", timeout=180)
    stored = objects(s3, bucket, st["taskId"])
    first = naming.single_playlist_name(SDKAPPID, room.name, "alice", "main", "audio")
    second = naming.single_playlist_name(SDKAPPID, room.name, "alice", "main", "audio", ha=1)
    assert first in stored and second in stored, sorted(stored)
    assert any(k.startswith("ha1_") and k.endswith(".ts") for k in stored)
    assert 306 in receiver.types() and not receiver.bad
    # the MP4 is the union of both attempts: it spans both, with the gap of the failover
    _, seconds = decode(stored[naming.single_mp4_name(SDKAPPID, room.name, "alice", "main", 1)], "audio")
    both = playlist_seconds(stored[first].decode()) + playlist_seconds(stored[second].decode())
    assert seconds >= both - 1.0, (seconds, both)


@pytest.mark.parametrize("path", ["kick", "destroy", "idle", "delete"])
def test_each_stop_path_ends_finished_with_files(path, recorder_operator, tasks, room, s3, bucket, receiver):
    room.start("alice")
    name = f"stop-{path}"
    tasks.create(recording(name, room, bucket, receiver, maxIdleTime=5,
                           output={"formats": ["hls"], "prefix": "rec", "segmentSeconds": 2}))
    st = tasks.wait_phase(name, "recording", timeout=60)
    time.sleep(4)
    if path == "kick":
        room.kick("robot")
    elif path == "destroy":
        room.destroy()
    elif path == "idle":
        room.stop("alice")
    else:
        tasks.delete(name)
        wait_for(lambda: tasks.get(name) is None, 120, what="resource gone after the worker stopped")
    if path != "delete":
        st = tasks.wait_phase(name, "finished", timeout=120)
    stored = objects(s3, bucket, st["taskId"])
    audio = naming.single_playlist_name(SDKAPPID, room.name, "alice", "main", "audio")
    assert audio in stored and "#EXT-X-ENDLIST" in stored[audio].decode()
    expected = {"kick": 1, "destroy": 2, "idle": 99, "delete": 0}[path]
    wait_for(lambda: 302 in receiver.types(), 30, what="302 delivered")
    leave = next(b for b in receiver.bodies if b["EventType"] == 302)
    assert leave["EventInfo"]["Payload"]["LeaveCode"] == expected


def test_audio_only_recording_gives_one_mp3_per_anchor(recorder_operator, tasks, room, s3, bucket):
    """The single-stream function's mode 00: audio only, MP3 per user."""
    room.start("alice")
    room.start("bob")
    tasks.create(recording("mp3", room, bucket, streamType="audio",
                           output={"formats": ["hls", "mp3"], "prefix": "rec", "segmentSeconds": 2}))
    st = tasks.wait_phase("mp3", "recording", timeout=60)
    time.sleep(6)
    tasks.patch_spec("mp3", {"stop": True})
    st = tasks.wait_phase("mp3", "finished", timeout=120)
    stored = objects(s3, bucket, st["taskId"])
    assert not any(naming.USER_START in k and "_video" in k for k in stored), "video recorded in audio mode"
    mp3s = {k: v for k, v in stored.items() if k.endswith(".mp3")}
    assert len(mp3s) == 2, sorted(stored)
    for user in ("alice", "bob"):
        (data,) = [v for k, v in mp3s.items() if naming.encode_id(user) in k]
        samples, seconds = decode(data, "audio")
        assert seconds > 4
        assert abs(dominant_hz(np.concatenate(samples)[-48000:]) - ANCHORS[user][1]) < 15
    assert {f["fileName"].rsplit("/", 1)[-1] for f in st["files"]} >= {k for k in mp3s}


@LIVEKIT_ONLY  # Janus refuses a second participant with the same id instead of replacing the first
def test_the_recorder_identity_joining_twice_ends_with_leave_code_101(recorder_operator, tasks, room, s3, bucket,
                                                                    receiver, room_server):
    """LiveKit lets a second participant with the robot's identity in and removes the recorder."""
    from capstan.rooms.base import Role

    room.start("alice")
    tasks.create(recording("dup", room, bucket, receiver,
                           output={"formats": ["hls"], "prefix": "rec", "segmentSeconds": 2}))
    st = tasks.wait_phase("dup", "recording", timeout=60)
    time.sleep(3)
    token = room_server.token(room.name, "robot", Role.recorder)
    intruder = room.loop.run(room_server.connector().join(room_server.url, room.name, "robot", token))
    try:
        st = tasks.wait_phase("dup", "finished", timeout=120)
    finally:
        room.loop.run(intruder.leave())
    wait_for(lambda: 302 in receiver.types(), 30, what="302 delivered")
    leave = next(b for b in receiver.bodies if b["EventType"] == 302)
    assert leave["EventInfo"]["Payload"]["LeaveCode"] == 101
    stored = objects(s3, bucket, st["taskId"])
    audio = naming.single_playlist_name(SDKAPPID, room.name, "alice", "main", "audio")
    assert audio in stored and "#EXT-X-ENDLIST" in stored[audio].decode()


@LIVEKIT_ONLY  # the Janus anchors cannot start a screen share mid-session (no renegotiation)
def test_five_anchors_coming_and_going_with_a_screen_share(recorder_operator, tasks, room, s3, bucket, room_server):
    """Every anchor's files exist, main and aux apart, each covering the time that anchor published."""
    room.start("alice")
    room.start("bob")
    tasks.create(recording("five", room, bucket, output={"formats": ["hls"], "prefix": "rec", "segmentSeconds": 2}))
    st = tasks.wait_phase("five", "recording", timeout=60)
    time.sleep(3)
    room.start("carol")
    room.start("dave")
    time.sleep(3)
    share_started = time.time()
    room.loop.run(room.anchors["alice"].share_screen((250, 250, 250)))
    room.stop("bob")
    time.sleep(3)
    room.start("erin")
    time.sleep(3)
    room.loop.run(room.anchors["alice"].stop_screen_share())
    share_stopped = time.time()
    room.stop("dave")
    time.sleep(3)
    tasks.patch_spec("five", {"stop": True})
    stop_requested = time.time()
    st = tasks.wait_phase("five", "finished", timeout=180)
    stored = objects(s3, bucket, st["taskId"])

    def covered(user: str, media: str, track: str) -> tuple[float, float]:
        name = naming.single_playlist_name(SDKAPPID, room.name, user, media, track)
        assert name in stored, f"{name} missing; stored: {sorted(k for k in stored if k.endswith('.m3u8'))}"
        parsed = playlist.parse(stored[name].decode())
        last = parsed.entries[-1]
        start = naming.parse_name(last.uri).start
        assert start is not None
        # from the first frame to the end of the last segment, placed by its <utc> (frames a loaded
        # machine dropped in between do not move the end)
        return parsed.start_rec_time_ms / 1000, start.timestamp() + last.duration

    # Where a file ends is placed by the frames' arrival: five anchors, a share and the recorder on two
    # cores beside another media test placed ends 0.53-0.82 s off in CI runs (0.1-0.3 s on a quiet
    # machine); a file running on past a leave would be off by seconds (2 s segments, the stop later).
    EDGE_SLACK = 1.0
    for user in ("alice", "bob", "carol", "dave", "erin"):
        for track in ("audio", "video"):
            begin, end = covered(user, "main", track)
            published_from = room.started[user]
            published_until = room.stopped.get(user, stop_requested)
            # an anchor that joins while recording is seen from its first frame; those already there
            # from the recorder's join (startTime has whole seconds: +1)
            seen_from = published_from if published_from > st_begin(st) + 1 else st_begin(st) + 1
            assert published_from - 0.5 <= begin <= seen_from + 2.5, (user, track, begin, seen_from)
            if user in room.stopped:  # left while recording: the file ends at the leave
                assert abs(end - published_until) < EDGE_SLACK, (user, track, end, published_until)
            else:  # still there at the stop: recorded until the recorder saw the stop (stopTime has whole
                # seconds: +1, and the same 0.5 s placement slack as a leave)
                assert stop_requested - 0.5 <= end <= st_time(st, "stopTime") + 1.5, (user, track, end)
    begin, end = covered("alice", "aux", "video")
    assert share_started - 0.5 <= begin <= share_started + 2.5
    assert abs(end - share_stopped) < EDGE_SLACK, (end, share_stopped)
    aux_mp = stored[naming.single_playlist_name(SDKAPPID, room.name, "alice", "aux", "video")].decode()
    first_aux = playlist.parse(aux_mp).entries[0].uri
    pictures, _ = decode(stored[first_aux], "video")
    assert np.abs(pictures[-1].reshape(-1, 3).mean(axis=0) - 250).max() < 20, "aux is not the screen share"
    main_first = playlist.parse(stored[naming.single_playlist_name(
        SDKAPPID, room.name, "alice", "main", "video")].decode()).entries[-1].uri
    pictures, _ = decode(stored[main_first], "video")
    assert np.abs(pictures[-1].reshape(-1, 3).mean(axis=0) - np.array(ANCHORS["alice"][0])).max() < 30


def st_begin(st: dict) -> float:
    """When the task started recording (the anchors present at its start are seen from then)."""
    return st_time(st, "startTime")


def st_time(st: dict, field: str) -> float:
    from datetime import datetime

    value = st.get(field)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else 0.0
