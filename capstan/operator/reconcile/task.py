"""The reconcile sequencer: one pass over one task, called on every watch event of the task or
of its worker Pod, and by the safety-net timer.

A pass decides on the newest view it has, gathers what to write into one status patch, writes it
only on the exact resourceVersion it decided on (409: read again and decide again), and only then
acts (creates the Pod, posts Events). So a pass on a stale view writes nothing and does nothing.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import datetime as dt
import functools
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from capstan.api import KindInfo
from capstan.api.common import TASK_ID_ANNOTATION, TASK_ID_PATTERN, Phase
from capstan.operator import children, kube, metrics
from capstan.operator.admission import QueueEntry
from capstan.operator.phases import TERMINAL, Action, PodObservation, TaskObservation, decide
from capstan.operator.reconcile import admit, callbacks, finish, worker
from capstan.operator.reconcile.conditions import is_true, kstatus_conditions, set_condition
from capstan.operator.reconcile.state import KindState, OperatorState, TaskMemory, resource_version

log = logging.getLogger(__name__)
TERMINAL_VALUES = frozenset(p.value for p in TERMINAL)
MAX_PASSES = 4  # conflicts in a row before leaving it to the next event
# (namespace, task name, attempt) -> the Pod of that attempt as the Pod watch shows it (absent if none).
PodLookup = Callable[[str, str, int], PodObservation]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def queue_entry(body: dict[str, Any]) -> QueueEntry:
    """What the quota needs of one task."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    return QueueEntry(uid=meta["uid"], created=meta.get("creationTimestamp", ""), name=meta["name"],
                      admitted=admit.is_admitted(status), terminal=status.get("phase") in TERMINAL_VALUES)


class Stale(Exception):
    """The task changed since the view a pass decided on (HTTP 409 on a conditional write)."""


@dataclass
class Task:
    """One task object as last seen, and the writes that keep that view current."""

    info: KindInfo
    body: dict[str, Any]
    mem: TaskMemory

    @property
    def meta(self) -> dict[str, Any]:
        return self.body["metadata"]

    @property
    def namespace(self) -> str:
        return self.meta["namespace"]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def uid(self) -> str:
        return self.meta["uid"]

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.body.get("spec") or {})

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body.get("status") or {})

    def entry(self) -> QueueEntry:
        return queue_entry(self.body)

    def write(self, status: dict[str, Any], conditional: bool = True) -> None:
        """Patch the status (on exactly the version seen, unless `conditional` is False: for fields
        only the operator writes) and take the answer as the new view."""
        try:
            self.body = kube.patch_task_status(self.info, self.namespace, self.name, status,
                                               self.meta.get("resourceVersion") if conditional else None)
        except ApiException as exc:
            if exc.status == 409:
                raise Stale() from exc
            raise
        self.mem.written_rv = resource_version(self.body)
        self.mem.see(self.body)

    def refresh(self) -> bool:
        """Read the object again; False when it is gone."""
        body = kube.read_task(self.info, self.namespace, self.name)
        if body is None:
            return False
        self.body = body
        self.mem.see(body)
        return True


@dataclass
class Plan:
    """What one pass writes (one status patch) and does after the write succeeded."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)
    # Idempotent requests sent at the same time as the status write (they need not wait for it, and
    # a pass that turns out stale only repeats them); `after` runs once all of them ended.
    alongside: list[Callable[[], Any]] = field(default_factory=list)
    freed: bool = False  # the task gave up its place in the quota

    def set(self, view: dict[str, Any], key: str, value: Any) -> None:
        """Write `key` only if it differs from the view."""
        if view.get(key) != value:
            self.status[key] = value


def reconcile(state: OperatorState, info: KindInfo, body: dict[str, Any], pods: PodLookup,
              entries: Callable[[], Iterable[QueueEntry]]) -> bool:
    """Bring one task a step further; True when it freed a place in the quota.

    Single-flight per task: a handler thread that finds another one in this task's pass leaves
    its view and a request for one more pass, and returns at once. Blocking there instead let a
    burst of events park every kopf handler thread on a few tasks' locks while the others waited
    in the executor's queue (issue 11: create → Pod tens of seconds with the CPU idle)."""
    meta = body["metadata"]
    kind = state.kinds[info.plural]
    mem = kind.memory(meta["namespace"], meta["name"], meta["uid"])
    mem.see(body)
    return mem.passes.run(lambda: _passes(state, info, kind, mem, pods, entries))


def _passes(state: OperatorState, info: KindInfo, kind: KindState, mem: TaskMemory, pods: PodLookup,
            entries: Callable[[], Iterable[QueueEntry]]) -> bool:
    if mem.body is None or mem.is_stale(mem.body):
        return False  # the watch has not brought our own last write yet; its event will
    task = Task(info, mem.body, mem)
    for _ in range(MAX_PASSES):
        try:
            return _pass(state, kind, task, pods, entries)
        except Stale:
            if not task.refresh():
                return False
        except Exception:
            metrics.RECONCILE_ERRORS.labels(info.plural).inc()
            raise
    log.info("%s/%s changed under %d passes in a row; the next event decides", task.namespace, task.name,
             MAX_PASSES)
    return False


