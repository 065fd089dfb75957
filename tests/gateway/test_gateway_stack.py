"""The TRTC gateway end to end: Tencent's own client (tencentcloud-sdk-python-trtc) against
`python -m capstan.gateway` on loopback, in front of the stack's kube-apiserver, the operator, the pod
runner, a real LiveKit room and MinIO."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from kubernetes import client
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from capstan.api import GROUP, VERSION
from capstan.api.common import TASK_ID_ANNOTATION
from capstan.rooms.base import Role
from tests.conftest import wait_for

from .conftest import KEY_A, KEY_B, SDKAPPID, GatewayProcess

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]
LIVEKIT_ONLY = pytest.mark.parametrize("room_server", ["livekit"], indirect=True)


def custom(kube_api: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


def get(kube_api: Any, namespace: str, plural: str, task_id: str) -> dict[str, Any] | None:
    try:
        return custom(kube_api).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, f"trtc-{task_id}",
                                                             _request_timeout=30)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def status_of(kube_api: Any, namespace: str, plural: str, task_id: str) -> dict[str, Any]:
    return (get(kube_api, namespace, plural, task_id) or {}).get("status") or {}


def sdk_error(fn: Any) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as err:
        fn()
    return err.value


def storage(bucket: str, stack: Any, prefix: list[str] | None = None) -> dict[str, Any]:
    return {"CloudStorage": {"Vendor": 1, "Region": "us-east-1", "Bucket": bucket, "AccessKey": stack.s3_access_key,
                             "SecretKey": stack.s3_secret_key, "FileNamePrefix": prefix or ["gw"]}}


def assert_owned_secrets(kube_api: Any, namespace: str, obj: dict[str, Any], names: list[str]) -> None:
    core = client.CoreV1Api(kube_api)
    for name in names:
        secret = core.read_namespaced_secret(name, namespace, _request_timeout=30)
        owner = secret.metadata.owner_references[0]
        assert (owner.kind, owner.name, owner.uid) == (obj["kind"], obj["metadata"]["name"], obj["metadata"]["uid"])
        assert secret.metadata.labels["capstan.dev/use"] == "true"


def describe(gateway: GatewayProcess, task_id: str) -> dict[str, Any]:
    resp = gateway.call("DescribeCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id})
    return json.loads(resp.to_json_string())


@LIVEKIT_ONLY
def test_cloud_recording_of_a_livekit_room_through_the_trtc_client(
        gateway, recorder_operator, room, tasks, bucket, s3, stack, room_server, kube_api, namespace):
    room.start("alice")
    room.start("bob")
    body = {"SdkAppId": SDKAPPID, "RoomId": room.name, "RoomIdType": 0, "UserId": "robot",
            "UserSig": room_server.token(room.name, "robot", Role.recorder),
            "RecordParams": {"RecordMode": 1, "MaxIdleTime": 30, "StreamType": 0, "OutputFormat": 0,
                             "SubscribeStreamUserIds": {"SubscribeVideoUserIds": ["alice"]}},
            "StorageParams": storage(bucket, stack)}
    task_id = gateway.call("CreateCloudRecording", body).TaskId
    obj = get(kube_api, namespace, "cloudrecordings", task_id)
    assert obj is not None and obj["metadata"]["annotations"][TASK_ID_ANNOTATION] == task_id
    spec = obj["spec"]
    assert spec["room"]["strRoomId"] == room.name and spec["recorderUserId"] == "robot"
    assert spec["subscribe"]["videoAllow"] == ["alice"] and spec["output"]["prefix"] == "gw"
    assert spec["recorderTokenSecretRef"] == {"name": f"trtc-{task_id}-usersig", "key": "token"}
    assert spec["storage"]["credentialsSecretRef"] == {"name": f"trtc-{task_id}-storage"}
    assert stack.s3_secret_key not in json.dumps(obj) and body["UserSig"] not in json.dumps(obj)
    assert_owned_secrets(kube_api, namespace, obj, [f"trtc-{task_id}-usersig", f"trtc-{task_id}-storage"])

    def listed(want: set[tuple[str, str]]) -> dict[str, Any] | None:
        out = describe(gateway, task_id)
        have = {(f["UserId"], f["TrackType"]) for f in out["StorageFileList"]}
        return out if want <= have else None

    # alice's audio and video, bob's audio only: the video allow list names alice
    out = wait_for(lambda: listed({("alice", "audio"), ("alice", "video"), ("bob", "audio")}), 120,
                   interval=1.0, what="alice's and bob's files listed")
    assert out["Status"] == "InProgress" and out["TaskId"] == task_id
    assert ("bob", "video") not in {(f["UserId"], f["TrackType"]) for f in out["StorageFileList"]}
    for f in out["StorageFileList"]:
        assert f["FileName"].endswith(".m3u8") and f["BeginTimeStamp"] > 1_600_000_000_000
    assert status_of(kube_api, namespace, "cloudrecordings", task_id)["taskId"] == task_id

    # ModifyCloudRecording: bob's video too, applied while recording
    gateway.call("ModifyCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id, "SubscribeStreamUserIds": {
        "SubscribeVideoUserIds": ["alice", "bob"]}})
    assert get(kube_api, namespace, "cloudrecordings", task_id)["spec"]["subscribe"]["videoAllow"] == ["alice", "bob"]
    wait_for(lambda: listed({("bob", "video")}), 90, interval=1.0, what="bob's video recorded after the modify")

    # another team's key can neither see nor stop it
    for action in ("DescribeCloudRecording", "DeleteCloudRecording"):
        err = sdk_error(lambda a=action: gateway.call(a, {"SdkAppId": SDKAPPID, "TaskId": task_id}, key=KEY_B))
        assert err.code == "ResourceNotFound", err

    # DeleteCloudRecording ends it; the files stay
    assert gateway.call("DeleteCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id}).TaskId == task_id
    wait_for(lambda: (status_of(kube_api, namespace, "cloudrecordings", task_id).get("phase") == "finished"),
             120, interval=1.0, what="recording finished")
    final = describe(gateway, task_id)
    assert final["Status"] == "Exited"
    assert {("alice", "video"), ("bob", "video"), ("bob", "audio")} <= {
        (f["UserId"], f["TrackType"]) for f in final["StorageFileList"]}
    for f in final["StorageFileList"]:  # where the seed's naming puts them: <prefix>/<TaskId>/<name>
        playlist = s3.get_object(bucket, f"gw/{task_id}/{f['FileName']}").read().decode()
        assert "#EXT-X-ENDLIST" in playlist and "#EXT-X-TRTC-START-REC-TIME" in playlist


@LIVEKIT_ONLY
def test_mixed_recording_layout_modified_through_the_trtc_client(
        gateway, recorder_operator, room, tasks, bucket, s3, stack, room_server, kube_api, namespace):
    from capstan.media import naming
    from tests.recorder.test_mix import canvases, who
    from tests.recorder.test_recording import objects

    room.start("alice")
    room.start("bob")

    def halves(left: str, right: str) -> dict[str, Any]:
        return {"MixLayoutMode": 4, "BackGroundColor": "#000000", "MixLayoutList": [
            {"UserId": left, "Top": 0, "Left": 0, "Width": 160, "Height": 180, "RenderMode": 1},
            {"UserId": right, "Top": 0, "Left": 160, "Width": 160, "Height": 180, "RenderMode": 1}]}

    body = {"SdkAppId": SDKAPPID, "RoomId": room.name, "RoomIdType": 0, "UserId": "mixer",
            "UserSig": room_server.token(room.name, "mixer", Role.recorder),
            "RecordParams": {"RecordMode": 2, "MaxIdleTime": 30, "OutputFormat": 0},
            "MixTranscodeParams": {"VideoParams": {"Width": 320, "Height": 180, "Fps": 15, "BitRate": 300000,
                                                   "Gop": 2},
                                   "AudioParams": {"SampleRate": 1, "Channel": 1, "BitRate": 64000}},
            "MixLayoutParams": halves("alice", "bob"), "StorageParams": storage(bucket, stack, ["rec"])}
    task_id = gateway.call("CreateCloudRecording", body).TaskId
    spec = get(kube_api, namespace, "cloudrecordings", task_id)["spec"]
    assert spec["recordMode"] == "mix" and spec["video"]["width"] == 320
    assert [r["userId"] for r in spec["mixLayout"]["regions"]] == ["alice", "bob"]
    name = naming.mixed_playlist_name(SDKAPPID, room.name)
    out = wait_for(lambda: (d := describe(gateway, task_id))["StorageFileList"] and d, 120, interval=1.0,
                   what="the mixed playlist listed")
    assert out["Status"] == "InProgress"
    assert out["StorageFileList"][0]["FileName"] == name and out["StorageFileList"][0]["UserId"] == ""
    time.sleep(4)
    swapped_at = time.time()
    gateway.call("ModifyCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id,
                                          "MixLayoutParams": halves("bob", "alice")})
    time.sleep(5)
    gateway.call("DeleteCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id})
    wait_for(lambda: status_of(kube_api, namespace, "cloudrecordings", task_id).get("phase") == "finished",
             180, interval=1.0, what="mixed recording finished")
    pictures = canvases(objects(s3, bucket, task_id), name)
    before = [p for t, p in pictures if t < swapped_at - 0.5]
    after = [p for t, p in pictures if t > swapped_at + 2.0]
    assert before and after
    assert {(who(p, 80, 90), who(p, 240, 90)) for p in before[-10:]} == {("alice", "bob")}
    assert {(who(p, 80, 90), who(p, 240, 90)) for p in after[-10:]} == {("bob", "alice")}


@LIVEKIT_ONLY
def test_stream_ingest_pushes_a_file_into_the_room(gateway, pusher_operator, pushes, clip_server, room_server,
                                                   kube_api, namespace):
    room = f"ingest-{uuid.uuid4().hex[:8]}"
    body = {"SdkAppId": SDKAPPID, "RoomId": room, "RoomIdType": 0, "UserId": "movie",
            "UserSig": room_server.token(room, "movie", Role.publisher), "StreamUrl": f"{clip_server.url}/clip.mp4",
            "RepeatNum": -1}
    task_id = gateway.call("StartStreamIngest", body).TaskId
    obj = get(kube_api, namespace, "streampushes", task_id)
    assert obj["spec"]["videoSrc"] == body["StreamUrl"] and obj["spec"]["mode"] == "vod" and obj["spec"]["loop"]
    assert obj["spec"]["userTokenSecretRef"] == {"name": f"trtc-{task_id}-usersig", "key": "token"}
    assert_owned_secrets(kube_api, namespace, obj, [f"trtc-{task_id}-usersig"])

    def pushing() -> dict | None:
        st = (get(kube_api, namespace, "streampushes", task_id) or {}).get("status") or {}
        return st if st.get("phase") == "pushing" and (st.get("progress") or {}).get("positionSeconds", 0) > 1 \
            else None

    wait_for(pushing, 90, interval=1.0, what="pushing with progress")
    params = {"SdkAppId": SDKAPPID, "TaskId": task_id}
    assert gateway.call("DescribeStreamIngest", params).Status == "InProgress"
    assert gateway.call("DescribeStreamIngest", params, key=KEY_B).Status == "NotExist"
    assert sdk_error(lambda: gateway.call("StopStreamIngest", params, key=KEY_B)).code == "ResourceNotFound"
    gateway.call("StopStreamIngest", params)
    assert gateway.call("DescribeStreamIngest", params).Status == "NotExist"
    wait_for(lambda: status_of(kube_api, namespace, "streampushes", task_id).get("phase") == "finished", 60,
             what="push finished")

    # the same through seed 004's body on the SCF path
    scf_body = {"SdkAppId": SDKAPPID, "StrRoomId": room, "UserId": "movie2", "Mode": "vod", "Redis": False,
                "UserSig": room_server.token(room, "movie2", Role.publisher), "VideoSrc": body["StreamUrl"]}
    status, out = gateway.scf("stream-push", scf_body)
    assert status == 200, out
    scf_id = out["TaskId"]

    def scf_pushing() -> dict | None:
        status, result = gateway.scf("stream-push/describe", {"TaskId": scf_id})
        return result if status == 200 and result["Status"] == "pushing" and result["PositionSeconds"] > 1 else None

    wait_for(scf_pushing, 90, interval=1.0, what="the SCF push pushing")
    status, out = gateway.scf("stream-push/stop", {"TaskId": scf_id})
    assert status == 200 and out["TaskId"] == scf_id
    wait_for(lambda: status_of(kube_api, namespace, "streampushes", scf_id).get("phase") == "finished", 60,
             what="the SCF push finished")


@LIVEKIT_ONLY
def test_scf_single_stream_recording_of_a_livekit_room(gateway, recorder_operator, room, tasks, bucket, s3, stack,
                                                       room_server, kube_api, namespace):
    """Seed 001's body: one anchor's audio and video to MP4, stopped the seed's way (the robot removed)."""
    room.start("alice")
    room.start("bob")
    body = {"SdkAppId": SDKAPPID, "StrRoomId": room.name, "UserId": "alice", "Mode": "02",
            "UserSig": room_server.token(room.name, "rec-alice", Role.recorder),
            "CosConfig": {"SecretId": stack.s3_access_key, "SecretKey": stack.s3_secret_key, "Region": "us-east-1",
                          "Bucket": bucket, "Path": "/scf"}}
    status, out = gateway.scf("single-stream-recording", body)
    assert status == 200 and out["Message"] == "Async run task submitted", out
    task_id = out["TaskId"]

    def recording() -> bool:
        st = status_of(kube_api, namespace, "cloudrecordings", task_id)
        return st.get("phase") == "recording" and any(f.get("fileName", "").endswith(".m3u8")
                                                      for f in st.get("files") or [])

    wait_for(recording, 120, interval=1.0, what="alice recorded")
    time.sleep(4)
    room.kick("rec-alice")  # seed 001: RemoveUser / RemoveUserByStrRoomId stops the recording
    wait_for(lambda: status_of(kube_api, namespace, "cloudrecordings", task_id).get("phase") == "finished", 180,
             interval=1.0, what="finished after the robot was removed")
    status, result = gateway.scf("single-stream-recording/describe", {"TaskId": task_id})
    assert status == 200 and result["Status"] == "finished" and result["UserId"] == "alice"
    assert result["StrRoomId"] == room.name and result["SdkAppId"] == str(SDKAPPID)
    assert result["Files"] and {f["UserId"] for f in result["Files"]} == {"alice"}, result
    for f in result["Files"]:
        assert f["Status"] == 1 and f["RecordFile"].split("?")[0].endswith(".mp4"), f
    keys = [o.object_name for o in s3.list_objects(bucket, prefix=f"scf/{task_id}/", recursive=True)]
    assert any(k.endswith(".mp4") for k in keys) and not any("__UserId_s_Ym9i" in k for k in keys), keys  # no bob


