"""Operator-wide defaults for the room server and the storage: read from CAPSTAN_DEFAULT_*, applied
where a task leaves them out, and a clear InvalidParameter-style error naming the field otherwise."""

import pytest

from capstan.api import CLOUD_RECORDING, STREAM_PUSH, WEB_RECORDING
from capstan.api.cloudrecording import CloudRecordingSpec
from capstan.api.webrecording import WebRecordingSpec
from capstan.operator.config import OperatorConfig
from capstan.operator.defaults import (
    RoomDefaults,
    StorageDefaults,
    TaskConfigError,
    TaskDefaults,
    effective_spec,
)
from capstan.operator.worker_env import worker_env
from capstan.storage.client import public_base_url

ENV = {"CAPSTAN_DEFAULT_ROOM_URL": "ws://livekit.rooms:7880", "CAPSTAN_DEFAULT_ROOM_SECRET": "shared-livekit",
       "CAPSTAN_DEFAULT_STORAGE_ENDPOINT": "minio.storage:9000", "CAPSTAN_DEFAULT_STORAGE_BUCKET": "recordings",
       "CAPSTAN_DEFAULT_STORAGE_SECRET": "shared-s3", "CAPSTAN_DEFAULT_STORAGE_SECURE": "false",
       "CAPSTAN_DEFAULT_STORAGE_REGION": "eu-west-1",
       "CAPSTAN_DEFAULT_STORAGE_PUBLIC_BASE_URL": "https://cdn.example/recordings"}
DEFAULTS = TaskDefaults.from_env(ENV)
NONE = TaskDefaults()


def recording(**room):
    return {"room": {"sdkAppId": 1400000000, "roomId": 1234, **room}, "recorderUserId": "robot"}


def test_the_env_gives_every_default():
    assert DEFAULTS.room == RoomDefaults(backend="livekit", url="ws://livekit.rooms:7880", secret="shared-livekit")
    assert DEFAULTS.storage == StorageDefaults(endpoint="minio.storage:9000", bucket="recordings", region="eu-west-1",
                                               secure=False, secret="shared-s3",
                                               public_base_url="https://cdn.example/recordings")
    assert TaskDefaults.from_env({}) == NONE and not NONE.storage.configured and NONE.room.backend == "livekit"
    assert TaskDefaults.from_env({"CAPSTAN_DEFAULT_ROOM_BACKEND": "janus"}).room.backend == "janus"


