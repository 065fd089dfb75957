"""A worker's final status patch answered slowly, or not at all for a while (issue 11: 3 of 100
clean stops ended `failed` when a patch hit the client's read timeout during a stop burst; issue 9:
an API outage at the end lost the closing events). The worker talks to the real API server through
a proxy that holds the answers (or cuts the requests) of its last writes; they are retried and the
task still ends `finished`."""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
import uuid

import pytest
from kubernetes import client

from capstan.api import GROUP, VERSION
from capstan.operator.config import FINALIZER
from capstan.worker.base import TIMEOUT
from devstack import podrunner
from devstack.harness import OperatorProcess
from devstack.pytest_plugin import prepare_namespace
from tests.conftest import wait_for
from tests.operator.slowproxy import SlowProxy
from tests.operator.test_callbacks_stack import KEY, Receiver
from tests.operator.test_operator_stack import USE, Tasks, recording

HOLD = TIMEOUT + 5  # the answer arrives after the worker's client has given up on it


@pytest.fixture
def slow_api_namespace(stack, kube_api, crds):
    """A namespace of its own prefix, whose Pods a pod runner of its own runs, their API traffic
    through the slow proxy (the session's runner does not claim it)."""
    prefix = f"slow{uuid.uuid4().hex[:4]}-"
    name = f"{prefix}report"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name, "labels": {"capstan-test": "1"}}}, _request_timeout=30)
    prepare_namespace(kube_api, name)
    api = urllib.parse.urlsplit(kube_api.configuration.host)
    proxy = SlowProxy((api.hostname or "127.0.0.1", api.port or 443))
    runner = podrunner.PodRunner(kubeconfig=stack.kubeconfig, namespace_prefix=prefix).start()
    runner.host = f"https://127.0.0.1:{proxy.port}"  # workers' kubeconfigs point at the proxy
    try:
        yield name, proxy
    finally:
        runner.stop()
        proxy.close()
        with contextlib.suppress(Exception):
            core.delete_namespace(name, _request_timeout=30)


def test_a_slow_answer_to_the_workers_final_status_patch_still_ends_finished(stack, kube_api, slow_api_namespace,
                                                                             tmp_path):
    namespace, proxy = slow_api_namespace
    core, api = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    env = {**os.environ, **stack.env(), "CAPSTAN_METRICS_PORT": "0", "CAPSTAN_RECONCILE_INTERVAL": "1",
           "CAPSTAN_STOP_GRACE_SECONDS": "60", "PYTHONUNBUFFERED": "1",
           "CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE": "base"}
    operator = OperatorProcess(namespace, env, tmp_path / "operator.log")
    operator.start()
    try:
        secret = {"metadata": {"name": "storage-credentials", **USE},
                  "stringData": {"accessKey": "capstan", "secretKey": "capstan-secret"}}
        core.create_namespaced_secret(namespace, secret, _request_timeout=30)
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "webrecordings", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "WebRecording", "metadata": {"name": "page"},
            "spec": {"recordUrl": "https://example.com/lesson.html", "output": {"storage": {
                "endpoint": "127.0.0.1:9000", "bucket": "recordings", "secure": False,
                "credentialsSecretRef": {"name": "storage-credentials"}}}}}, _request_timeout=30)

        def status() -> dict:
            return api.get_namespaced_custom_object(GROUP, VERSION, namespace, "webrecordings", "page",
                                                    _request_timeout=30).get("status") or {}

        wait_for(lambda: status().get("phase") == "idle", 90, what="worker running (idle)")
        # In base mode a WebRecording's worker writes exactly one thing after the stop: its final
        # status (phase upload, stopTime). Every request it starts in the next seconds is answered late.
        proxy.slow_window(seconds=6, hold=HOLD)
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "webrecordings", "page",
                                           {"spec": {"stop": True}}, _request_timeout=30)
        st = wait_for(lambda: (s := status()).get("phase") in ("finished", "failed") and s, 120,
                      what="task ended")
        log = (podrunner.pod_dir(namespace, "page-wrec-a1") / "panorama.log").read_text()
        assert proxy.held >= 1
        assert "failed (try 1, retrying in" in log, log[-2000:]  # the final patch did time out once, and was retried
        assert st["phase"] == "finished", (st.get("result"), log[-2000:])
        assert st.get("stopTime") and "stopped: spec.stop is true" in st.get("message", "")
        pod = core.read_namespaced_pod("page-wrec-a1", namespace, _request_timeout=30)
        assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    finally:
        operator.stop()


