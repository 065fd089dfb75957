"""The end of a task: its final phase, the place it frees, and the clean-up before deletion."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from capstan.api.common import CallbackStatus, Phase
from capstan.operator import callbacks as delivery
from capstan.operator import children, kube, metrics
from capstan.operator import closing as close
from capstan.operator.phases import Decision, PodState
from capstan.operator.reconcile import callbacks
from capstan.operator.reconcile.conditions import condition, set_condition

if TYPE_CHECKING:
    from capstan.api import KindInfo
    from capstan.operator.reconcile.state import KindState, OperatorState
    from capstan.operator.reconcile.task import Plan, PodLookup, Task

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def step(state: OperatorState, kind: KindState, task: Task, view: dict[str, Any], decision: Decision,
         cb_state: CallbackStatus, plan: Plan) -> None:
    """Finish or fail: the phase the phase machine chose, with what is known about callbacks."""
    for key, value in decision.status.items():
        plan.set(view, key, value)
    phase = str(decision.status.get("phase", ""))
    if phase == Phase.finished.value and cb_state.failed:
        plan.status["result"] = {"errorCode": "CallbackFailed",
                                 "errorMessage": delivery.failed_message(cb_state.last_error or "")}
    if decision.event:
        plan.events.append(decision.event)
    ended(state, task, plan, phase, (decision.event or ("", "", "done"))[2])
    if phase == Phase.finished.value:
        # the last worker exited 0 only with its spool stored; a failed task keeps its spool until deleted.
        # Off the pass: the next task's admission does not wait for this DELETE (deletion removes
        # the children again, so a failed one leaves nothing behind for long).
        plan.after.append(lambda: state.children_pool.submit(kube.delete_spool, task.info, task.namespace,
                                                             task.name).add_done_callback(_logged))


def _logged(done: concurrent.futures.Future) -> None:
    if done.exception() is not None:
        log.warning("spool not deleted: %s", done.exception())


def _seconds_since(stamp: Any) -> float:
    if not stamp:
        return 0.0
    return max(0.0, (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
                     ).total_seconds())


def ended(state: OperatorState, task: Task, plan: Plan, phase: str, message: str) -> None:
    """The common end of every final phase; the task's place goes to the next in the queue."""
    view = {**task.status, **plan.status}
    plan.status["finishTime"] = _now()
    if not view.get("stopTime"):
        plan.status["stopTime"] = plan.status["finishTime"]
    set_condition(view, plan.status, condition("Finished", True, phase.capitalize(), message,
                                               task.meta.get("generation")))
    if phase == Phase.failed.value and task.info.plural == "cloudrecordings":
        # the dead worker's closing events (302, 305, 310, the result) with failure statuses
        closing = close.closing_events(task.spec, view, str((view.get("result") or {}).get("errorMessage") or message))
        if closing:
            plan.status["events"] = list(view.get("events") or []) + closing
    plan.freed = True

    def release() -> None:
        log.info("%s/%s: %s; its place is free", task.namespace, task.name, phase)
        kind = state.kinds[task.info.plural]
        with kind.quota_lock:
            kind.quota.end(task.uid)
        metrics.TASKS_ENDED.labels(task.info.plural, phase).inc()
        metrics.TASK_DURATION.labels(task.info.plural, phase).observe(_seconds_since(view.get("createTime")))

    plan.after.append(release)


def finalize(state: OperatorState, info: KindInfo, body: dict[str, Any], pods: PodLookup) -> str | None:
    """Before the resource goes: None once its worker has stopped and its callbacks are out (then
    the children are removed), else what is still awaited."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    ns, name = meta["namespace"], meta["name"]
    attempt = int(status.get("attempt") or 0)
    pod = pods(ns, name, attempt) if attempt >= 1 else None
    if pod is not None and pod.state in (PodState.pending, PodState.running):
        deleted_at = dt.datetime.fromisoformat(meta["deletionTimestamp"].replace("Z", "+00:00"))
        waited = (dt.datetime.now(dt.UTC) - deleted_at).total_seconds()
        # A running worker stores its last files first (DESIGN §6); only past the documented bound
        # (CAPSTAN_DELETE_UPLOAD_BOUND_SECONDS) is it stopped with what still waits in its spool.
        if pod.state is PodState.pending or waited > state.config.delete_upload_bound_seconds:
            kube.delete_pod(ns, children.pod_name(info, name, attempt))
        return "waiting for the worker to stop and save its files"
    # The worker's last events (302, 305, the result) go out before the resource does; the reconcile
    # delivers them, the give-up rule bounds the wait. A fresh read: the watch may lag the worker.
    kind = state.kinds[info.plural]
    fresh = kube.read_task(info, ns, name)
    mem = kind.find(ns, name)
    if fresh is not None and callbacks.pending(dict(fresh.get("status") or {}), mem.callbacks if mem else None):
        return "delivering the last callbacks"
    kube.delete_children(info, ns, name)
    kind.forget(ns, name)
    return None
