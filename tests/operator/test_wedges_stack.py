"""Ways a task could wedge (issue 9, item 5), each on the real API server with the operator as a
process: a worker Pod no node ever starts, a resource name longer than a label value, a Secret
value that is not UTF-8. None may hold a quota place, block deletion or stop the operator."""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from devstack.harness import OperatorProcess
from devstack.pytest_plugin import prepare_namespace
from tests.conftest import wait_for
from tests.operator.test_operator_stack import USE, Tasks, recording, tasks  # noqa: F401


@pytest.fixture
def nodeless(stack, kube_api, crds, tmp_path) -> Iterator[tuple[Tasks, OperatorProcess]]:
    """A namespace no pod runner serves (a cluster with no node that can take the Pod: unschedulable),
    with an operator of its own: quota 1, Pending timeout 4 s."""
    name = f"capstan-nonode-{uuid.uuid4().hex[:6]}"  # not the session's prefix: no runner claims it
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name, "labels": {"capstan-test": "1"}}}, _request_timeout=30)
    prepare_namespace(kube_api, name)
    env = {**os.environ, **stack.env(), "CAPSTAN_METRICS_PORT": "0", "CAPSTAN_RECONCILE_INTERVAL": "1",
           "PYTHONUNBUFFERED": "1", "CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE": "base", "CAPSTAN_MAX_TASKS": "1",
           "CAPSTAN_PENDING_TIMEOUT_SECONDS": "4"}
    operator = OperatorProcess(name, env, tmp_path / "operator.log")
    operator.start()
    own = Tasks(kube_api, name).create_credentials()
    try:
        yield own, operator
    finally:
        with contextlib.suppress(Exception):  # with the operator still there, so the finalizers go
            for item in own.api.list_namespaced_custom_object("capstan.dev", "v1alpha1", name, "cloudrecordings",
                                                                _request_timeout=30)["items"]:
                own.delete(item["metadata"]["name"])
            wait_for(lambda: not own.api.list_namespaced_custom_object(
                "capstan.dev", "v1alpha1", name, "cloudrecordings", _request_timeout=30)["items"], 30,
                what="the tasks deleted")
        operator.stop()
        with contextlib.suppress(Exception):
            core.delete_namespace(name, _request_timeout=30)


def test_a_worker_pod_that_never_starts_fails_and_gives_its_place_to_the_next(nodeless):
    own, _ = nodeless
    own.create(recording("stuck"))
    wait_for(lambda: own.pod("stuck-crec-a1"), 30, what="the worker Pod created")
    own.create(recording("next"))
    wait_for(lambda: any(c["type"] == "Queued" and c["status"] == "True"
                         for c in own.status("next").get("conditions", [])), 30, what="next queued behind it")
    st = own.wait_phase("stuck", "failed", timeout=40)
    assert st["result"]["errorCode"] == "WorkerPending"
    assert "Pending for more than 4 s" in st["result"]["errorMessage"]
    # the Event is posted right after the status write that ended the task
    wait_for(lambda: any(r == "WorkerPending" for r, _ in own.events("stuck")), 30, what="the WorkerPending Event")
    wait_for(lambda: own.pod("stuck-crec-a1") is None, 30, what="the Pending Pod deleted")
    # its place went to the next task, whose Pod is Pending too; a stop ends it at once
    wait_for(lambda: own.pod("next-crec-a1"), 30, what="next admitted")
    own.patch_spec("next", {"stop": True})
    st = own.wait_phase("next", "canceled", timeout=20)
    assert st.get("result") is None or st["result"].get("errorCode") != "WorkerPending"
    wait_for(lambda: own.pod("next-crec-a1") is None, 30, what="its Pod deleted")


def test_a_name_longer_than_a_label_value_starts_stops_and_deletes(operator, tasks, namespace):  # noqa: F811
    name = "a-lesson-recorded-for-the-spring-term-of-the-music-school-" + "x" * 20  # 78 characters
    assert len(name) > 63
    obj = recording(name)
    obj["spec"]["recorderUserId"] = "robot-long"
    tasks.create(obj)
    st = tasks.wait_phase(name, "idle", timeout=60)
    pod = tasks.pod(st["workerPod"])
    assert pod is not None and all(len(v) <= 63 for v in (pod.metadata.labels or {}).values())
    tasks.patch_spec(name, {"stop": True})
    tasks.wait_phase(name, "finished", timeout=60)
    tasks.delete(name)
    wait_for(lambda: tasks.get(name) is None, 60, what="the task deleted")


def test_a_secret_value_that_is_not_utf8_fails_the_task_naming_it_and_the_operator_goes_on(
        operator, tasks):  # noqa: F811
    tasks.core.create_namespaced_secret(tasks.ns, {
        "metadata": {"name": "binary-credentials", **USE},
        "data": {"accessKey": base64.b64encode(b"\xff\xfe\x00key").decode(),
                 "secretKey": base64.b64encode(b"capstan-secret").decode()}}, _request_timeout=30)
    bad = recording("binary")
    bad["spec"]["storage"] = {**bad["spec"]["storage"], "credentialsSecretRef": {"name": "binary-credentials"}}
    tasks.create(bad)
    st = tasks.wait_phase("binary", "failed", timeout=60)
    message = st["result"]["errorMessage"]
    assert "spec.storage.credentialsSecretRef" in message and "binary-credentials" in message, message
    assert "accessKey" in message and "UTF-8" in message, message
    tasks.create(recording("healthy"))  # the operator did not wedge on it
    tasks.wait_phase("healthy", "idle", timeout=60)
    tasks.patch_spec("healthy", {"stop": True})
    tasks.wait_phase("healthy", "finished", timeout=60)
