"""What a single-stream recording leaves the user, end to end on each room backend (issue 8): every
anchor at its own size, only the formats asked for, events and status that wait for the storage,
305's three states, result URLs, and the stream limit. Real API server, operator, pod runner, room,
MinIO (a private one where the storage must fail) and a callback receiver that checks signatures."""

from __future__ import annotations

import io
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from capstan.media import naming, playlist
from tests.conftest import wait_for
from tests.recorder.test_recording import ANCHORS, SDKAPPID, decode, dominant_hz, objects, recording
from tests.storage.conftest import fast_client
from tests.storage.minio_proc import MinioProcess

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


@pytest.fixture
def recorder(operator_factory, room_server) -> Callable[..., Any]:
    """The operator with media workers; keyword arguments become the workers' environment."""
    def start(**env: str) -> Any:
        extra = {f"CAPSTAN_WORKER_ENV_{k}": v for k, v in env.items()}
        return operator_factory(CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE="media", **room_server.worker_env(), **extra)
    return start


def video_size(data: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(data)) as container:
        ctx = container.streams.video[0].codec_context
        return ctx.width, ctx.height


def body_of(receiver: Any, event_type: int) -> list[dict]:
    """The bodies received of one event type (0: result bodies, which have no TRTC envelope)."""
    with receiver.lock:
        return [b for b in receiver.bodies if b.get("EventType", 0) == event_type]


