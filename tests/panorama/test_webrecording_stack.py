"""WebRecording end to end on the real stack: the operator, the pod runner playing the kubelet, the
panorama worker as a Pod's process (Xvfb, PulseAudio, Chromium), MinIO, and a callback receiver
checking signatures. Start → pause → resume → stop through the resource's spec, the MP4 read back
from the bucket; a refused recordUrl fails the task at once saying why."""

from __future__ import annotations

import io
import time
from typing import Any

import av
import pytest
from kubernetes import client

from capstan.api import GROUP, VERSION
from tests.conftest import wait_for
from tests.operator.test_callbacks_stack import KEY, Receiver
from tests.operator.test_operator_stack import Tasks

from .conftest import media
from .page import PageServer, read_counter

pytestmark = [pytest.mark.stack, media, pytest.mark.timeout(300)]
USE = {"labels": {"capstan.dev/use": "true"}}
PAGE_FPS = 30


class WebRecordings(Tasks):
    """tests.operator's Tasks, for WebRecording objects."""

    def create(self, obj: dict[str, Any]) -> Any:
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, "webrecordings", obj,
                                                        _request_timeout=30)

    def get(self, name: str) -> Any:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, "webrecordings", name,
                                                         _request_timeout=30)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_spec(self, name: str, spec: dict[str, Any]) -> Any:
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, "webrecordings", name,
                                                       {"spec": spec}, _request_timeout=30)


@pytest.fixture
def webrecordings(kube_api: Any, namespace: str, stack: Any) -> WebRecordings:
    core = client.CoreV1Api(kube_api)
    for name, data in (("storage", {"accessKey": stack.s3_access_key, "secretKey": stack.s3_secret_key}),
                       ("callback-key", {"key": KEY})):
        core.create_namespaced_secret(namespace, {"metadata": {"name": name, **USE}, "stringData": data},
                                      _request_timeout=30)
    return WebRecordings(kube_api, namespace)


@pytest.fixture
def panorama_operator(operator_factory: Any) -> Any:
    return operator_factory(CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE="media",
                            CAPSTAN_WORKER_ENV_CAPSTAN_PANORAMA_FPS="15")


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def page() -> Any:
    server = PageServer()
    yield server
    server.close()


def web_recording(name: str, url: str, bucket: str, receiver: Receiver | None = None, **spec: Any) -> dict[str, Any]:
    import os

    body: dict[str, Any] = {
        "recordUrl": url, "width": 640, "height": 360,
        "output": {"storage": {"endpoint": os.environ["S3_ENDPOINT"], "bucket": bucket, "secure": False,
                               "credentialsSecretRef": {"name": "storage"}}, "targetName": "lesson.mp4"},
        **spec}
    if receiver is not None:
        body["callback"] = {"url": receiver.url, "signingKeySecretRef": {"name": "callback-key", "key": "key"}}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WebRecording", "metadata": {"name": name}, "spec": body}


