"""Worker env: secrets only as secretKeyRefs, a minted subscribe-only token, clear errors."""

import pytest
from livekit import api

from capstan.api import CLOUD_RECORDING, STREAM_PUSH
from capstan.operator.worker_env import TaskConfigError, worker_env

SECRETS = {("lk", "apiKey"): "devkey", ("lk", "apiSecret"): "s" * 32,
           ("s3", "accessKey"): "AK", ("s3", "secretKey"): "SK"}


def read(name, key):
    if (name, key) not in SECRETS:
        raise KeyError(f"Secret ns/{name} has no key {key!r}")
    return SECRETS[(name, key)]


def body(kind="CloudRecording", **spec):
    base = {"room": {"url": "ws://127.0.0.1:7880", "sdkAppId": 1, "strRoomId": "room-a",
                     "credentialsSecretRef": {"name": "lk"}}}
    if kind == "CloudRecording":
        base |= {"recorderUserId": "robot", "storage": {"endpoint": "127.0.0.1:9000", "bucket": "rec",
                                                        "secure": False, "credentialsSecretRef": {"name": "s3"}}}
    else:
        base |= {"userId": "teacher", "videoSrc": "http://x/1.mp4"}
    base |= spec
    return {"apiVersion": "capstan.dev/v1alpha1", "kind": kind,
            "metadata": {"name": "t1", "namespace": "ns", "uid": "u1"}, "spec": base}


def env_map(out):
    return {e["name"]: e for e in out.env}


def test_recorder_gets_a_hidden_subscribe_only_token_via_a_secret():
    out = worker_env(CLOUD_RECORDING, body(), read)
    env = env_map(out)
    assert env["ROOM_URL"]["value"] == "ws://127.0.0.1:7880" and env["ROOM_NAME"]["value"] == "room-a"
    assert env["ROOM_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "t1-crec-token", "key": "token",
                                                            "optional": False}
    (secret,) = out.secrets
    claims = api.TokenVerifier("devkey", "s" * 32).verify(secret["stringData"]["token"])
    assert claims.identity == "robot"
    assert claims.video.room == "room-a" and claims.video.hidden and not claims.video.can_publish
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u1"


def test_no_secret_value_is_ever_literal_in_the_env():
    out = worker_env(CLOUD_RECORDING, body(), read)
    literal = {e.get("value") for e in out.env}
    assert not literal & set(SECRETS.values())
    assert env_map(out)["S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3"


def test_pusher_token_publishes():
    out = worker_env(STREAM_PUSH, body("StreamPush"), read)
    claims = api.TokenVerifier("devkey", "s" * 32).verify(out.secrets[0]["stringData"]["token"])
    assert claims.identity == "teacher" and claims.video.can_publish and not claims.video.can_subscribe


def test_user_given_token_is_used_as_is():
    SECRETS[("mine", "jwt")] = "x"
    out = worker_env(CLOUD_RECORDING, body(recorderTokenSecretRef={"name": "mine", "key": "jwt"}), read)
    assert not out.secrets
    assert env_map(out)["ROOM_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "mine"


@pytest.mark.parametrize(("spec", "field"), [
    ({"room": {"url": "ws://a", "sdkAppId": 1, "roomId": 1, "credentialsSecretRef": {"name": "nope"}}},
     "spec.room.credentialsSecretRef"),
    ({"storage": {"endpoint": "e", "bucket": "rec", "credentialsSecretRef": {"name": "nope"}}},
     "spec.storage.credentialsSecretRef"),
])
def test_missing_secret_names_the_field(spec, field):
    with pytest.raises(TaskConfigError) as err:
        worker_env(CLOUD_RECORDING, body(**spec), read)
    assert str(err.value).startswith(field) and "nope" in str(err.value)


def opted_out(*names):
    """A reader over SECRETS where `names` exist but have not opted in (as kube.read_secret_key raises)."""
    from capstan.operator.worker_env import SecretNotOptedIn, unavailable_message

    def reader(name, key):
        if name in names:
            raise SecretNotOptedIn(unavailable_message("ns", name))
        return read(name, key)
    return reader


@pytest.mark.parametrize(("spec", "field", "secret"), [
    ({"recorderTokenSecretRef": {"name": "other", "key": "k"}}, "spec.recorderTokenSecretRef", "other"),
    ({}, "spec.room.credentialsSecretRef", "lk"),
    ({}, "spec.storage.credentialsSecretRef", "s3"),
    ({"callback": {"url": "https://h.example/", "signingKeySecretRef": {"name": "cbk", "key": "k"}}},
     "spec.callback.signingKeySecretRef", "cbk"),
    ({"room": {"backend": "janus", "url": "http://j/janus", "sdkAppId": 1, "roomId": 1,
               "credentialsSecretRef": {"name": "pin"}}}, "spec.room.credentialsSecretRef", "pin"),
])
def test_a_secret_that_did_not_opt_in_fails_naming_the_field(spec, field, secret):
    with pytest.raises(TaskConfigError) as err:
        worker_env(CLOUD_RECORDING, body(**spec), opted_out(secret))
    assert str(err.value) == f'{field}: Secret ns/{secret} not found or not labelled capstan.dev/use: "true"'


def test_optional_keys_may_be_missing_from_an_opted_in_secret():
    spec = {"room": {"backend": "janus", "url": "http://j/janus", "sdkAppId": 1, "roomId": 1,
                     "credentialsSecretRef": {"name": "pin"}},
            "callback": {"url": "https://h.example/", "signingKeySecretRef": {"name": "later", "key": "k"}}}
    env = env_map(worker_env(CLOUD_RECORDING, body(**spec), read))  # neither Secret has the key (yet)
    assert env["ROOM_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "pin", "key": "roomPin", "optional": True}
