"""Issue 11's status-lying race, on the real API server: a reconcile pass deciding on the view the
watch delivered *before* the operator's own write (kopf's timer firing again before the watch has
brought the last patch). Before the fix such a pass admitted the task a second time (a second
`Admitted` Event, the child creates re-sent, the token Secret replaced) and wrote `phase: normal`
over the worker's `idle`. The passes here run in this process against the real API server, with a
real worker (base mode) run by the pod runner, and are fed exactly that stale view."""

from __future__ import annotations

import datetime as dt
import threading

from kubernetes import client

from capstan.api import GROUP, KINDS, VERSION
from capstan.operator import kube
from capstan.operator.config import OperatorConfig
from capstan.operator.phases import PodObservation
from capstan.operator.reconcile import task as reconcile_task
from capstan.operator.reconcile import worker
from capstan.operator.reconcile.state import OperatorState
from tests.conftest import wait_for
from tests.operator.test_operator_stack import Tasks, recording

INFO = next(i for i in KINDS if i.plural == "cloudrecordings")


def operator_state(kube_api, namespace: str) -> tuple[OperatorState, list[tuple[str, str]]]:
    """A fresh operator memory whose Events are real Kubernetes Events (and are also counted)."""
    core = client.CoreV1Api(kube_api)
    posted: list[tuple[str, str]] = []

    def post(body: dict, type_: str, reason: str, message: str) -> None:
        posted.append((body["metadata"]["name"], reason))
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        core.create_namespaced_event(namespace, {
            "metadata": {"generateName": f"{body['metadata']['name']}."},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CloudRecording", "namespace": namespace,
                               "name": body["metadata"]["name"], "uid": body["metadata"]["uid"]},
            "type": type_, "reason": reason, "message": message, "firstTimestamp": stamp, "lastTimestamp": stamp,
            "source": {"component": "capstan-test"}}, _request_timeout=30)

    config = OperatorConfig(worker_env={"CAPSTAN_WORKER_MODE": "base"})
    return OperatorState.create(config, post), posted


def pods(namespace: str, name: str, attempt: int) -> PodObservation:
    """What the operator's Pod index would hold: the Pod as the API server has it now."""
    from capstan.operator import children

    pod = kube.read_pod(namespace, children.pod_name(INFO, name, attempt))
    return worker.observe_pod(pod) if pod else PodObservation.absent()


def entries_of(tasks: Tasks):
    def entries():
        items = tasks.api.list_namespaced_custom_object(GROUP, VERSION, tasks.ns, "cloudrecordings",
                                                        _request_timeout=30)["items"]
        return [reconcile_task.queue_entry(o) for o in items]
    return entries


def test_a_pass_on_a_view_older_than_the_operators_own_write_admits_nobody_twice(
        kube_api, crds, pod_runner, namespace):
    tasks = Tasks(kube_api, namespace).create_credentials()
    stale = tasks.create(recording("racer"))  # the view a lagging watch still delivers later
    state, posted = operator_state(kube_api, namespace)
    entries = entries_of(tasks)

    reconcile_task.reconcile(state, INFO, stale, pods, entries)  # accept + admit + attempt 1, one write
    st = tasks.wait_phase("racer", "idle", timeout=90)  # the real worker reported
    pod = tasks.pod("racer-crec-a1")
    token = tasks.core.read_namespaced_secret("racer-crec-token", namespace, _request_timeout=30)
    assert st["attempt"] == 1 and st["workerPod"] == "racer-crec-a1"

    # The race: passes deciding on the stale view, the same operator (its memory) and, as after a
    # restart, a fresh one (no memory: the conditional write is refused, the pass reads again).
    fresh_state, fresh_posted = operator_state(kube_api, namespace)
    racers = [threading.Thread(target=reconcile_task.reconcile, args=(s, INFO, stale, pods, entries))
              for s in (state, state, fresh_state, fresh_state)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(60)

    after = tasks.status("racer")
    assert after["phase"] == "idle", after["phase"]  # not `normal` over the worker's report
    assert after["taskId"] == st["taskId"] and after["attempt"] == 1
    admitted = [c for c in after["conditions"] if c["type"] == "Admitted"]
    assert len(admitted) == 1 and admitted[0]["status"] == "True"
    reasons = [r for r, _ in tasks.events("racer")]
    assert reasons.count("Accepted") == 1 and reasons.count("Admitted") == 1, reasons
    assert reasons.count("WorkerCreated") == 1, reasons
    assert posted.count(("racer", "Admitted")) == 1 and not fresh_posted, (posted, fresh_posted)
    # The children were not created again: the same Pod, the token Secret not replaced.
    again = tasks.pod("racer-crec-a1")
    assert again.metadata.uid == pod.metadata.uid
    assert tasks.core.read_namespaced_secret("racer-crec-token", namespace, _request_timeout=30
                                             ).metadata.resource_version == token.metadata.resource_version
    assert [p.metadata.name for p in tasks.core.list_namespaced_pod(
        namespace, label_selector="capstan.dev/task=racer", _request_timeout=30).items] == ["racer-crec-a1"]

    # The stop still ends it: the worker exits 0 and a pass (Pod succeeded) finishes the task.
    tasks.patch_spec("racer", {"stop": True})
    wait_for(lambda: (p := tasks.pod("racer-crec-a1")) and p.status.phase == "Succeeded", 60, what="worker exit")
    reconcile_task.reconcile(state, INFO, tasks.get("racer"), pods, entries)
    assert tasks.status("racer")["phase"] == "finished"