def test_start_pause_resume_stop_through_the_resource_make_one_mp4_and_a_signed_result(
        panorama_operator: Any, webrecordings: WebRecordings, bucket: str, s3: Any, page: PageServer,
        receiver: Receiver) -> None:
    webrecordings.create(web_recording("lesson", page.url, bucket, receiver))
    st = webrecordings.wait_phase("lesson", "recording", timeout=90)
    assert st["startTime"] and st["taskId"]
    time.sleep(3)
    webrecordings.patch_spec("lesson", {"paused": True})
    webrecordings.wait_phase("lesson", "paused", timeout=30)
    time.sleep(3)
    webrecordings.patch_spec("lesson", {"paused": False})
    webrecordings.wait_phase("lesson", "recording", timeout=30)
    time.sleep(3)
    webrecordings.patch_spec("lesson", {"stop": True})
    st = webrecordings.wait_phase("lesson", {"finished", "failed"}, timeout=120)
    assert st["phase"] == "finished", st
    assert [f["fileName"] for f in st["files"]] == [f"{st['taskId']}/lesson.mp4"]
    f = st["files"][0]
    data = s3.get_object(bucket, f["fileName"]).read()
    assert len(data) == f["size"]
    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (640, 360)
        duration = float(c.duration / av.time_base)
        counters = [read_counter(frame.to_ndarray(format="rgb24")) for frame in c.decode(video=0)]
    assert abs(duration - st["recordedSeconds"]) < 0.5, (duration, st["recordedSeconds"])
    assert 2.5 < st["pausedSeconds"] < 15  # 3 s between the phases seen, plus the watch's delays both ways
    jump = max(b - a for a, b in zip(counters, counters[1:], strict=False))
    assert abs(jump - st["pausedSeconds"] * PAGE_FPS) < 0.5 * PAGE_FPS, (jump, st["pausedSeconds"])
    assert st["stopTime"] and st["finishTime"] and st["cancelTime"]
    body = wait_for(lambda: next((b for b in receiver.bodies if "TaskID" in b), None), 60, what="result body")
    assert body["TaskID"] == st["taskId"] and body["Status"] == "finished" and "ErrorCode" not in body["Result"]
    video = body["Result"]["Videos"][0]
    assert video["Filename"] == "lesson.mp4" and video["FileSize"] == f["size"]
    assert abs(video["FileDuration"] - duration) < 0.1 and video["FileURL"]
    assert not [b for b in receiver.bad if "Sign" in b]


def test_a_record_url_of_the_metadata_address_fails_the_task_at_once(
        panorama_operator: Any, webrecordings: WebRecordings, bucket: str) -> None:
    began = time.monotonic()
    webrecordings.create(web_recording("meta", "http://169.254.169.254/latest/meta-data/", bucket))
    st = webrecordings.wait_phase("meta", {"failed", "finished"}, timeout=60)
    assert st["phase"] == "failed"
    assert st["result"]["errorCode"] == "InvalidRecordUrl"
    assert "link-local" in st["result"]["errorMessage"], st["result"]
    assert time.monotonic() - began < 30


def test_deleting_an_encrypted_hls_recording_stops_it_and_keeps_its_playlist_and_segments(
        panorama_operator: Any, webrecordings: WebRecordings, bucket: str, s3: Any, page: PageServer,
        kube_api: Any, namespace: str) -> None:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key_hex, auth_url = "21834cca41778803e1afba3f41e70c90", "https://keys.capstan.test/enc.key"
    client.CoreV1Api(kube_api).create_namespaced_secret(
        namespace, {"metadata": {"name": "hls-key", **USE}, "stringData": {"key": key_hex}}, _request_timeout=30)
    obj = web_recording("gone", page.url, bucket)
    obj["spec"]["output"] = {**obj["spec"]["output"], "muxer": "hls", "authUrl": auth_url,
                             "encryptKeySecretRef": {"name": "hls-key", "key": "key"}}
    del obj["spec"]["output"]["targetName"]
    webrecordings.create(obj)
    st = webrecordings.wait_phase("gone", "recording", timeout=90)
    task_id = st["taskId"]
    time.sleep(8)
    webrecordings.api.delete_namespaced_custom_object(GROUP, VERSION, webrecordings.ns, "webrecordings", "gone",
                                                      _request_timeout=30)
    wait_for(lambda: webrecordings.get("gone") is None, 120, what="the deleted recording gone")
    keys = sorted(o.object_name for o in s3.list_objects(bucket, prefix=f"{task_id}/", recursive=True))
    playlists = [k for k in keys if k.endswith(".m3u8")]
    assert len(playlists) == 1 and playlists[0].removeprefix(f"{task_id}/").removesuffix(".m3u8").isdigit(), keys
    text = s3.get_object(bucket, playlists[0]).read().decode()
    assert f'#EXT-X-KEY:METHOD=AES-128,URI="{auth_url}"' in text and "#EXT-X-ENDLIST" in text
    segments = [line for line in text.splitlines() if line.endswith(".ts")]
    assert len(segments) >= 1 and all(f"{task_id}/{s}" in keys for s in segments)
    sealed = s3.get_object(bucket, f"{task_id}/{segments[0]}").read()
    assert sealed[0] != 0x47  # not MPEG-TS as stored
    decryptor = Cipher(algorithms.AES(bytes.fromhex(key_hex)), modes.CBC((0).to_bytes(16, "big"))).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    plain = unpadder.update(decryptor.update(sealed) + decryptor.finalize()) + unpadder.finalize()
    with av.open(io.BytesIO(plain), format="mpegts") as c:
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (640, 360)