def test_signatures_bindings_refusals_and_limits(gateway, kube_api, namespace, bucket, stack):
    body = {"SdkAppId": SDKAPPID, "RoomId": "4321", "UserId": "robot", "UserSig": "token",
            "RecordParams": {"RecordMode": 2}, "StorageParams": storage(bucket, stack),
            "MixLayoutParams": {"MixLayoutMode": 2, "MaxResolutionUserId": "alice"}}
    wrong = (KEY_A[0], "not-the-secret-key-of-team-a-000")
    assert sdk_error(lambda: gateway.call("CreateCloudRecording", body, key=wrong)).code == \
        "AuthFailure.SignatureFailure"
    task_id = gateway.call("CreateCloudRecording", body).TaskId
    obj = get(kube_api, namespace, "cloudrecordings", task_id)
    assert obj["spec"]["recordMode"] == "mix" and obj["spec"]["mixLayout"] == {
        "mode": "screenShare", "mainUserId": "alice", "regions": [], "backgroundColor": "#000000",
        "placeholderColor": "#000000"}
    for action in ("DescribeCloudRecording", "DeleteCloudRecording", "ModifyCloudRecording"):
        params = {"SdkAppId": SDKAPPID, "TaskId": task_id, "SubscribeStreamUserIds": {}} \
            if action == "ModifyCloudRecording" else {"SdkAppId": SDKAPPID, "TaskId": task_id}
        assert sdk_error(lambda a=action, p=params: gateway.call(a, p, key=KEY_B)).code == "ResourceNotFound"
    assert not get(kube_api, namespace, "cloudrecordings", task_id)["spec"].get("stop")
    # layout change through ModifyCloudRecording
    gateway.call("ModifyCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id, "MixLayoutParams": {
        "MixLayoutMode": 4, "MixLayoutList": [{"UserId": "bob", "Top": 0, "Left": 0, "Width": 320, "Height": 180}]}})
    layout = get(kube_api, namespace, "cloudrecordings", task_id)["spec"]["mixLayout"]
    assert layout["mode"] == "custom" and layout["regions"][0]["userId"] == "bob" and "mainUserId" not in layout

    # an unsupported field is refused by name, and nothing is created
    vod = {**body, "StorageParams": {**storage(bucket, stack), "CloudVod": {"TencentVod": {"SubAppId": 1}}}}
    err = sdk_error(lambda: gateway.call("CreateCloudRecording", vod))
    assert err.code == "InvalidParameter" and "StorageParams.CloudVod" in err.message
    aac = {**body, "RecordParams": {"RecordMode": 2, "OutputFormat": 2}}
    err = sdk_error(lambda: gateway.call("CreateCloudRecording", aac))
    assert err.code == "InvalidParameter" and "RecordParams.OutputFormat=2" in err.message
    listed = custom(kube_api).list_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings",
                                                            _request_timeout=30)["items"]
    assert [o["metadata"]["name"] for o in listed] == [f"trtc-{task_id}"]
    err = sdk_error(lambda: gateway.call("DescribeCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": "nope"}))
    assert err.code == "InvalidParameter.TaskId"

    # web recording: the resource and its owned Secret; the worker is not needed for these calls
    web = {"SdkAppId": SDKAPPID, "RecordUrl": "https://class.example/board", "StorageParams": storage(bucket, stack),
           "WebRecordVideoParams": {"Width": 1280, "Height": 720, "Format": "mp4"}, "RecordId": "board-1"}
    web_id = gateway.call("StartWebRecord", web).TaskId
    wobj = get(kube_api, namespace, "webrecordings", web_id)
    assert wobj["spec"]["recordUrl"] == web["RecordUrl"] and wobj["spec"]["output"]["targetDir"] == f"gw/{web_id}"
    assert_owned_secrets(kube_api, namespace, wobj, [f"trtc-{web_id}-storage"])
    again = {**web, "MaxDurationLimit": 1800}
    assert sdk_error(lambda: gateway.call("StartWebRecord", again)).code == "FailedOperation.TaskExist"
    assert gateway.call("DescribeWebRecord", {"SdkAppId": SDKAPPID, "RecordId": "board-1"}).TaskId == web_id
    assert sdk_error(lambda: gateway.call("StopWebRecord", {"TaskId": web_id}, key=KEY_B)).code == "ResourceNotFound"
    gateway.call("StopWebRecord", {"TaskId": web_id})
    assert get(kube_api, namespace, "webrecordings", web_id)["spec"]["stop"] is True

    # the rate limit (5 qps in this gateway's config; TRTC's 20 by default): 15 at once, so a slow
    # machine's latency cannot spread them below the limit
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> str:
        try:
            gateway.call("DescribeCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id})
            return "ok"
        except TencentCloudSDKException as exc:
            return str(exc.code)

    time.sleep(1.5)
    with ThreadPoolExecutor(15) as pool:
        codes = list(pool.map(one, range(15)))
    assert "ok" in codes and "RequestLimitExceeded" in codes, codes
    assert set(codes) == {"ok", "RequestLimitExceeded"}, codes


def test_scf_bodies_over_plain_http(gateway, kube_api, namespace, bucket, stack):
    cos = {"SecretId": stack.s3_access_key, "SecretKey": stack.s3_secret_key, "Region": "us-east-1",
           "Bucket": bucket, "Path": "/test"}
    body = {"SdkAppId": SDKAPPID, "RoomId": 1234, "UserId": "alice", "UserSig": "robot-token", "CosConfig": cos,
            "Callback": "http://127.0.0.1:9/done", "Mode": "02"}
    status, out = gateway.scf("single-stream-recording", body)
    assert status == 200 and out["TaskId"] and out["RequestId"], out
    obj = get(kube_api, namespace, "cloudrecordings", out["TaskId"])
    assert obj["spec"]["streamType"] == "audioVideo" and obj["spec"]["output"]["formats"] == ["hls", "mp4"]
    assert obj["spec"]["subscribe"]["audioAllow"] == ["alice"] and obj["spec"]["output"]["prefix"] == "test"
    assert stack.s3_secret_key not in json.dumps(obj)
    assert_owned_secrets(kube_api, namespace, obj, [f"trtc-{out['TaskId']}-storage", f"trtc-{out['TaskId']}-usersig"])
    status, result = gateway.scf("single-stream-recording/describe", {"TaskId": out["TaskId"]})
    assert status == 200 and result["UserId"] == "alice" and result["RoomId"] == "1234" and result["Files"] == []

    status, err = gateway.scf("single-stream-recording", body, key=(KEY_A[0], "not-the-secret-key-000000000"))
    assert status == 401 and err["ErrorCode"] == "AuthFailure.SignatureFailure"
    status, err = gateway.scf("single-stream-recording/stop", {"TaskId": out["TaskId"]}, key=KEY_B)
    assert status == 404 and err["ErrorCode"] == "ResourceNotFound"
    status, err = gateway.scf("single-stream-recording", {**body, "Mode": "03"})
    assert status == 400 and err["ErrorMessage"].startswith("Mode='03'")
    status, err = gateway.scf("single-stream-recording", {**body, "CosConfig": {**cos, "Acl": "public"}})
    assert status == 400 and err["ErrorMessage"].startswith("CosConfig.Acl")
    status, stopped = gateway.scf("single-stream-recording/stop", {"TaskId": out["TaskId"]})
    assert status == 200 and get(kube_api, namespace, "cloudrecordings", out["TaskId"])["spec"]["stop"] is True

    push = {"SdkAppId": SDKAPPID, "StrRoomId": "98915abc", "UserId": "user_55952144", "Mode": "vod",
            "UserSig": "publisher-token", "Redis": True, "RedisHost": "127.0.0.1", "RedisPort": 6379,
            "RedisPassword": "redis-pass", "VideoSrc": "http://127.0.0.1:9/video/1.mp4"}
    status, out = gateway.scf("stream-push", push)
    assert status == 200, out
    pobj = get(kube_api, namespace, "streampushes", out["TaskId"])
    assert pobj["spec"]["resume"] is True and pobj["spec"]["redisSecretRef"]["name"] == f"trtc-{out['TaskId']}-redis"
    assert "redis-pass" not in json.dumps(pobj)
    assert_owned_secrets(kube_api, namespace, pobj, [f"trtc-{out['TaskId']}-redis"])

    start = {"Action": "Start", "Data": {
        "RecordURL": "https://web.example/page", "Width": 1280, "Height": 720, "MaxDurationLimit": 21600,
        "Output": {"Cos": {"Bucket": bucket, "Region": "us-east-1", "TargetDir": "11234/",
                           "SecretId": stack.s3_access_key, "SecretKey": stack.s3_secret_key},
                   "Video": {"Muxer": "hls"}}}}
    status, out = gateway.scf("panoramic-recording", start)
    assert status == 200 and out["TaskID"] and out["RequestID"], out
    web_id = out["TaskID"]
    for action, field, value in (("Pause", "paused", True), ("Resume", "paused", False),
                                 ("Refresh", "refreshGeneration", 1), ("Stop", "stop", True)):
        status, out = gateway.scf("panoramic-recording", {"Action": action, "Data": {"TaskID": web_id}})
        assert status == 200 and out["TaskID"] == web_id, out
        assert get(kube_api, namespace, "webrecordings", web_id)["spec"][field] == value
    status, out = gateway.scf("panoramic-recording", {"Action": "Describe", "Data": {"TaskID": web_id}})
    assert status == 200 and out["TaskID"] == web_id and out["Status"]
    status, err = gateway.scf("panoramic-recording", {"Action": "Describe", "Data": {"TaskID": web_id}}, key=KEY_B)
    assert status == 404 and err["ErrorCode"] == "ResourceNotFound" and err["RequestID"]
    status, err = gateway.scf("panoramic-recording", {"Action": "Start", "Data": {
        **start["Data"], "Output": {**start["Data"]["Output"], "Vod": {"SubAppId": 1}}}})
    assert status == 400 and err["ErrorMessage"].startswith("Data.Output.Vod")


def test_the_concurrency_limit_answers_restricted_concurrency(gateway, operator_factory, kube_api, namespace, bucket,
                                                              stack):
    """The operator with queuePolicy refuse and one place: the second CreateCloudRecording is refused as TRTC
    does (FailedOperation.RestrictedConcurrency) and leaves no resource behind."""
    operator_factory(CAPSTAN_QUEUE_POLICY="refuse", CAPSTAN_MAX_TASKS="1")
    client.CoreV1Api(kube_api).create_namespaced_secret(namespace, {
        "metadata": {"name": "room-credentials", "labels": {"capstan.dev/use": "true"}},
        "stringData": {"apiKey": "devkey", "apiSecret": "devsecret" * 4}}, _request_timeout=30)
    body = {"SdkAppId": SDKAPPID, "RoomId": "777", "UserId": "robot-1", "UserSig": "token",
            "RecordParams": {"RecordMode": 1}, "StorageParams": storage(bucket, stack)}
    first = gateway.call("CreateCloudRecording", body).TaskId
    wait_for(lambda: (get(kube_api, namespace, "cloudrecordings", first) or {}).get("status", {}).get("phase")
             in ("idle", "recording"), 60, what="the first task admitted")
    err = sdk_error(lambda: gateway.call("CreateCloudRecording", {**body, "UserId": "robot-2"}))
    assert err.code == "FailedOperation.RestrictedConcurrency", err

    def names() -> list[str]:
        return [o["metadata"]["name"] for o in custom(kube_api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "cloudrecordings", _request_timeout=30)["items"]]

    wait_for(lambda: names() == [f"trtc-{first}"], 30, what="the refused task removed (its finalizer done)")
    gateway.call("DeleteCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": first})