def test_each_anchor_is_recorded_at_its_own_size(recorder, tasks, room, s3, bucket):
    """No size in the task: a 1280x720 camera and a 640x360 one recorded side by side keep theirs."""
    recorder()
    sizes = {"alice": (1280, 720), "bob": (640, 360)}
    for user, size in sizes.items():
        room.start(user, size=size)
    tasks.create(recording("sizes", room, bucket, video={"bitrate": 600000, "gop": 2}))
    st = tasks.wait_phase("sizes", "recording", timeout=60)
    wait_for(lambda: len(tasks.status("sizes").get("anchors", [])) == 2, 30, what="both anchors recorded")
    time.sleep(5)
    tasks.patch_spec("sizes", {"stop": True})
    st = tasks.wait_phase("sizes", "finished", timeout=180)
    stored = objects(s3, bucket, st["taskId"])
    for user, (width, height) in sizes.items():
        text = stored[naming.single_playlist_name(SDKAPPID, room.name, user, "main", "video")].decode()
        assert f"#EXT-X-TRTC-VIDEO-METADATA:WIDTH:{width} HEIGHT:{height}" in text
        first = playlist.parse(text).entries[0].uri
        assert video_size(stored[first]) == (width, height)
        mp4 = stored[naming.single_mp4_name(SDKAPPID, room.name, user, "main", 1)]
        assert video_size(mp4) == (width, height)
        pictures, _ = decode(mp4, "video")
        picture = pictures[len(pictures) // 2]
        assert picture.shape == (height, width, 3)
        color = np.array(ANCHORS[user][0])
        for y, x in ((height // 2, width // 2), (4, 4), (height - 5, width - 5)):  # edge to edge: not boxed
            assert np.abs(picture[y, x] - color).max() < 40, (user, y, x, picture[y, x])


def test_a_camera_switching_resolution_mid_stream_is_recorded_unsqueezed(recorder, tasks, room, s3, bucket):
    """A 1280x720 camera drops to 640x360 (congestion) on the same track: the stored size stays
    1280x720 and the smaller pictures are scaled up edge to edge, in the segments and in the MP4."""
    recorder()
    red, green = (200, 40, 40), (40, 200, 40)
    anchor = room.start("alice", size=(1280, 720))
    anchor.switch_camera((1280, 720), red)
    tasks.create(recording("switch", room, bucket, output={"formats": ["hls", "mp4"], "prefix": "rec",
                                                            "segmentSeconds": 2}, video={"bitrate": 600000, "gop": 2}))
    tasks.wait_phase("switch", "recording", timeout=60)
    time.sleep(5)
    anchor.switch_camera((640, 360), green)
    switched = time.time()
    time.sleep(6)
    tasks.patch_spec("switch", {"stop": True})
    st = tasks.wait_phase("switch", "finished", timeout=180)
    stored = objects(s3, bucket, st["taskId"])
    text = stored[naming.single_playlist_name(SDKAPPID, room.name, "alice", "main", "video")].decode()
    assert "#EXT-X-TRTC-VIDEO-METADATA:WIDTH:1280 HEIGHT:720" in text
    entries = playlist.parse(text).entries
    last = entries[-1].uri
    assert naming.parse_name(last).start.timestamp() > switched + 1  # a segment wholly after the switch
    mp4 = stored[naming.single_mp4_name(SDKAPPID, room.name, "alice", "main", 1)]
    sizes = [(e.uri[-21:], len(stored[e.uri])) for e in entries]
    assert all(size > 2 * 188 for _, size in sizes), sizes  # more than the TS tables in every segment
    for data, what in ((stored[last], "last segment"), (mp4, "mp4")):
        assert video_size(data) == (1280, 720), what
        pictures, _ = decode(data, "video")
        # the pixel-wise median of the last second: one picture the room's loss left damaged (a loaded
        # CI machine dropped RTP packets once: grey blocks until the next keyframe) does not decide it
        picture = np.median(np.stack(pictures[-15:]), axis=0)
        assert picture.shape == (720, 1280, 3), what
        for y, x in ((360, 640), (4, 4), (715, 1275)):  # edge to edge: scaled up, not boxed or squeezed
            assert np.abs(picture[y, x] - np.array(green)).max() < 40, (what, y, x, picture[y, x])
    first_pictures, _ = decode(stored[entries[0].uri], "video")
    assert np.abs(first_pictures[len(first_pictures) // 2][360, 640] - np.array(red)).max() < 40


@pytest.mark.parametrize(("formats", "stream_type", "suffix"), [(["mp4"], "audioVideo", ".mp4"),
                                                                (["mp3"], "audio", ".mp3")])
def test_only_the_formats_asked_for_are_kept(formats, stream_type, suffix, recorder, tasks, room, s3, bucket,
                                             receiver):
    """[mp4] alone is the single-stream function's mode 01/02, [mp3] its mode 00: no HLS objects are left."""
    recorder()
    room.start("alice")
    room.start("bob")
    name = f"only-{suffix[1:]}"
    tasks.create(recording(name, room, bucket, receiver, streamType=stream_type,
                           output={"formats": formats, "prefix": "rec", "segmentSeconds": 2}))
    tasks.wait_phase(name, "recording", timeout=60)
    time.sleep(6)
    tasks.patch_spec(name, {"stop": True})
    st = tasks.wait_phase(name, "finished", timeout=180)
    stored = objects(s3, bucket, st["taskId"])
    assert stored and all(k.endswith(suffix) for k in stored), sorted(stored)
    assert {naming.parse_name(k).user_id for k in stored} == {"alice", "bob"}
    for key, data in stored.items():
        samples, seconds = decode(data, "audio")
        assert seconds > 4
        assert abs(dominant_hz(np.concatenate(samples)[-48000:]) - ANCHORS[naming.parse_name(key).user_id][1]) < 15
    kept = {f"rec/{st['taskId']}/{k}" for k in stored}
    assert {f["fileName"] for f in st["files"]} == kept
    assert all(f["status"] == "uploaded" for f in st["files"])
    wait_for(lambda: body_of(receiver, 0), 30, what="the result body")
    [result] = body_of(receiver, 0)
    assert {f["RecordFile"].split("?")[0].split(f"/{bucket}/", 1)[1] for f in result["Files"]} == kept
    types = receiver.types()
    assert 307 not in types and 304 not in types, types  # no playlist is announced that the user does not keep
    [mp4_stop] = body_of(receiver, 310)
    assert sorted(mp4_stop["EventInfo"]["Payload"]["FileList"]) == sorted(stored)
    assert mp4_stop["EventInfo"]["Payload"]["Status"] == 0


@pytest.fixture
def flaky_storage(stack, tmp_path: Path, tasks, namespace) -> Iterator[MinioProcess]:
    """A MinIO of the test's own (same credentials as the stack's), so it can be taken away."""
    server = MinioProcess(tmp_path / "minio")
    server.start()
    server.make_bucket(fast_client(server.endpoint), "flaky")
    try:
        yield server
    finally:
        server.kill()


def test_events_and_status_wait_for_the_storage(recorder, tasks, room, receiver, flaky_storage):
    """304/307 and `uploaded` come only once objects are stored; 305 says 1 when the task ends with
    files waiting and 2 once they are stored after all; the result then says every file is there."""
    recorder(CAPSTAN_UPLOAD_GRACE_SECONDS="3")
    client = fast_client(flaky_storage.endpoint)
    flaky_storage.kill()  # the storage is away from the start
    room.start("alice")
    spec = recording("flaky", room, "flaky", receiver, output={"formats": ["hls"], "prefix": "rec",
                                                                "segmentSeconds": 2})
    spec["spec"]["storage"]["endpoint"] = flaky_storage.endpoint
    tasks.create(spec)
    tasks.wait_phase("flaky", "recording", timeout=60)
    wait_for(lambda: 308 in receiver.types(), 60, what="308 upload error while the storage is away")
    time.sleep(5)  # segments close every 2 s and wait
    assert 307 not in receiver.types() and 304 not in receiver.types(), receiver.types()
    assert not any(f.get("status") == "uploaded" for f in tasks.status("flaky").get("files", []))

    flaky_storage.start()  # the storage is back: the waiting segments and playlists go out, then the events
    wait_for(lambda: receiver.types().count(307) == 2 and 304 in receiver.types(), 60,
             what="307 for both playlists and 304 once they are stored")
    types = receiver.types()
    assert types.index(307) < types.index(304), types
    wait_for(lambda: {f.get("status") for f in tasks.status("flaky").get("files", [])} == {"uploaded"}, 30,
             what="files marked uploaded")

    flaky_storage.kill()
    time.sleep(3)  # a few more segments wait on local disk
    tasks.patch_spec("flaky", {"stop": True})
    wait_for(lambda: 305 in receiver.types(), 60, what="305 while files still wait")
    assert [b["EventInfo"]["Payload"]["Status"] for b in body_of(receiver, 305)] == [1]
    flaky_storage.start()
    st = tasks.wait_phase("flaky", "finished", timeout=180)
    wait_for(lambda: body_of(receiver, 0), 30, what="the result body")
    assert [b["EventInfo"]["Payload"]["Status"] for b in body_of(receiver, 305)] == [1, 2]
    assert not receiver.bad
    [result] = body_of(receiver, 0)
    assert result["Files"] and all(f["Status"] == 1 and f["Message"] == "success" for f in result["Files"])
    # everything reached the storage: the final playlists end the recording and list only stored segments
    prefix = f"rec/{st['taskId']}/"
    stored = {o.object_name[len(prefix):] for o in client.list_objects("flaky", prefix=prefix, recursive=True)}
    for track in ("audio", "video"):
        text = client.get_object("flaky", prefix + naming.single_playlist_name(
            SDKAPPID, room.name, "alice", "main", track)).read().decode()
        listed = playlist.parse(text)
        assert listed.ended and listed.entries and all(e.uri in stored for e in listed.entries)
        assert sum(e.duration for e in listed.entries) > 10


@pytest.mark.parametrize("public", [False, True])
def test_result_files_are_urls(public, recorder, tasks, room, s3, bucket, receiver):
    """RecordFile is a URL a user can fetch: under the storage's publicBaseUrl, or presigned."""
    recorder()
    room.start("alice")
    spec = recording("urls", room, bucket, receiver)
    base = f"http://{spec['spec']['storage']['endpoint']}/{bucket}"
    if public:
        s3.set_bucket_policy(bucket, json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/*"]}]}))
        spec["spec"]["storage"]["publicBaseUrl"] = base
    tasks.create(spec)
    tasks.wait_phase("urls", "recording", timeout=60)
    time.sleep(5)
    tasks.patch_spec("urls", {"stop": True})
    st = tasks.wait_phase("urls", "finished", timeout=180)
    wait_for(lambda: body_of(receiver, 0), 30, what="the result body")
    [result] = body_of(receiver, 0)
    files = {f["fileName"]: f for f in st["files"]}
    mp4 = f"rec/{st['taskId']}/{naming.single_mp4_name(SDKAPPID, room.name, 'alice', 'main', 1)}"
    assert {f["RecordFile"].split("?")[0].removeprefix(base + "/") for f in result["Files"]} == set(files)
    for entry in result["Files"]:
        url = entry["RecordFile"]
        key = url.split("?")[0].removeprefix(base + "/")
        assert (entry["UserId"], entry["Status"], entry["Message"]) == ("alice", 1, "success")
        if public:
            assert url == f"{base}/{key}" and files[key]["url"] == url
        else:
            assert "X-Amz-Signature=" in url and "url" not in files[key]
        with urllib.request.urlopen(url, timeout=10) as response:  # what the user fetches is the object
            assert response.read() == s3.get_object(bucket, key).read()
    assert mp4 in files


def test_streams_beyond_the_limit_are_reported_and_get_a_place_when_one_ends(recorder, tasks, room, s3, bucket):
    """With a limit of 2 (25 by default): alice and bob are recorded, carol is reported; when bob
    leaves, carol takes his place. An anchor's audio and video are one stream."""
    recorder(CAPSTAN_MAX_STREAMS="2")
    for user in ("alice", "bob"):
        room.start(user)
    tasks.create(recording("limit", room, bucket, output={"formats": ["hls"], "prefix": "rec", "segmentSeconds": 2}))
    tasks.wait_phase("limit", "recording", timeout=60)
    wait_for(lambda: tasks.status("limit").get("anchors") == ["alice", "bob"], 30, what="alice and bob recorded")
    room.start("carol")

    def condition() -> dict | None:
        return next((c for c in tasks.status("limit").get("conditions", []) if c["type"] == "StreamLimitReached"),
                    None)

    wait_for(lambda: (c := condition()) is not None and c["status"] == "True", 30, what="the limit reported")
    assert "carol/main" in condition()["message"] and "carol" not in tasks.status("limit")["anchors"]
    # the message follows with the worker's next progress report
    wait_for(lambda: "not recorded" in tasks.status("limit")["message"], 30, what="the message naming the limit")
    # and `kubectl describe` shows it: the operator mirrors the worker's condition as an Event
    wait_for(lambda: any(r == "StreamLimitReached" and "carol/main" in m
                         for r, m in tasks.events("limit")), 30, what="the StreamLimitReached Event")
    time.sleep(3)
    room.stop("bob")
    wait_for(lambda: tasks.status("limit").get("anchors") == ["alice", "carol"], 30, what="carol in bob's place")
    wait_for(lambda: condition()["status"] == "False", 30, what="the condition cleared")
    wait_for(lambda: any(r == "StreamLimitReachedCleared" for r, _ in tasks.events("limit")), 30,
             what="the Event of the cleared condition")
    time.sleep(4)
    tasks.patch_spec("limit", {"stop": True})
    st = tasks.wait_phase("limit", "finished", timeout=120)
    stored = objects(s3, bucket, st["taskId"])
    carol = playlist.parse(stored[naming.single_playlist_name(SDKAPPID, room.name, "carol", "main", "audio")].decode())
    assert carol.start_rec_time_ms / 1000 >= room.stopped["bob"] - 1.0  # recorded only once there was room
    assert sum(e.duration for e in carol.entries) > 2
    for user in ("alice", "bob"):
        assert naming.single_playlist_name(SDKAPPID, room.name, user, "main", "video") in stored

