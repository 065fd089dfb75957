"""The HTTP adapter with Tencent's own TrtcClient on loopback, over the in-memory store: the client
accepts the envelope, raises TRTC's error codes, and the SCF paths answer plain HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.trtc.v20190722 import models, trtc_client

from capstan.gateway import appauth, http
from capstan.gateway.service import Gateway

from .requests import SDKAPPID, config, create_single
from .test_service import KEY_A, KEY_B, KEY_OTHER_APP, MemoryStore


class Server:
    def __init__(self, gateway: Gateway) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(http.app(gateway))
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def server(store: MemoryStore) -> Iterator[Server]:
    keys = {k.secret_id: k for k in (KEY_A, KEY_B, KEY_OTHER_APP)}
    s = Server(Gateway(config(), lambda: keys, store))
    yield s
    s.close()


def trtc(server: Server, secret_id: str, secret_key: str) -> trtc_client.TrtcClient:
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=f"127.0.0.1:{server.port}", protocol="http"))
    return trtc_client.TrtcClient(credential.Credential(secret_id, secret_key), "ap-guangzhou", profile)


def request(name: str, params: dict[str, Any]) -> Any:
    req = getattr(models, f"{name}Request")()
    req.from_json_string(json.dumps(params))
    return req


def test_the_trtc_client_creates_and_describes(server: Server, store: MemoryStore) -> None:
    client = trtc(server, KEY_A.secret_id, KEY_A.secret_key)
    resp = client.CreateCloudRecording(request("CreateCloudRecording", create_single()))
    assert resp.TaskId and resp.RequestId
    obj = store.objects[("team-a", "cloudrecordings", f"trtc-{resp.TaskId}")]
    obj["status"] = {"phase": "recording", "taskId": resp.TaskId, "files": [
        {"fileName": f"trtc/class-7/{resp.TaskId}/1400000000_1234__UserId_s_YWxpY2U.__UserId_e_main_video.m3u8",
         "userId": "alice", "trackType": "video", "beginTimeStamp": 1622186279144}]}
    desc = client.DescribeCloudRecording(request("DescribeCloudRecording", {"SdkAppId": SDKAPPID,
                                                                            "TaskId": resp.TaskId}))
    assert desc.Status == "InProgress" and desc.TaskId == resp.TaskId
    (f,) = desc.StorageFileList
    assert (f.UserId, f.TrackType, f.BeginTimeStamp) == ("alice", "video", 1622186279144)


def test_the_trtc_client_raises_trtc_codes(server: Server, store: MemoryStore) -> None:
    wrong = trtc(server, KEY_A.secret_id, "not-the-right-secret-key-00")
    with pytest.raises(TencentCloudSDKException) as err:
        wrong.CreateCloudRecording(request("CreateCloudRecording", create_single()))
    assert err.value.code == "AuthFailure.SignatureFailure" and err.value.requestId
    client = trtc(server, KEY_B.secret_id, KEY_B.secret_key)
    with pytest.raises(TencentCloudSDKException) as err:
        client.DeleteCloudRecording(request("DeleteCloudRecording", {
            "SdkAppId": SDKAPPID, "TaskId": "0f7d9522-a1a3-4517-b5ad-7a6eca000001"}))
    assert err.value.code == "ResourceNotFound"
    body = create_single()
    body["RecordParams"]["AvMerge"] = 1
    with pytest.raises(TencentCloudSDKException) as err:
        client.CreateCloudRecording(request("CreateCloudRecording", body))
    assert err.value.code == "InvalidParameter" and err.value.message.startswith("RecordParams.AvMerge")
    assert not store.objects


def post(server: Server, route: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any], Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/scf/{route}", data=body,
                                 headers={"Content-Type": "application/json", **headers})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def test_scf_path_answers_plain_http(server: Server, store: MemoryStore) -> None:
    body = json.dumps({"SdkAppId": SDKAPPID, "RoomId": 1234, "UserId": "alice", "UserSig": "sig", "Mode": "00",
                       "CosConfig": {"SecretId": "ak", "SecretKey": "sk", "Region": "us-east-1",
                                     "Bucket": "recordings", "Path": "/"}}).encode()
    status, out, headers = post(server, "single-stream-recording", body,
                                appauth.sign(KEY_A.secret_id, KEY_A.secret_key, body, time.time()))
    assert status == 200 and out["TaskId"] and headers["x-scf-reqid"] == out["RequestId"]
    status, out, _ = post(server, "single-stream-recording", body, {})
    assert status == 401 and out["ErrorCode"] == "AuthFailure.InvalidAuthorization"
    status, out, _ = post(server, "nowhere", body, appauth.sign(KEY_A.secret_id, KEY_A.secret_key, body, time.time()))
    assert status == 404