def test_operator_config_reads_the_defaults(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert OperatorConfig.from_env().defaults == DEFAULTS
    assert OperatorConfig().defaults == NONE


@pytest.mark.parametrize(("env", "message"), [
    ({"CAPSTAN_DEFAULT_ROOM_BACKEND": "zoom"}, "CAPSTAN_DEFAULT_ROOM_BACKEND must be one of livekit, janus"),
    ({"CAPSTAN_DEFAULT_ROOM_URL": "ws://lk:7880"}, "given together"),
    ({"CAPSTAN_DEFAULT_ROOM_SECRET": "lk"}, "given together"),
    ({"CAPSTAN_DEFAULT_ROOM_URL": "lk:7880", "CAPSTAN_DEFAULT_ROOM_SECRET": "lk"}, "CAPSTAN_DEFAULT_ROOM_*: url"),
    ({"CAPSTAN_DEFAULT_ROOM_URL": "ws://lk", "CAPSTAN_DEFAULT_ROOM_SECRET": "No_Such"},
     "CAPSTAN_DEFAULT_ROOM_*: credentialsSecretRef.name"),
    ({"CAPSTAN_DEFAULT_STORAGE_ENDPOINT": "minio:9000", "CAPSTAN_DEFAULT_STORAGE_BUCKET": "rec"}, "given together"),
    ({"CAPSTAN_DEFAULT_STORAGE_ENDPOINT": "minio:9000", "CAPSTAN_DEFAULT_STORAGE_BUCKET": "A",
      "CAPSTAN_DEFAULT_STORAGE_SECRET": "s3"}, "CAPSTAN_DEFAULT_STORAGE_*: bucket"),
    ({"CAPSTAN_DEFAULT_STORAGE_SECURE": "maybe"}, "CAPSTAN_DEFAULT_STORAGE_SECURE must be true or false"),
])
def test_a_malformed_or_half_given_default_stops_the_operator(env, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        TaskDefaults.from_env(env)


def test_a_task_without_room_server_and_storage_gets_the_defaults():
    spec = recording()
    out = effective_spec(CLOUD_RECORDING, spec, DEFAULTS)
    assert out["room"] == {"sdkAppId": 1400000000, "roomId": 1234, "backend": "livekit",
                           "url": "ws://livekit.rooms:7880", "credentialsSecretRef": {"name": "shared-livekit"}}
    assert out["storage"] == {"endpoint": "minio.storage:9000", "bucket": "recordings", "region": "eu-west-1",
                              "secure": False, "credentialsSecretRef": {"name": "shared-s3"},
                              "publicBaseUrl": "https://cdn.example/recordings"}
    assert spec == recording()  # the task's own spec is never changed
    CloudRecordingSpec.model_validate(out)


def test_what_the_task_gives_wins():
    storage = {"endpoint": "s3.mine:9000", "bucket": "mine", "credentialsSecretRef": {"name": "my-s3"}}
    spec = {**recording(url="wss://lk.mine", backend="livekit", credentialsSecretRef={"name": "my-lk"}),
            "storage": storage}
    assert effective_spec(CLOUD_RECORDING, spec, DEFAULTS) == spec
    assert effective_spec(CLOUD_RECORDING, spec, NONE) == spec


def test_own_credentials_on_the_default_server():
    out = effective_spec(CLOUD_RECORDING, recording(credentialsSecretRef={"name": "my-lk"}), DEFAULTS)
    assert out["room"]["url"] == "ws://livekit.rooms:7880" and out["room"]["credentialsSecretRef"] == {"name": "my-lk"}


def test_an_explicit_default_url_still_gets_the_default_secret():
    out = effective_spec(CLOUD_RECORDING, recording(url="ws://livekit.rooms:7880"), DEFAULTS)
    assert out["room"]["credentialsSecretRef"] == {"name": "shared-livekit"}


def test_an_own_url_gets_the_default_backend_but_never_the_default_secret():
    out = effective_spec(STREAM_PUSH, {**recording(url="ws://lk.mine", credentialsSecretRef={"name": "my-lk"})},
                         TaskDefaults(room=RoomDefaults(backend="janus")))
    assert out["room"]["backend"] == "janus"
    with pytest.raises(TaskConfigError) as err:  # the shared credentials are not sent to another server
        effective_spec(CLOUD_RECORDING, recording(url="ws://lk.mine"), DEFAULTS)
    assert str(err.value).startswith("spec.room.credentialsSecretRef: required: the operator's default room Secret "
                                     "is only used with its default room URL")


@pytest.mark.parametrize(("spec", "defaults", "field", "says"), [
    (recording(), NONE, "spec.room.url",
     "no default room URL (CAPSTAN_DEFAULT_ROOM_URL, chart value defaults.room.url)"),
    (recording(backend="janus"), DEFAULTS, "spec.room.url",
     "the task's backend is janus, the operator's default room URL is a livekit server"),
    (recording(url="ws://lk.mine"), NONE, "spec.room.credentialsSecretRef", "no default room Secret"),
    ({**recording(url="ws://lk.mine", credentialsSecretRef={"name": "lk"})}, NONE, "spec.storage",
     "no default storage (CAPSTAN_DEFAULT_STORAGE_ENDPOINT/_BUCKET/_SECRET, chart value defaults.storage)"),
])
def test_a_field_with_neither_value_nor_default_is_named(spec, defaults, field, says):
    with pytest.raises(TaskConfigError) as err:
        effective_spec(CLOUD_RECORDING, spec, defaults)
    assert str(err.value).startswith(f"{field}: required: ") and says in str(err.value)


def test_web_recording_storage_defaults_and_is_named_when_missing():
    spec = {"recordUrl": "https://page.example/", "output": {"muxer": "hls"}}
    out = effective_spec(WEB_RECORDING, spec, DEFAULTS)
    assert out["output"]["storage"]["bucket"] == "recordings" and out["output"]["muxer"] == "hls"
    assert "room" not in out and "storage" not in out
    assert effective_spec(WEB_RECORDING, {"recordUrl": "https://p/"}, DEFAULTS)["output"]["storage"]
    with pytest.raises(TaskConfigError, match=r"^spec\.output\.storage: required: "):
        effective_spec(WEB_RECORDING, spec, NONE)
    WebRecordingSpec.model_validate({"recordUrl": "https://p/"})  # output and its storage may be left out


def test_a_stream_push_needs_no_storage():
    spec = {**recording(), "userId": "teacher", "videoSrc": "http://x/1.mp4"}
    assert "storage" not in effective_spec(STREAM_PUSH, spec, DEFAULTS)
    with pytest.raises(TaskConfigError, match=r"^spec\.room\.url: required"):
        effective_spec(STREAM_PUSH, spec, NONE)


def test_not_strict_fills_what_it_can_and_leaves_the_rest_out():
    assert "storage" not in effective_spec(CLOUD_RECORDING, recording(), NONE, strict=False)
    assert "url" not in effective_spec(CLOUD_RECORDING, recording(), NONE, strict=False)["room"]
    assert effective_spec(CLOUD_RECORDING, recording(), DEFAULTS, strict=False)["storage"]["bucket"] == "recordings"


def test_the_worker_of_a_defaulted_task_gets_the_default_server_and_storage():
    secrets = {("shared-livekit", "apiKey"): "devkey", ("shared-livekit", "apiSecret"): "s" * 32,
               ("shared-s3", "accessKey"): "AK", ("shared-s3", "secretKey"): "SK"}

    def read(name, key):
        if (name, key) not in secrets:
            raise KeyError(f"Secret ns/{name} has no key {key!r}")
        return secrets[(name, key)]

    body = {"kind": "CloudRecording", "metadata": {"name": "t1", "namespace": "ns", "uid": "u1"},
            "spec": effective_spec(CLOUD_RECORDING, recording(), DEFAULTS)}
    env = {e["name"]: e for e in worker_env(CLOUD_RECORDING, body, read).env}
    assert env["ROOM_URL"]["value"] == "ws://livekit.rooms:7880" and env["ROOM_BACKEND"]["value"] == "livekit"
    assert (env["S3_ENDPOINT"]["value"], env["S3_BUCKET"]["value"], env["S3_SECURE"]["value"]) == \
        ("minio.storage:9000", "recordings", "0")
    assert env["S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "shared-s3"
    assert env["S3_PUBLIC_BASE_URL"]["value"] == "https://cdn.example/recordings"
    secrets.pop(("shared-s3", "secretKey"))
    with pytest.raises(TaskConfigError, match=r"^spec\.storage\.credentialsSecretRef: .*shared-s3"):
        worker_env(CLOUD_RECORDING, body, read)


def test_workers_take_the_public_base_url_from_the_spec_else_from_the_operator():
    spec = CloudRecordingSpec.model_validate({**recording(), "storage": {
        "endpoint": "e:9000", "bucket": "rec", "credentialsSecretRef": {"name": "s3"},
        "publicBaseUrl": "https://mine.example"}})
    assert public_base_url(spec.storage, {"S3_PUBLIC_BASE_URL": "https://cdn.example"}) == "https://mine.example"
    assert public_base_url(None, {"S3_PUBLIC_BASE_URL": "https://cdn.example"}) == "https://cdn.example"
    assert public_base_url(None, {}) is None


def test_a_result_body_may_name_files_by_urls_of_the_default_storage():
    """The outbox check (callbacks, Events) looks at the storage the worker wrote to: the default one."""
    from capstan.api.common import TaskEvent
    from capstan.operator import outbox

    spec = {**recording(), "output": {"prefix": "rec"}}
    url = "http://minio.storage:9000/recordings/rec/task-1/a.m3u8?X-Amz-Signature=ab"
    result = {"SdkAppId": "1400000000", "RoomId": "1234", "StrRoomId": "", "UserId": "robot", "TaskId": "task-1",
              "Files": [{"UserId": "alice", "RecordFile": url, "Status": 1, "Message": "success"}]}
    event = TaskEvent.model_validate({"seq": 1, "type": 0, "ts": 1, "payload": result})
    status = {"taskId": "task-1"}
    effective = effective_spec(CLOUD_RECORDING, spec, DEFAULTS, strict=False)
    assert outbox.refusal(CLOUD_RECORDING, effective, status, event) is None
    assert "is not under" in (outbox.refusal(CLOUD_RECORDING, spec, status, event) or "")
