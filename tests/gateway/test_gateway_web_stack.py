"""Web recording through the gateway on the real stack: StartWebRecord / DescribeWebRecord / StopWebRecord
with Tencent's client, and seed 003's Action API (Start / Pause / Resume / Stop / Describe) as plain HTTP,
each recording a real page with the panorama worker (Xvfb, PulseAudio, Chromium) into MinIO."""

from __future__ import annotations

import io
import time
from typing import Any

import av
import pytest

from tests.conftest import wait_for
from tests.panorama.conftest import media
from tests.panorama.page import PageServer
from tests.panorama.test_webrecording_stack import panorama_operator

from .conftest import SDKAPPID, GatewayProcess
from .test_gateway_stack import status_of, storage

__all__ = ["panorama_operator"]  # the fixture, used by name
pytestmark = [pytest.mark.stack, media, pytest.mark.timeout(400)]


@pytest.fixture
def page() -> Any:
    server = PageServer()
    yield server
    server.close()


def phase(kube_api: Any, namespace: str, task_id: str) -> str | None:
    return status_of(kube_api, namespace, "webrecordings", task_id).get("phase")


def mp4_size(s3: Any, bucket: str, key: str) -> tuple[int, int]:
    with av.open(io.BytesIO(s3.get_object(bucket, key).read())) as c:
        v = c.streams.video[0]
        return v.codec_context.width, v.codec_context.height


def test_start_describe_stop_web_record_through_the_trtc_client(
        gateway: GatewayProcess, panorama_operator: Any, page: PageServer, bucket: str, s3: Any, stack: Any,
        kube_api: Any, namespace: str) -> None:
    body = {"SdkAppId": SDKAPPID, "RecordUrl": page.url, "MaxDurationLimit": 600, "RecordId": "lesson-1",
            "StorageParams": storage(bucket, stack, ["web"]),
            "WebRecordVideoParams": {"Width": 640, "Height": 360, "Format": "mp4"}}
    task_id = gateway.call("StartWebRecord", body).TaskId
    wait_for(lambda: phase(kube_api, namespace, task_id) == "recording", 120, interval=1.0, what="recording")
    assert gateway.call("DescribeWebRecord", {"TaskId": task_id}).Status == 1
    by_record = gateway.call("DescribeWebRecord", {"SdkAppId": SDKAPPID, "RecordId": "lesson-1"})
    assert by_record.TaskId == task_id
    time.sleep(4)
    gateway.call("StopWebRecord", {"TaskId": task_id})
    wait_for(lambda: phase(kube_api, namespace, task_id) in ("finished", "failed"), 180, interval=1.0,
             what="finished")
    st = status_of(kube_api, namespace, "webrecordings", task_id)
    assert st["phase"] == "finished", st
    (f,) = st["files"]
    assert f["fileName"].startswith(f"web/{task_id}/") and f["fileName"].endswith(".mp4")
    assert mp4_size(s3, bucket, f["fileName"]) == (640, 360)
    assert gateway.call("DescribeWebRecord", {"TaskId": task_id}).Status == 2


def test_seed_003_action_api_records_a_page(gateway: GatewayProcess, panorama_operator: Any, page: PageServer,
                                            bucket: str, s3: Any, stack: Any, kube_api: Any,
                                            namespace: str) -> None:
    start = {"Action": "Start", "Data": {
        "RecordURL": page.url, "Width": 640, "Height": 360, "MaxDurationLimit": 600,
        "Output": {"Cos": {"Bucket": bucket, "Region": "us-east-1", "TargetDir": "11234/",
                           "TargetName": "record-file-name.mp4", "SecretId": stack.s3_access_key,
                           "SecretKey": stack.s3_secret_key},
                   "Video": {"Muxer": "mp4"}}}}
    status, out = gateway.scf("panoramic-recording", start)
    assert status == 200, out
    task_id = out["TaskID"]

    def act(action: str) -> dict[str, Any]:
        status, answer = gateway.scf("panoramic-recording", {"Action": action, "Data": {"TaskID": task_id}})
        assert status == 200, answer
        return answer

    wait_for(lambda: act("Describe")["Status"] == "recording", 120, interval=1.0, what="recording")
    time.sleep(3)
    act("Pause")
    wait_for(lambda: act("Describe")["Status"] == "paused", 60, interval=1.0, what="paused")
    act("Resume")
    wait_for(lambda: act("Describe")["Status"] == "recording", 60, interval=1.0, what="resumed")
    time.sleep(3)
    act("Stop")
    done = wait_for(lambda: (d := act("Describe"))["Status"] in ("finished", "failed") and d, 180, interval=1.0,
                    what="finished")
    assert done["Status"] == "finished", done
    assert done["CreateTime"] <= done["StartTime"] <= done["StopTime"] <= done["FinishTime"]
    (video,) = done["Result"]["Videos"]
    assert video["Filename"] == "record-file-name.mp4" and video["FileSize"] > 0 and video["FileURL"]
    assert mp4_size(s3, bucket, "11234/record-file-name.mp4") == (640, 360)
