"""The chart's RBAC is exactly what the operator does: the operator runs as the chart's
ServiceAccount (not system:masters) and a task starts, records, stops and is deleted, a queued
task is deleted, and the API server refuses it nothing."""

from __future__ import annotations

import json
import os
import time

import pytest
from kubernetes.client.exceptions import ApiException

from capstan.media import naming
from tests.conftest import wait_for
from tests.operator.chart_rbac import ChartOperator, ChartRbac, forbidden_lines
from tests.operator.test_operator_stack import Tasks, recording

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


@pytest.fixture
def chart_operator(stack, crds, pod_runner, kube_api, namespace, tmp_path):
    """start(watch_namespaces=bool, **env): the chart's RBAC applied, the operator run with its token."""
    started: list[tuple[ChartRbac, ChartOperator]] = []

    def start(namespaced: bool = True, **settings: str) -> tuple[ChartRbac, ChartOperator]:
        rbac = ChartRbac(kube_api, stack, [namespace] if namespaced else [], tmp_path).apply()
        env = {**os.environ, **stack.env(), "KUBECONFIG": rbac.kubeconfig(), "CAPSTAN_METRICS_PORT": "0",
               "CAPSTAN_RECONCILE_INTERVAL": "1", "CAPSTAN_STOP_GRACE_SECONDS": "30", "PYTHONUNBUFFERED": "1",
               "CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE": "base", "CAPSTAN_URL_ALLOW_CIDRS": "127.0.0.0/8",
               "POD_ID": rbac.release, **settings}
        op = ChartOperator(namespace, env, tmp_path / f"operator-{rbac.release}.log", peering=namespaced)
        op.start()
        started.append((rbac, op))
        return rbac, op

    yield start
    for rbac, op in started:
        op.stop()
        rbac.remove()


def gone(tasks: Tasks, name: str) -> bool:
    return tasks.get(name) is None


def children_of(tasks: Tasks, name: str) -> list[str]:
    """The task's children that still exist (Pods, ServiceAccount, Role, RoleBinding, token Secret)."""
    left = [p.metadata.name for p in tasks.core.list_namespaced_pod(
        tasks.ns, label_selector=f"capstan.dev/task={name}", _request_timeout=30).items]
    for read, child in ((tasks.core.read_namespaced_service_account, f"{name}-crec-worker"),
                        (tasks.rbac.read_namespaced_role, f"{name}-crec-worker"),
                        (tasks.rbac.read_namespaced_role_binding, f"{name}-crec-worker"),
                        (tasks.core.read_namespaced_secret, f"{name}-crec-token")):
        try:
            read(child, tasks.ns, _request_timeout=30)
            left.append(child)
        except ApiException as exc:
            if exc.status != 404:
                raise
    return left


@pytest.mark.parametrize("namespaced", [True, False], ids=["watchNamespaces-Roles", "cluster-wide-ClusterRole"])
def test_operator_runs_tasks_as_the_charts_service_account(chart_operator, tasks, namespace, namespaced):
    rbac, op = chart_operator(namespaced=namespaced, CAPSTAN_MAX_TASKS="1")
    if namespaced:  # the operator's rights in the watched namespace come from a Role there, nothing cluster-wide
        (role,) = rbac.of_kind("Role")
        assert role["metadata"]["namespace"] == namespace
        (cluster_role,) = rbac.of_kind("ClusterRole")
        assert {r["resources"][0] for r in cluster_role["rules"]} == {"customresourcedefinitions", "namespaces"}
    for doc in rbac.of_kind("Role") + rbac.of_kind("ClusterRole"):
        for rule in doc["rules"]:
            if "secrets" in rule["resources"]:
                assert sorted(rule["verbs"]) == ["create", "delete", "get", "update"]

    # start and "record" (base mode): the LiveKit backend makes the operator mint a token Secret
    tasks.create(recording("alpha"))
    st = tasks.wait_phase("alpha", "idle", timeout=90)
    assert st["attempt"] == 1
    token = tasks.core.read_namespaced_secret("alpha-crec-token", namespace, _request_timeout=30)
    assert token.metadata.owner_references[0].name == "alpha"

    # a second task waits in the queue, and can be deleted while it waits
    tasks.create(recording("beta"))
    wait_for(lambda: any(c["type"] == "Queued" and c["status"] == "True"
                         for c in tasks.status("beta").get("conditions", [])), 60, what="beta queued")
    tasks.delete("beta")
    wait_for(lambda: gone(tasks, "beta"), 60, what="queued task deleted")

    # stop, finish, delete: every child goes
    tasks.patch_spec("alpha", {"stop": True})
    assert tasks.wait_phase("alpha", "finished", timeout=90)["phase"] == "finished"
    tasks.delete("alpha")
    wait_for(lambda: gone(tasks, "alpha"), 60, what="finished task deleted")
    assert children_of(tasks, "alpha") == []

    refused = forbidden_lines(op.log())
    if not namespaced:
        # The test's operator watches only its namespace (the API server is shared), so kopf lists
        # namespaces, which the chart's cluster-wide operator (no --namespace) never does.
        refused = [line for line in refused if '"namespaces" in API group "" at the cluster scope' not in line]
    assert refused == [], "\n".join(refused[:5])