def test_a_killed_worker_is_replaced_and_the_mp4_keeps_what_the_first_attempt_recorded(
        panorama_operator: Any, webrecordings: WebRecordings, bucket: str, s3: Any, page: PageServer,
        namespace: str) -> None:
    import signal

    from devstack import podrunner

    webrecordings.create(web_recording("ha", page.url, bucket))
    webrecordings.wait_phase("ha", "recording", timeout=90)
    time.sleep(9)  # one 6 s segment closed (a crash loses at most the open one)
    podrunner.kill_container(namespace, "ha-wrec-a1", sig=signal.SIGKILL)
    wait_for(lambda: (s := webrecordings.status("ha")).get("attempt") == 2 and s.get("phase") == "recording", 120,
             what="attempt 2 recording")
    time.sleep(4)
    webrecordings.patch_spec("ha", {"stop": True})
    st = webrecordings.wait_phase("ha", {"finished", "failed"}, timeout=120)
    assert st["phase"] == "finished", st
    assert [f["fileName"] for f in st["files"]] == [f"{st['taskId']}/lesson.mp4"]
    data = s3.get_object(bucket, st["files"][0]["fileName"]).read()
    with av.open(io.BytesIO(data)) as c:
        counters = [read_counter(frame.to_ndarray(format="rgb24")) for frame in c.decode(video=0)]
    restarts = [i for i, (a, b) in enumerate(zip(counters, counters[1:], strict=False)) if b < a - PAGE_FPS]
    assert len(restarts) == 1, counters[::10]  # the first attempt's pictures, then the second's
    before, after = counters[:restarts[0] + 1], counters[restarts[0] + 1:]
    assert before[-1] - before[0] > 3 * PAGE_FPS and after[-1] - after[0] > 3 * PAGE_FPS


def test_a_killed_hls_worker_is_replaced_and_the_playlist_goes_on_after_a_discontinuity(
        panorama_operator: Any, webrecordings: WebRecordings, bucket: str, s3: Any, page: PageServer,
        namespace: str) -> None:
    import signal

    from devstack import podrunner

    obj = web_recording("hlsha", page.url, bucket)
    obj["spec"]["output"] = {**obj["spec"]["output"], "muxer": "hls", "targetName": "lesson"}
    webrecordings.create(obj)
    st = webrecordings.wait_phase("hlsha", "recording", timeout=90)
    time.sleep(9)  # one 6 s segment closed and stored
    podrunner.kill_container(namespace, "hlsha-wrec-a1", sig=signal.SIGKILL)
    wait_for(lambda: (s := webrecordings.status("hlsha")).get("attempt") == 2 and s.get("phase") == "recording",
             120, what="attempt 2 recording")
    time.sleep(7)
    webrecordings.patch_spec("hlsha", {"stop": True})
    st = webrecordings.wait_phase("hlsha", {"finished", "failed"}, timeout=120)
    assert st["phase"] == "finished", st
    task_id = st["taskId"]
    text = s3.get_object(bucket, f"{task_id}/lesson.m3u8").read().decode()
    lines = text.splitlines()
    segments = [line for line in lines if line.endswith(".ts")]
    first_new = next(i for i, s in enumerate(segments) if s.startswith("ha1_"))
    assert first_new >= 1, text  # the first attempt's stored segments come first
    assert lines.count("#EXT-X-DISCONTINUITY") == 1
    assert lines[lines.index(segments[first_new]) - 2] == "#EXT-X-DISCONTINUITY"
    keys = {o.object_name for o in s3.list_objects(bucket, prefix=f"{task_id}/", recursive=True)}
    assert all(f"{task_id}/{s}" in keys for s in segments), (segments, keys)