def test_an_api_outage_at_the_end_loses_none_of_the_closing_events(stack, kube_api, slow_api_namespace, tmp_path):
    """The API server is away for the worker for 8 s from the stop on: its 302 and final status are
    retried through the outage (they were given up after 1.5 s), delivered, and the task finishes."""
    namespace, proxy = slow_api_namespace
    receiver = Receiver()
    core, api = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    env = {**os.environ, **stack.env(), "CAPSTAN_METRICS_PORT": "0", "CAPSTAN_RECONCILE_INTERVAL": "1",
           "CAPSTAN_STOP_GRACE_SECONDS": "60", "PYTHONUNBUFFERED": "1",
           "CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE": "base", "CAPSTAN_URL_ALLOW_CIDRS": "127.0.0.0/8"}
    operator = OperatorProcess(namespace, env, tmp_path / "operator.log")
    operator.start()
    try:
        tasks = Tasks(kube_api, namespace).create_credentials()
        core.create_namespaced_secret(namespace, {"metadata": {"name": "callback-key", **USE},
                                                  "stringData": {"key": KEY}}, _request_timeout=30)
        tasks.create(recording("outage", callback={"url": receiver.url,
                                                   "signingKeySecretRef": {"name": "callback-key", "key": "key"}}))
        wait_for(lambda: receiver.types() == [301], 60, what="301 delivered")
        proxy.outage(8)
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", "outage",
                                           {"spec": {"stop": True}}, _request_timeout=30)
        st = tasks.wait_phase("outage", "finished", timeout=90)
        wait_for(lambda: receiver.types() == [301, 302], 30, what="302 delivered after the outage")
        assert proxy.cut >= 1 and not receiver.bad
        log = (podrunner.pod_dir(namespace, "outage-crec-a1") / "recorder.log").read_text()
        assert "failed (try 1, retrying in" in log, log[-2000:]
        assert st["stopTime"] and "stopped: spec.stop is true" in st["message"]
        assert st["callbacks"]["delivered"] == 2
    finally:
        operator.stop()
        receiver.close()


def test_a_task_created_while_the_operators_writes_fail_is_accepted_after(stack, kube_api, slow_api_namespace,
                                                                           tmp_path):
    """The operator's API requests are cut for 6 s just as tasks are created (its watch, already
    streaming, still brings them): the pass that fails is retried with backoff, so the task is
    accepted and runs, although no later event of the task comes to trigger a pass (kopf drops a
    failed event handler's event). One task carries the finalizer from its creation (restored from
    a backup, applied as exported), the other none (the operator adds it at admission): both first
    passes run at once, fail, and are retried."""
    import yaml

    namespace, proxy = slow_api_namespace
    config = yaml.safe_load(open(stack.kubeconfig))  # noqa: SIM115 - read once
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    kubeconfig = tmp_path / "operator-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    env = {**os.environ, **stack.env(), "KUBECONFIG": str(kubeconfig), "CAPSTAN_METRICS_PORT": "0",
           "PYTHONUNBUFFERED": "1", "CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE": "base"}
    operator = OperatorProcess(namespace, env, tmp_path / "operator.log")
    operator.start()
    try:
        tasks = Tasks(kube_api, namespace).create_credentials()
        wait_for(lambda: "Initial authentication has finished" in operator.log(), 60, what="operator up")
        # its watches (3 kinds, Pods, the peering objects) are streaming before the outage
        wait_for(lambda: proxy.connections >= 5, 60, what="the operator's watches open")
        time.sleep(2)
        proxy.outage(6)
        late = recording("late")
        late["metadata"]["finalizers"] = [FINALIZER]
        tasks.create(late)
        tasks.create(recording("later"))
        st = tasks.wait_phase("late", "idle", timeout=90)
        assert st["taskId"] and proxy.cut >= 1
        assert "late: reconcile failed" in operator.log(), operator.log()[-3000:]
        st = tasks.wait_phase("later", "idle", timeout=90)
        assert st["taskId"]
        assert "later: reconcile failed" in operator.log(), operator.log()[-3000:]
        assert FINALIZER in tasks.get("later")["metadata"]["finalizers"]
    finally:
        operator.stop()
