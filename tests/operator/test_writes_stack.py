"""What the operator writes to a task object (issue 11: API writes per task), seen from a watch of
every version of the objects on the real API server: the finalizer is put on a task when it is
admitted, before its worker runs, and never on a task that only waited in the queue; kopf keeps no
last-handled configuration (an object PATCH at creation and one at every spec edit), and spec
edits are still seen (`spec.stop` ends a queued and a running task)."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import watch as kwatch

from capstan.api import GROUP, VERSION
from capstan.operator.config import FINALIZER
from tests.conftest import wait_for
from tests.operator.test_operator_stack import recording, tasks  # noqa: F401  (the fixture)

DIFFBASE = "capstan.dev/last-handled-configuration"


class Versions:
    """Every version of every task in the namespace, in the order the API server wrote them."""

    def __init__(self, tasks) -> None:  # noqa: F811
        self.tasks, self.seen, self.stop = tasks, [], threading.Event()
        self.errors: list[Exception] = []
        listed = tasks.api.list_namespaced_custom_object(GROUP, VERSION, tasks.ns, "cloudrecordings",
                                                         _request_timeout=30)
        self.rv = listed["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                for event in kwatch.Watch().stream(self.tasks.api.list_namespaced_custom_object, GROUP, VERSION,
                                                   self.tasks.ns, "cloudrecordings", resource_version=self.rv,
                                                   timeout_seconds=5, _request_timeout=30):
                    obj = event["object"]
                    self.rv = obj["metadata"]["resourceVersion"]
                    self.seen.append((event["type"], obj))
            except Exception as exc:  # noqa: BLE001 - resumed from the last version seen: nothing is lost
                if "410" in str(exc):  # ... unless that version is too old: then the test cannot tell
                    self.errors.append(exc)
                    return
                time.sleep(0.5)

    def of(self, name: str) -> list[dict[str, Any]]:
        return [obj for _, obj in list(self.seen) if obj["metadata"]["name"] == name]


def _metadata(obj: dict[str, Any]) -> tuple:
    meta = obj["metadata"]
    return (tuple(meta.get("finalizers") or []), tuple(sorted((meta.get("annotations") or {}).items())),
            meta.get("deletionTimestamp"))


def test_the_finalizer_only_on_admitted_tasks_and_kopf_keeps_no_diff_base(operator_factory, tasks):  # noqa: F811
    operator_factory(CAPSTAN_MAX_TASKS="1")
    versions = Versions(tasks)
    try:
        tasks.create(recording("runs"))
        tasks.wait_phase("runs", "idle", timeout=90)
        tasks.create(recording("waits"))
        wait_for(lambda: "waiting for a free place" in (tasks.status("waits").get("message") or ""), 60,
                 what="the second task queued")
        for name, end in (("waits", "canceled"), ("runs", "finished")):
            tasks.patch_spec(name, {"stop": True})  # a spec edit, seen without kopf's diff
            tasks.wait_phase(name, end, timeout=90)
        wait_for(lambda: all(v.get("status", {}).get("phase") in ("canceled", "finished")
                             for v in (versions.of("runs")[-1:] + versions.of("waits")[-1:])), 30,
                 what="the watch at the end")
    finally:
        versions.stop.set()

    for name, finalizer_writes in (("runs", 1), ("waits", 0)):
        seen = versions.of(name)
        assert seen and not seen[0].get("status"), seen[:1]
        # No diff-base annotation at creation nor at the stop; the metadata changed only by the finalizer.
        assert not any(DIFFBASE in (v["metadata"].get("annotations") or {}) for v in seen), name
        changes = sum(1 for a, b in zip(seen, seen[1:], strict=False) if _metadata(a) != _metadata(b))
        assert changes == finalizer_writes, [(v["metadata"].get("finalizers"), v["metadata"].get("annotations"))
                                             for v in seen]
        assert seen[-1]["spec"]["stop"] is True
    runs = versions.of("runs")
    admitted = next(i for i, v in enumerate(runs) if any(c.get("type") == "Admitted" and c.get("status") == "True"
                                                         for c in (v.get("status") or {}).get("conditions", [])))
    assert FINALIZER not in runs[admitted - 1]["metadata"].get("finalizers", []), runs[admitted - 1]["metadata"]
    worker_first = next(i for i, v in enumerate(runs) if (v.get("status") or {}).get("phase") == "idle")
    # the finalizer holds the task before its worker reports anything (the Pod is created after it)
    assert all(FINALIZER in v["metadata"].get("finalizers", []) for v in runs[worker_first:]), name
    assert not any(FINALIZER in v["metadata"].get("finalizers", []) for v in versions.of("waits"))

    assert not versions.errors, versions.errors  # the watch saw every version (no 410 Gone)
    wait_for(lambda: "Finished" in [r for r, _ in tasks.events("runs")], 30, what="the Finished Event")
    waits = [r for r, _ in tasks.events("waits")]  # queued, then stopped: its stop is told by Canceled
    assert waits.count("Accepted") == 1 and waits.count("Canceled") == 1, waits
    assert "StopRequested" not in waits and "PhaseChanged" not in waits, waits
    runs = tasks.events("runs")
    reasons = [r for r, _ in runs]
    for reason in ("Accepted", "Admitted", "WorkerCreated", "StopRequested", "Finished"):
        assert reasons.count(reason) == 1, reasons
    changes = [m.split(":")[0] for r, m in runs if r == "PhaseChanged"]
    assert "normal -> idle" in changes and not any(c.endswith("-> finished") for c in changes), changes


def test_a_queued_task_is_deleted_at_once_and_never_started(operator_factory, tasks):  # noqa: F811
    operator_factory(CAPSTAN_MAX_TASKS="1")
    tasks.create(recording("holds"))
    tasks.wait_phase("holds", "idle", timeout=90)
    tasks.create(recording("leaves"))
    wait_for(lambda: "waiting for a free place" in (tasks.status("leaves").get("message") or ""), 60,
             what="the second task queued")
    assert not tasks.get("leaves")["metadata"].get("finalizers")
    tasks.delete("leaves")
    wait_for(lambda: tasks.get("leaves") is None, 15, what="the queued task gone (no finalizer holds it)")
    tasks.patch_spec("holds", {"stop": True})
    tasks.wait_phase("holds", "finished", timeout=90)
    time.sleep(2)  # the freed place goes to nobody: the deleted task is not started
    assert tasks.pod("leaves-crec-a1") is None
