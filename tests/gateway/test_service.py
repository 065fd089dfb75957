"""The gateway's actions on an in-memory Store: key bindings (namespaces, SdkAppIds), the rate limit,
the concurrency refusal, and Secrets owned by the resource. Signed requests, no network."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from capstan.gateway import appauth, errors, tc3
from capstan.gateway.config import KeyBinding
from capstan.gateway.mapping import Plan
from capstan.gateway.service import Gateway
from capstan.gateway.store import StoreError

from .requests import SDKAPPID, config, create_single, start_ingest, start_web

KEY_A = KeyBinding("AKIDteamA000001", "team-a-secret-key-000001", ("team-a",), frozenset({SDKAPPID}))
KEY_B = KeyBinding("AKIDteamB000001", "team-b-secret-key-000001", ("team-b",), frozenset({SDKAPPID}))
KEY_OTHER_APP = KeyBinding("AKIDteamC000001", "team-c-secret-key-000001", ("team-a",), frozenset({1400000999}))


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.on_create: Any = None

    async def create(self, namespace: str, plan: Plan) -> dict[str, Any]:
        key = (namespace, plan.plural, plan.names.resource)
        if key in self.objects:
            raise StoreError(409, "exists")
        obj = {**plan.body(), "status": {}}
        obj["metadata"] = {**obj["metadata"], "namespace": namespace, "uid": f"uid-{len(self.objects)}"}
        self.objects[key] = obj
        for secret in plan.secret_bodies():
            secret["metadata"]["ownerReferences"] = [{"kind": plan.kind, "name": plan.names.resource,
                                                      "uid": obj["metadata"]["uid"]}]
            self.secrets[(namespace, secret["metadata"]["name"])] = secret
        if self.on_create:
            self.on_create(obj)
        return obj

    async def get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, plural, name))

    async def list(self, namespace: str, plural: str, label_selector: str) -> list[dict[str, Any]]:
        want = dict(part.split("=", 1) for part in label_selector.split(","))
        return [o for (ns, pl, _), o in self.objects.items() if ns == namespace and pl == plural
                and all(o["metadata"]["labels"].get(k) == v for k, v in want.items())]

    async def patch_spec(self, namespace: str, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        obj = self.objects.get((namespace, plural, name))
        if obj is None:
            raise StoreError(404, "not found")
        for k, v in patch.items():
            obj["spec"][k] = v
        return obj

    async def delete(self, namespace: str, plural: str, name: str) -> None:
        self.objects.pop((namespace, plural, name), None)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        return {}


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def gateway(store: MemoryStore, **cfg: Any) -> Gateway:
    keys = {k.secret_id: k for k in (KEY_A, KEY_B, KEY_OTHER_APP)}
    return Gateway(config(**cfg), lambda: keys, store)


def call(gw: Gateway, action: str, params: dict, key: KeyBinding = KEY_A, secret_key: str | None = None,
         stamp: int | None = None) -> dict:
    body = json.dumps(params).encode()
    stamp = stamp or int(time.time())
    headers = {"content-type": "application/json", "host": "127.0.0.1:8090", "x-tc-action": action,
               "x-tc-version": "2019-07-22", "x-tc-timestamp": str(stamp)}
    req = tc3.Request("POST", "/", "", headers, body)
    headers["authorization"] = tc3.sign(key.secret_id, secret_key or key.secret_key, req, stamp)
    return asyncio.run(gw.call_api(tc3.Request("POST", "/", "", headers, body)))["Response"]


def test_create_describe_modify_delete(store: MemoryStore) -> None:
    gw = gateway(store)
    out = call(gw, "CreateCloudRecording", create_single())
    assert out["RequestId"] and "Error" not in out, out
    task_id = out["TaskId"]
    (ns, plural, name), obj = next(iter(store.objects.items()))
    assert (ns, plural, name) == ("team-a", "cloudrecordings", f"trtc-{task_id}")
    owned = [s for (sns, _), s in store.secrets.items() if sns == "team-a"]
    assert len(owned) == 2 and all(s["metadata"]["ownerReferences"][0]["name"] == name for s in owned)
    obj["status"] = {"phase": "recording", "taskId": task_id}
    desc = call(gw, "DescribeCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id})
    assert desc["Status"] == "InProgress" and desc["TaskId"] == task_id and desc["StorageFileList"] == []
    mod = call(gw, "ModifyCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id,
                                            "SubscribeStreamUserIds": {"SubscribeAudioUserIds": ["carol"]}})
    assert mod["TaskId"] == task_id and obj["spec"]["subscribe"]["audioAllow"] == ["carol"]
    assert call(gw, "DeleteCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id})["TaskId"] == task_id
    assert obj["spec"]["stop"] is True


def test_wrong_secret_key_is_refused(store: MemoryStore) -> None:
    out = call(gateway(store), "CreateCloudRecording", create_single(), secret_key="the-wrong-secret-key-000")
    assert out["Error"]["Code"] == errors.AUTH_SIGNATURE and not store.objects


def test_old_timestamp_is_refused(store: MemoryStore) -> None:
    out = call(gateway(store), "DescribeCloudRecording", {}, stamp=int(time.time()) - 301)
    assert out["Error"]["Code"] == errors.AUTH_EXPIRED


def test_another_namespaces_key_cannot_see_or_stop_the_task(store: MemoryStore) -> None:
    gw = gateway(store)
    task_id = call(gw, "CreateCloudRecording", create_single())["TaskId"]
    for action in ("DescribeCloudRecording", "DeleteCloudRecording"):
        out = call(gw, action, {"SdkAppId": SDKAPPID, "TaskId": task_id}, key=KEY_B)
        assert out["Error"]["Code"] == errors.NOT_FOUND
    absent = call(gw, "DescribeCloudRecording", {"SdkAppId": SDKAPPID,
                                                 "TaskId": "0f7d9522-a1a3-4517-b5ad-7a6eca000009"}, key=KEY_B)
    assert absent["Error"]["Code"] == errors.NOT_FOUND  # the same answer: existence is not revealed
    assert not store.objects[("team-a", "cloudrecordings", f"trtc-{task_id}")]["spec"].get("stop")


def test_a_key_may_use_only_its_sdk_app_ids(store: MemoryStore) -> None:
    gw = gateway(store)
    out = call(gw, "CreateCloudRecording", create_single(), key=KEY_OTHER_APP)
    assert out["Error"]["Code"] == errors.AUTH_UNAUTHORIZED and not store.objects
    task_id = call(gw, "CreateCloudRecording", create_single())["TaskId"]
    out = call(gw, "DescribeCloudRecording", {"SdkAppId": 1400000999, "TaskId": task_id}, key=KEY_OTHER_APP)
    assert out["Error"]["Code"] == errors.NOT_FOUND


def test_rate_limit(store: MemoryStore) -> None:
    gw = gateway(store, qps=3)
    codes = [call(gw, "DescribeCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": "0f7d9522-a1a3-4517-b5ad-"
                                                 "7a6eca000009"}).get("Error", {}).get("Code") for _ in range(5)]
    assert codes[:3] == [errors.NOT_FOUND] * 3 and errors.RATE_LIMIT in codes[3:]
    other = call(gw, "DescribeStreamIngest", {"SdkAppId": SDKAPPID, "TaskId": "0f7d9522-a1a3-4517-b5ad-7a6eca000009"})
    assert other["Status"] == "NotExist"  # per action


def test_concurrency_refusal_is_restricted_concurrency(store: MemoryStore) -> None:
    def operator_refuses(obj: dict) -> None:
        obj["status"] = {"phase": "failed", "taskId": "x", "result": {
            "errorCode": "FailedOperation.RestrictedConcurrency", "errorMessage": "the limit of 1 ... is reached"}}

    store.on_create = operator_refuses
    out = call(gateway(store, admission_wait=2.0), "CreateCloudRecording", create_single())
    assert out["Error"]["Code"] == errors.RESTRICTED_CONCURRENCY and not store.objects


def test_unsupported_field_refused_by_name_and_nothing_created(store: MemoryStore) -> None:
    body = create_single()
    body["StorageParams"]["CloudVod"] = {"TencentVod": {}}
    out = call(gateway(store), "CreateCloudRecording", body)
    assert out["Error"]["Code"] == errors.INVALID and "StorageParams.CloudVod" in out["Error"]["Message"]
    assert not store.objects and not store.secrets


def test_unknown_action_and_version(store: MemoryStore) -> None:
    assert call(gateway(store), "RemoveUser", {})["Error"]["Code"] == errors.UNSUPPORTED_ACTION


def test_stream_ingest_and_web_record(store: MemoryStore) -> None:
    gw = gateway(store)
    task_id = call(gw, "StartStreamIngest", start_ingest())["TaskId"]
    obj = store.objects[("team-a", "streampushes", f"trtc-{task_id}")]
    obj["status"] = {"phase": "pushing"}
    assert call(gw, "DescribeStreamIngest", {"SdkAppId": SDKAPPID, "TaskId": task_id})["Status"] == "InProgress"
    assert call(gw, "DescribeStreamIngest", {"SdkAppId": SDKAPPID, "TaskId": task_id},
                key=KEY_B)["Status"] == "NotExist"
    call(gw, "StopStreamIngest", {"SdkAppId": SDKAPPID, "TaskId": task_id})
    assert obj["spec"]["stop"] is True
    web = call(gw, "StartWebRecord", start_web())["TaskId"]
    again = call(gw, "StartWebRecord", start_web(MaxDurationLimit=1800))
    assert again["Error"]["Code"] == errors.TASK_EXIST and web in again["Error"]["Message"]
    by_record = call(gw, "DescribeWebRecord", {"SdkAppId": SDKAPPID, "RecordId": "class-7"})
    assert by_record["TaskId"] == web and by_record["Status"] == 0
    call(gw, "StopWebRecord", {"TaskId": web})
    assert store.objects[("team-a", "webrecordings", f"trtc-{web}")]["spec"]["stop"] is True


def scf_call(gw: Gateway, route: str, params: dict, key: KeyBinding = KEY_A) -> tuple[int, dict]:
    body = json.dumps(params).encode()
    headers = {k.lower(): v for k, v in appauth.sign(key.secret_id, key.secret_key, body, time.time()).items()}
    return asyncio.run(gw.call_scf(route, headers, body))


def test_scf_panoramic_action_api(store: MemoryStore) -> None:
    gw = gateway(store)
    status, out = scf_call(gw, "panoramic-recording", {"Action": "Start", "Data": {
        "RecordURL": "https://web.example/page", "Output": {"Cos": {
            "Bucket": "recordings", "Region": "us-east-1", "SecretId": "ak", "SecretKey": "sk"}}}})
    assert status == 200 and out["TaskID"] and out["RequestID"], out
    obj = store.objects[("team-a", "webrecordings", f"trtc-{out['TaskID']}")]
    for action, field, value in (("Pause", "paused", True), ("Resume", "paused", False),
                                 ("Refresh", "refreshGeneration", 1), ("Stop", "stop", True)):
        status, answer = scf_call(gw, "panoramic-recording", {"Action": action, "Data": {"TaskID": out["TaskID"]}})
        assert status == 200 and answer["TaskID"] == out["TaskID"] and obj["spec"][field] == value
    status, err = scf_call(gw, "panoramic-recording", {"Action": "Pause", "Data": {}})
    assert status == 400 and err["ErrorCode"] == "MissingParameter.TaskID" and err["RequestID"]
    status, err = scf_call(gw, "panoramic-recording", {"Action": "Describe", "Data": {"TaskID": out["TaskID"]}},
                           key=KEY_B)
    assert status == 404 and err["ErrorCode"] == errors.NOT_FOUND


def test_a_replayed_creating_request_creates_nothing_more(store: MemoryStore) -> None:
    gw = gateway(store)
    body = json.dumps(create_single()).encode()
    stamp = int(time.time())
    headers = {"content-type": "application/json", "host": "127.0.0.1:8090", "x-tc-action": "CreateCloudRecording",
               "x-tc-version": "2019-07-22", "x-tc-timestamp": str(stamp)}
    headers["authorization"] = tc3.sign(KEY_A.secret_id, KEY_A.secret_key, tc3.Request("POST", "/", "", headers,
                                                                                         body), stamp)
    first = asyncio.run(gw.call_api(tc3.Request("POST", "/", "", headers, body)))["Response"]
    again = asyncio.run(gw.call_api(tc3.Request("POST", "/", "", headers, body)))["Response"]
    assert first["TaskId"] and again["TaskId"] == first["TaskId"] and again["RequestId"] != first["RequestId"]
    assert len(store.objects) == 1


def test_resource_expired_hour_ends_api_access_not_the_recording(store: MemoryStore) -> None:
    gw = gateway(store)
    task_id = call(gw, "CreateCloudRecording", create_single(ResourceExpiredHour=6))["TaskId"]
    obj = store.objects[("team-a", "cloudrecordings", f"trtc-{task_id}")]
    assert obj["metadata"]["annotations"]["capstan.dev/trtc-resource-expired-hour"] == "6"
    obj["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5 * 3600))
    assert call(gw, "DescribeCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id})["Status"] == "Idle"
    obj["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7 * 3600))
    out = call(gw, "DeleteCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id})
    assert out["Error"]["Code"] == errors.NOT_FOUND and "ResourceExpiredHour" in out["Error"]["Message"]
    assert not obj["spec"].get("stop")
    body = create_single(ResourceExpiredHour=2)
    assert call(gw, "CreateCloudRecording", body)["Error"]["Code"] == "InvalidParameter.ResourceExpiredHour"
