"""The real API server refuses bad input with a message that names the field, and accepts the examples."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from capstan.api import GROUP, KINDS, VERSION

ROOT = Path(__file__).resolve().parents[2]
PLURAL = {k.kind: k.plural for k in KINDS}

ROOM = {"url": "ws://127.0.0.1:7880", "sdkAppId": 1400000000, "roomId": 1234,
        "credentialsSecretRef": {"name": "livekit-credentials"}}
STORAGE = {"endpoint": "127.0.0.1:9000", "bucket": "recordings", "secure": False,
           "credentialsSecretRef": {"name": "storage-credentials"}}
RECORDING = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CloudRecording", "metadata": {"name": "rec"},
             "spec": {"room": ROOM, "recorderUserId": "robot", "storage": STORAGE}}
WEB = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WebRecording", "metadata": {"name": "web"},
       "spec": {"recordUrl": "http://127.0.0.1:8080/page.html", "output": {"storage": STORAGE}}}
PUSH = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "StreamPush", "metadata": {"name": "push"},
        "spec": {"videoSrc": "http://127.0.0.1:8080/1.mp4", "room": ROOM, "userId": "pusher"}}
WATERMARK = {"url": "http://127.0.0.1/logo.png", "top": 0, "left": 0, "width": 10, "height": 10}
REGION = {"userId": "u", "top": 0, "left": 0, "width": 10, "height": 10}


def with_spec(base: dict, **changes) -> dict:
    obj = copy.deepcopy(base)
    for path, value in changes.items():
        node = obj["spec"]
        keys = path.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return obj


DELETE = object()

INVALID = [
    ("room id missing", with_spec(RECORDING, room__roomId=DELETE), "spec.room"),
    ("maxIdleTime too small", with_spec(RECORDING, maxIdleTime=4), "spec.maxIdleTime"),
    ("maxIdleTime too large", with_spec(RECORDING, maxIdleTime=86401), "spec.maxIdleTime"),
    ("unknown record mode", with_spec(RECORDING, recordMode="both"), "spec.recordMode"),
    ("robot id missing", with_spec(RECORDING, recorderUserId=DELETE), "spec.recorderUserId"),
    ("bad robot id", with_spec(RECORDING, recorderUserId="no spaces"), "spec.recorderUserId"),
    ("26 watermarks", with_spec(RECORDING, recordMode="mix", watermarks=[WATERMARK] * 26), "spec.watermarks"),
    ("26 regions", with_spec(RECORDING, recordMode="mix", mixLayout={"mode": "custom", "regions": [REGION] * 26}),
     "spec.mixLayout.regions"),
    ("layout in single mode", with_spec(RECORDING, mixLayout={"mode": "grid"}), "spec.mixLayout"),
    ("watermark in single mode", with_spec(RECORDING, watermarks=[WATERMARK]), "spec.watermarks"),
    ("custom layout without regions", with_spec(RECORDING, recordMode="mix", mixLayout={"mode": "custom"}),
     "spec.mixLayout.regions"),
    ("mp3 of video only", with_spec(RECORDING, streamType="video", output={"formats": ["mp3"]}),
     "spec.output.formats"),
    ("duplicate formats", with_spec(RECORDING, output={"formats": ["hls", "hls"]}), "spec.output.formats"),
    ("bad bucket", with_spec(RECORDING, storage={**STORAGE, "bucket": "My_Bucket"}), "spec.storage.bucket"),
    ("odd video width", with_spec(RECORDING, video={"width": 641}), "spec.video.width"),
    ("video width without height", with_spec(RECORDING, video={"width": 640}), "spec.video.width"),
    ("web too wide", with_spec(WEB, width=2562), "spec.width"),
    ("web too long", with_spec(WEB, maxDurationLimit=36001), "spec.maxDurationLimit"),
    ("web key without authUrl", with_spec(WEB, output={"storage": STORAGE, "muxer": "hls",
                                                      "encryptKeySecretRef": {"name": "k", "key": "k"}}),
     "spec.output.authUrl"),
    ("web key with mp4", with_spec(WEB, output={"storage": STORAGE, "muxer": "mp4", "authUrl": "http://a/k",
                                               "encryptKeySecretRef": {"name": "k", "key": "k"}}),
     "spec.output.encryptKeySecretRef"),
    ("live push from http", with_spec(PUSH, mode="live"), "spec.videoSrc"),
    ("vod push from rtmp", with_spec(PUSH, videoSrc="rtmp://127.0.0.1/live/x"), "spec.videoSrc"),
    ("push without user", with_spec(PUSH, userId=DELETE), "spec.userId"),
]


def create(api: client.CustomObjectsApi, namespace: str, obj: dict, dry_run: bool = True) -> dict:
    kwargs = {"dry_run": "All"} if dry_run else {}
    return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL[obj["kind"]], obj,
                                               _request_timeout=30, **kwargs)


@pytest.mark.parametrize(("case", "obj", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_resource_is_refused_naming_the_field(kube_api, crds, namespace, case, obj, field):
    api = client.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as err:
        create(api, namespace, obj)
    assert err.value.status == 422, err.value.body
    assert field in err.value.body, f"{case}: error does not name {field}: {err.value.body}"


@pytest.mark.parametrize(("obj", "change", "field"), [
    (RECORDING, {"room": {**ROOM, "roomId": 99}}, "spec.room"),
    (RECORDING, {"recordMode": "mix"}, "spec.recordMode"),
    (PUSH, {"videoSrc": "http://127.0.0.1:8080/2.mp4"}, "spec.videoSrc"),
    (WEB, {"recordUrl": "http://127.0.0.1:8080/other.html"}, "spec.recordUrl"),
], ids=["room", "recordMode", "videoSrc", "recordUrl"])
def test_immutable_fields_are_refused_on_update(kube_api, crds, namespace, obj, change, field):
    api = client.CustomObjectsApi(kube_api)
    created = create(api, namespace, obj, dry_run=False)
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL[obj["kind"]],
                                           created["metadata"]["name"], {"spec": change}, _request_timeout=30)
    assert err.value.status == 422 and field in err.value.body and "immutable" in err.value.body


def test_stop_cannot_be_undone(kube_api, crds, namespace):
    api = client.CustomObjectsApi(kube_api)
    create(api, namespace, with_spec(RECORDING, stop=True), dry_run=False)
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", "rec",
                                           {"spec": {"stop": False}}, _request_timeout=30)
    assert err.value.status == 422 and "spec.stop" in err.value.body


def test_defaults_are_filled_in_by_the_api_server(kube_api, crds, namespace):
    api = client.CustomObjectsApi(kube_api)
    obj = create(api, namespace, RECORDING)
    assert obj["spec"]["maxIdleTime"] == 30 and obj["spec"]["recordMode"] == "single"
    assert obj["spec"]["output"]["formats"] == ["hls"]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_accepted(kube_api, crds, namespace, path):
    api = client.CustomObjectsApi(kube_api)
    core = client.CoreV1Api(kube_api)
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        if doc["kind"] == "Secret":
            core.create_namespaced_secret(namespace, doc, dry_run="All", _request_timeout=30)
        else:
            create(api, namespace, doc)