def test_keys_are_added_and_revoked_through_the_secret(gateway, kube_api, namespace):
    from capstan.gateway.config import dumps_key

    key_c = ("AKIDgatewayTeamC0001", "team-c-secret-key-for-tests-0001")
    params = {"SdkAppId": SDKAPPID, "TaskId": "0f7d9522-a1a3-4517-b5ad-7a6eca000001"}
    assert sdk_error(lambda: gateway.call("DescribeCloudRecording", params, key=key_c)).code == \
        "AuthFailure.SecretIdNotFound"
    core = client.CoreV1Api(kube_api)
    core.patch_namespaced_secret("trtc-gateway-keys", namespace, {"stringData": {
        key_c[0]: dumps_key(key_c[1], [namespace], [SDKAPPID])}}, _request_timeout=30)

    def answers(key: tuple[str, str]) -> str:
        try:
            gateway.call("DescribeCloudRecording", params, key=key)
        except TencentCloudSDKException as exc:
            return str(exc.code)
        return "ok"

    wait_for(lambda: answers(key_c) == "ResourceNotFound", 20, what="the added key accepted")
    core.patch_namespaced_secret("trtc-gateway-keys", namespace, {"data": {KEY_B[0]: None}}, _request_timeout=30)
    wait_for(lambda: answers(KEY_B) == "AuthFailure.SecretIdNotFound", 20, what="the removed key refused")