def test_the_worker_token_cannot_update_or_read_status_only_patch(chart_operator, tasks, namespace):
    """The worker Role the operator grants is patch-only on status: no update of the whole object."""
    from capstan.api import GROUP, VERSION
    from tests.operator.test_operator_stack import worker_api

    chart_operator()
    tasks.create(recording("gamma"))
    tasks.wait_phase("gamma", "idle", timeout=90)
    api = worker_api(namespace, "gamma-crec-a1")
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "cloudrecordings", "gamma",
                                              {"status": {"message": "patched by the worker"}}, _request_timeout=30)
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", "gamma", _request_timeout=30)
    for call in (lambda: api.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, "cloudrecordings",
                                                                     "gamma", obj, _request_timeout=30),
                 lambda: api.replace_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings",
                                                              "gamma", obj, _request_timeout=30)):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 403
    tasks.patch_spec("gamma", {"stop": True})
    tasks.wait_phase("gamma", "finished", timeout=90)


@pytest.fixture
def tasks(kube_api, namespace):
    return Tasks(kube_api, namespace).create_credentials()


RESTRICTED = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                      "pod-security.kubernetes.io/enforce-version": "latest"}}}


def test_worker_pods_pass_the_restricted_pod_security_level(operator, tasks, namespace):
    """The API server's PodSecurity admission refuses an unhardened Pod here; the worker's runs."""
    tasks.core.patch_namespace(namespace, RESTRICTED, _request_timeout=30)
    plain = {"metadata": {"name": "plain"}, "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"]}]}}
    with pytest.raises(ApiException) as err:
        tasks.core.create_namespaced_pod(namespace, plain, dry_run="All", _request_timeout=30)
    message = json.loads(err.value.body)["message"]
    assert err.value.status == 403 and 'violates PodSecurity "restricted:latest"' in message
    tasks.create(recording("strict"))
    st = tasks.wait_phase("strict", "idle", timeout=90)
    assert st["attempt"] == 1 and st["failovers"] == 0
    pod = tasks.pod("strict-crec-a1")
    assert pod.status.phase == "Running" and pod.spec.security_context.run_as_non_root
    tasks.patch_spec("strict", {"stop": True})
    tasks.wait_phase("strict", "finished", timeout=90)


def test_a_real_recording_as_the_charts_service_account_in_a_restricted_namespace(
        chart_operator, kube_api, namespace, room, room_server, s3, bucket, stack):
    """The real recorder on a real room: started, recorded, stopped and deleted by an operator with
    only the chart's rights, its Pod admitted at the `restricted` level."""
    from tests.recorder.test_recording import SDKAPPID, objects
    from tests.recorder.test_recording import recording as media_recording

    tasks = Tasks(kube_api, namespace)
    tasks.core.patch_namespace(namespace, RESTRICTED, _request_timeout=30)
    use = {"capstan.dev/use": "true"}
    for name, data in (("storage", {"accessKey": stack.s3_access_key, "secretKey": stack.s3_secret_key}),
                       ("room-credentials", room_server.secret_data())):
        tasks.core.create_namespaced_secret(namespace, {"metadata": {"name": name, "labels": use},
                                                        "stringData": data}, _request_timeout=30)
    _, op = chart_operator(CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE="media", **room_server.worker_env())
    room.start("alice")
    tasks.create(media_recording("live", room, bucket))
    task_id = tasks.wait_phase("live", "recording", timeout=90)["taskId"]
    time.sleep(5)
    tasks.patch_spec("live", {"stop": True})
    st = tasks.wait_phase("live", "finished", timeout=180)
    stored = objects(s3, bucket, task_id)
    for name in (naming.single_playlist_name(SDKAPPID, room.name, "alice", "main", "video"),
                 naming.single_playlist_name(SDKAPPID, room.name, "alice", "main", "audio"),
                 naming.single_mp4_name(SDKAPPID, room.name, "alice", "main", 1)):
        assert name in stored, f"{name} missing; stored: {sorted(stored)}"
    assert any(f["fileName"].endswith(".mp4") for f in st["files"])
    tasks.delete("live")
    wait_for(lambda: gone(tasks, "live"), 60, what="recorded task deleted")
    assert children_of(tasks, "live") == []
    assert forbidden_lines(op.log()) == [], op.log()[-3000:]


@pytest.fixture
def room(room_server):
    """A room on each of the stack's room servers (LiveKit, Janus), with synthetic anchors."""
    from devstack.harness import BackgroundLoop
    from tests.recorder.test_recording import Room

    loop = BackgroundLoop()
    r = Room(room_server, loop)
    yield r
    r.close()
    loop.close()