def _pass(state: OperatorState, kind: KindState, task: Task, pods: PodLookup,
          entries: Callable[[], Iterable[QueueEntry]]) -> bool:
    st = task.status
    meta, spec = task.meta, task.spec
    plan = Plan()
    if not st.get("taskId"):
        _accept(task, plan)
    stop_seen_now = bool(spec.get("stop")) and not st.get("cancelTime")
    stop_event_at = len(plan.events)  # where its Event goes, if it gets one (below)
    if stop_seen_now:
        plan.status["cancelTime"] = now()
    cb_state = callbacks.deliver_pending(state, task)
    st = task.status  # delivery may have written
    view = {**st, **plan.status}
    admitted = admit.step(state, kind, task, view, entries, plan)
    if _defer_first_write(task, view, plan, stop_seen_now):
        kind.backlog.add(task.uid, str(meta.get("creationTimestamp") or ""), _later(state, task, pods, entries))
        return False
    with kind.backlog.urgent() if admitted and not st.get("workerPod") else contextlib.nullcontext():
        return _finish_pass(state, kind, task, pods, plan, view, admitted, stop_seen_now, stop_event_at, cb_state)


# Set in the backlog's threads: their pass writes what the first one left to them.
_IN_BACKLOG: contextvars.ContextVar[bool] = contextvars.ContextVar("capstan_in_backlog", default=False)


def _defer_first_write(task: Task, view: dict[str, Any], plan: Plan, stop_seen_now: bool) -> bool:
    """A new task that only has to wait in the queue: its first write goes to the backlog
    (`state.Backlog`), unless this pass is the backlog's."""
    return (not _IN_BACKLOG.get() and not task.status.get("taskId") and not stop_seen_now
            and not task.meta.get("deletionTimestamp") and is_true(view, "Queued")
            and plan.status.get("phase") == Phase.normal.value)


def _later(state: OperatorState, task: Task, pods: PodLookup,
           entries: Callable[[], Iterable[QueueEntry]]) -> Callable[[], None]:
    context = contextvars.copy_context()  # kopf keeps its settings (Event posting) in context variables
    kind, mem = state.kinds[task.info.plural], task.mem

    def run() -> None:
        if kind.by_uid.get(mem.uid) is not mem or mem.body is None:
            return  # deleted meanwhile
        context.run(_as_backlog, lambda: reconcile(state, task.info, mem.body or task.body, pods, entries))
    return run


def _as_backlog(work: Callable[[], object]) -> None:
    token = _IN_BACKLOG.set(True)
    try:
        work()
    finally:
        _IN_BACKLOG.reset(token)


def _finish_pass(state: OperatorState, kind: KindState, task: Task, pods: PodLookup, plan: Plan,
                 view: dict[str, Any], admitted: bool, stop_seen_now: bool, stop_event_at: int,
                 cb_state: Any) -> bool:
    cfg = state.config
    st, meta, spec = task.status, task.meta, task.spec
    attempt = int(view.get("attempt") or 0)
    obs = TaskObservation(
        phase=view.get("phase"), attempt=attempt, failovers=int(view.get("failovers") or 0),
        admitted=admitted, stop_requested=bool(spec.get("stop")), deleting=bool(meta.get("deletionTimestamp")),
        pod=worker.current_pod(task, pods, attempt), max_failovers=cfg.max_failovers,
        pending_timeout=cfg.pending_timeout_seconds, callbacks_pending=callbacks.pending(st, cb_state))
    decision = decide(obs)
    if decision.delete_pending_pod:  # it never started a worker: nothing to save
        pod_name = children.pod_name(task.info, task.name, attempt)
        plan.after.append(lambda: kube.delete_pod(task.namespace, pod_name, grace_seconds=0))
    if decision.action in (Action.create_pod, Action.replace_pod):
        worker.step(state, task, view, decision, plan)
    elif decision.action in (Action.finish, Action.fail):
        finish.step(state, kind, task, view, decision, cb_state, plan)
    else:
        for key, value in decision.status.items():
            plan.set(view, key, value)
        if decision.event:
            plan.events.append(decision.event)
    if stop_seen_now and plan.status.get("phase") != Phase.canceled.value:
        # A stop that cancels the task in this very pass (it was queued, or its Pod never started) is
        # told by that Event (`Canceled`: stopped before the worker started), not by a second one beside it.
        plan.events.insert(stop_event_at, ("Normal", "StopRequested", "stop requested; worker finishing"))
    _readiness(task, plan)
    if plan.alongside:
        writes = [lambda: task.write(plan.status)] if plan.status else []
        worker.parallel(state, [*writes, *plan.alongside])
    elif plan.status:
        task.write(plan.status)
    for action in plan.after:
        action()
    for event in plan.events:
        state.post_event(task.body, *event)
    return plan.freed


