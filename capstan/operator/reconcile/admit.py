"""Admission: a task takes a place in the quota once, or waits in the queue.

The decision is made under the kind's quota lock and marked in memory before the status write,
so neither a second pass on a stale view nor another task can take the same place; the
`Admitted` condition, its Event and the first Pod follow from one write. A queued task shows its
place in `status.message`, rewritten only at `admission.place_worth_showing` milestones, not on
every move of the queue.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from capstan.api import KindInfo
from capstan.api.common import Phase
from capstan.operator import kube, metrics
from capstan.operator.admission import QueueEntry, place_worth_showing
from capstan.operator.reconcile.conditions import condition, is_true, set_condition
from capstan.operator.reconcile.state import KindState, OperatorState, resource_version

if TYPE_CHECKING:
    from capstan.operator.reconcile.task import Plan, Task

log = logging.getLogger(__name__)


def is_admitted(status: dict[str, Any]) -> bool:
    return is_true(status, "Admitted")


def queued_message(place: int, limit: int) -> str:
    # The place only shrinks, so the number shown stays true as an upper bound until rewritten.
    return f"waiting for a free place: {place} in queue (or fewer now), limit {limit} concurrent tasks"


def shown_place(message: str) -> int | None:
    head = "waiting for a free place: "
    if not message.startswith(head):
        return None
    number = message[len(head):].split(" ", 1)[0]
    return int(number) if number.isdigit() else None


def step(state: OperatorState, kind: KindState, task: Task, view: dict[str, Any],
         entries: Callable[[], Iterable[QueueEntry]], plan: Plan) -> bool:
    """Whether the task holds a place; admits it when one is free, else queues (or refuses) it."""
    cfg = state.config
    if is_admitted(view):
        return True
    if view.get("phase") in (Phase.finished.value, Phase.failed.value, Phase.canceled.value):
        return False
    if task.spec.get("stop") or task.meta.get("deletionTimestamp"):
        return False  # stopped while queued: canceled without taking a place
    generation = task.meta.get("generation")
    with kind.quota_lock:
        place = kind.quota.place(list(entries()), task.entry())
        if place == 0:
            kind.quota.admit(task.uid)
    if place == 0:
        log.info("%s/%s: admitted", task.namespace, task.name)
        set_condition(view, plan.status, condition("Queued", False, "Admitted", "a place is free", generation))
        set_condition(view, plan.status, condition("Admitted", True, "QuotaAvailable",
                                                   f"admitted under the limit of {cfg.max_tasks} tasks", generation))
        plan.events.append(("Normal", "Admitted", "admitted; starting the worker"))
        plan.after.append(lambda: metrics.QUEUE_WAIT.labels(task.info.plural).observe(_age(task.meta)))
        return True
    if cfg.queue_policy == "refuse":
        message = f"the limit of {cfg.max_tasks} concurrent tasks is reached (RestrictedConcurrency)"
        plan.status["phase"] = Phase.failed.value
        plan.status["result"] = {"errorCode": "FailedOperation.RestrictedConcurrency", "errorMessage": message}
        plan.events.append(("Warning", "Refused", message))
        plan.after.append(lambda: metrics.ADMISSIONS_REFUSED.labels(task.info.plural).inc())
        return False
    if not is_true(view, "Queued"):
        set_condition(view, plan.status, condition(
            "Queued", True, "QuotaExceeded", f"waiting for a free place under the limit of {cfg.max_tasks} "
            "concurrent tasks; status.message shows the place", generation))
        plan.status["message"] = queued_message(place, cfg.max_tasks)
        plan.after.append(lambda: setattr(task.mem, "shown_place", place))
    return False


def _age(meta: dict[str, Any]) -> float:
    """Seconds since the object was created (its time in the queue when admitted now)."""
    created = meta.get("creationTimestamp")
    if not created:
        return 0.0
    since = dt.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    return max(0.0, (dt.datetime.now(dt.UTC) - since).total_seconds())


def refresh_places(state: OperatorState, info: KindInfo, kind: KindState,
                   entries: Callable[[], Iterable[QueueEntry]]) -> None:
    """Rewrite the shown place of the queued tasks that reached a milestone (see the module doc)."""
    with kind.quota_lock:
        view = kind.quota.view(list(entries()))
        free, waiting = kind.quota.free(view), kind.quota.waiting(view)
    for index, entry in enumerate(waiting[free:]):
        place = index + 1
        mem = kind.by_uid.get(entry.uid)
        if mem is None or mem.body is None or not (mem.body.get("status") or {}).get("taskId"):
            continue  # not accepted yet: its first write (the backlog's) shows its place
        if mem.shown_place is None:  # after a restart: what the status says
            mem.shown_place = shown_place((mem.body.get("status") or {}).get("message") or "")
        if not place_worth_showing(mem.shown_place, place):
            continue
        if not mem.passes.lock.acquire(blocking=False):
            continue  # in a pass now; the next refresh shows its place
        try:
            meta = mem.body["metadata"]
            try:  # only the operator writes a queued task's message: no precondition needed
                mem.body = kube.patch_task_status(info, meta["namespace"], meta["name"],
                                                  {"message": queued_message(place, state.config.max_tasks)})
            except ApiException as exc:
                log.warning("queue place of %s not written: %s", meta["name"], exc.reason)
                continue
            mem.written_rv = resource_version(mem.body)
            mem.shown_place = place
        finally:
            mem.passes.lock.release()
