"""The operator's defaults for the room server and the storage, against the real API server: a
CloudRecording that names neither runs on the defaults; without defaults it fails naming the field."""

from __future__ import annotations

import pytest

from capstan.api import GROUP, VERSION
from tests.conftest import wait_for
from tests.operator.test_operator_stack import ROOM, Tasks

pytestmark = pytest.mark.stack

BARE_ROOM = {"sdkAppId": ROOM["sdkAppId"], "roomId": ROOM["roomId"]}  # no url, backend or credentials


def bare_recording(name: str, **spec) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CloudRecording", "metadata": {"name": name},
            "spec": {"room": BARE_ROOM, "recorderUserId": f"robot-{name}", **spec}}


def defaults_env(stack) -> dict[str, str]:
    """Defaults naming the Secrets Tasks.create_credentials makes in the test's namespace."""
    return {"CAPSTAN_DEFAULT_ROOM_URL": ROOM["url"], "CAPSTAN_DEFAULT_ROOM_SECRET": "livekit-credentials",
            "CAPSTAN_DEFAULT_STORAGE_ENDPOINT": stack.s3_endpoint, "CAPSTAN_DEFAULT_STORAGE_BUCKET": "recordings",
            "CAPSTAN_DEFAULT_STORAGE_SECURE": "false", "CAPSTAN_DEFAULT_STORAGE_SECRET": "storage-credentials"}


def test_a_recording_without_room_server_and_storage_runs_on_the_operator_defaults(
        operator_factory, stack, kube_api, namespace):
    operator_factory(**defaults_env(stack))
    tasks = Tasks(kube_api, namespace).create_credentials()
    created = tasks.create(bare_recording("bare"))
    assert "storage" not in created["spec"] and "url" not in created["spec"]["room"]  # the API server takes it
    st = tasks.wait_phase("bare", "idle")
    assert st["attempt"] == 1 and st["room"] == "1234"
    pod = tasks.pod("bare-crec-a1")
    env = {e.name: e for e in pod.spec.containers[0].env}
    assert (env["ROOM_BACKEND"].value, env["ROOM_URL"].value, env["ROOM_NAME"].value) == \
        ("livekit", ROOM["url"], "1234")
    assert (env["S3_ENDPOINT"].value, env["S3_BUCKET"].value, env["S3_SECURE"].value) == \
        (stack.s3_endpoint, "recordings", "0")
    assert env["S3_ACCESS_KEY"].value_from.secret_key_ref.name == "storage-credentials"
    assert env["ROOM_TOKEN"].value_from.secret_key_ref.name == "bare-crec-token"  # minted from the default Secret
    spec = tasks.get("bare")["spec"]
    assert "storage" not in spec and spec["room"] == BARE_ROOM  # the defaults are not written into the task
    tasks.patch_spec("bare", {"stop": True})
    assert not (tasks.wait_phase("bare", "finished").get("result") or {}).get("errorCode")


def test_without_a_default_the_task_fails_naming_the_field(operator_factory, kube_api, namespace):
    operator_factory()  # no CAPSTAN_DEFAULT_*
    tasks = Tasks(kube_api, namespace).create_credentials()
    tasks.create(bare_recording("nourl"))
    tasks.create(bare_recording("nostorage", room=ROOM))
    for name, field, setting in (("nourl", "spec.room.url", "CAPSTAN_DEFAULT_ROOM_URL"),
                                 ("nostorage", "spec.storage", "CAPSTAN_DEFAULT_STORAGE_ENDPOINT")):
        st = tasks.wait_phase(name, "failed")
        assert st["result"]["errorCode"] == "InvalidParameter"
        message = st["result"]["errorMessage"]
        assert message.startswith(f"{field}: required: ") and setting in message, message
        # the Event is posted right after the status write that failed the task
        wait_for(lambda name=name, message=message: (name, message) if any(
            r == "InvalidParameter" and m == message for r, m in tasks.events(name)) else None,
            30, what=f"the InvalidParameter Event of {name}")
        assert tasks.pod(f"{name}-crec-a1") is None