def _admission_ended(state: OperatorState, info: KindInfo, kind: KindState, mem: TaskMemory, pods: PodLookup,
                     entries: Callable[[], Iterable[QueueEntry]], context: contextvars.Context,
                     done: concurrent.futures.Future) -> None:
    with kind.quota_lock:
        kind.admitting.discard(mem.uid)
    if done.exception() is not None:  # one task's failure must not keep the others queued
        log.error("admitting %s failed", (mem.body or {}).get("metadata", {}).get("name"),
                  exc_info=done.exception())
    body = mem.body or {}
    gave_up = (kind.by_uid.get(mem.uid) is not mem or (body.get("spec") or {}).get("stop")
               or (body.get("metadata") or {}).get("deletionTimestamp")
               or (body.get("status") or {}).get("phase") in TERMINAL_VALUES)
    if gave_up and not admit.is_admitted(body.get("status") or {}):
        # stopped, deleted or refused meanwhile: its place goes to the next. (One that is merely not
        # admitted yet is in another thread's pass, which was asked for one more round.)
        context.copy().run(admit_waiting, state, info, pods, entries)


def _readiness(task: Task, plan: Plan) -> None:
    """The generation this pass saw, and kstatus's conditions (Ready, Reconciling, Stalled) for the status
    it leaves: GitOps tools (Flux healthChecks, kstatus) wait on them. Written when they change only."""
    generation = task.meta.get("generation")
    plan.set(task.status, "observedGeneration", generation)
    view = {**task.status, **plan.status}
    for cond in kstatus_conditions(view, generation):
        set_condition(view, plan.status, cond)


def _accept(task: Task, plan: Plan) -> None:
    """A new task: its stable id, phase `normal`, the room for `kubectl get`."""
    room = task.spec.get("room") or {}
    chosen = str((task.meta.get("annotations") or {}).get(TASK_ID_ANNOTATION) or "")
    task_id = chosen if re.fullmatch(TASK_ID_PATTERN, chosen) else str(uuid.uuid4())
    plan.status.update({
        "taskId": task_id, "phase": Phase.normal.value, "createTime": now(),
        "room": str(room.get("roomId") or room.get("strRoomId") or ""), "attempt": 0, "failovers": 0})
    plan.events.append(("Normal", "Accepted", f"task {task_id} accepted"))
    plan.after.append(lambda: metrics.TASKS_ACCEPTED.labels(task.info.plural).inc())


def admit_waiting(state: OperatorState, info: KindInfo, pods: PodLookup,
                  entries: Callable[[], Iterable[QueueEntry]]) -> None:
    """After a place freed: start the tasks first in the queue, then refresh the places shown.

    Single-flight per kind: a caller finding another thread at it leaves a request for one more
    round and returns (the flag is read after the lock is released, so no request is lost)."""
    kind = state.kinds[info.plural]
    kind.admission.run(lambda: _admit_rounds(state, info, kind, pods, entries))


def _admit_rounds(state: OperatorState, info: KindInfo, kind: KindState, pods: PodLookup,
                  entries: Callable[[], Iterable[QueueEntry]]) -> None:
    """Start a pass for each task first in the queue that a free place is waiting for, and return.

    In parallel, and without waiting for them: each admission is a handful of API calls (status,
    identity, spool, Secret, Pod), so admitting the queue's head one by one made the last of 100 wait
    for 99, and waiting for a whole round made a place freed meanwhile wait for the round's slowest
    Pod (issue 11: admission after a freed place). A task whose pass is under way is not started
    again; one that ends without taking its place asks for another round. A task whose own pass
    runs now gets one more pass from that thread (single-flight). Each in a copy of this handler
    thread's context: kopf keeps its settings (which Event posting needs) in context variables."""
    with kind.quota_lock:
        view = kind.quota.view(list(entries()))
        free, waiting = kind.quota.free(view), kind.quota.waiting(view)
        candidates = [m for e in waiting[:free] if (m := kind.by_uid.get(e.uid)) and m.body is not None
                      and m.uid not in kind.admitting]
        kind.admitting.update(m.uid for m in candidates)
    context = contextvars.copy_context()
    for mem in candidates:
        started = state.admission_pool.submit(context.copy().run, reconcile, state, info, mem.body or {}, pods,
                                              entries)
        started.add_done_callback(functools.partial(_admission_ended, state, info, kind, mem, pods, entries,
                                                    context))
    # The places shown are rewritten in the backlog, after the admissions: after a burst of stops a
    # hundred queued tasks cross a milestone at once, and writing them here, one by one, held up the
    # next admission round for seconds (issue 11). Requests left meanwhile fold into one.
    kind.backlog.add("queue-places", "", functools.partial(admit.refresh_places, state, info, kind, entries))
