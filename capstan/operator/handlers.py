"""kopf handlers: thin glue between watch events and `reconcile.task.reconcile`.

The operator reacts to events: every watch event of a task, and of a worker Pod it owns (a Pod
index and a Pod event handler, filtered by the kind label), runs one reconcile pass of that task.
Timers are only a slow safety net, plus a fast one while callbacks wait for their next try.
`finalize` lets the worker stop gracefully before the resource goes.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any

import kopf

from capstan.api import GROUP, KINDS, VERSION, KindInfo
from capstan.operator import children, kube, metrics
from capstan.operator.admission import QueueEntry
from capstan.operator.config import FINALIZER, LABEL_ATTEMPT, LABEL_KIND, PREFIX, OperatorConfig
from capstan.operator.kopf_persistence import UnchangedDiffBase
from capstan.operator.phases import PodObservation
from capstan.operator.reconcile import admit, finish, retry, task, worker
from capstan.operator.reconcile.state import KindState, OperatorState

CONFIG = OperatorConfig.from_env()
log = logging.getLogger(__name__)
CALLBACK_RETRY_INTERVAL = 1.0  # how soon a due callback retry is noticed (backoff starts at 1 s)


def _post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    try:
        kopf.event(body, type=type_, reason=reason, message=message)  # type: ignore[arg-type]  # a dict body is enough
    except RuntimeError as exc:  # the operator is stopping: kopf's loop closed under a reconcile thread
        log.info("event %s not posted: %s", reason, exc)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    # No change handlers: kopf keeps no last-handled configuration (kopf_persistence).
    settings.persistence.diffbase_storage = UnchangedDiffBase()
    # kopf's own "Handler ... succeeded" messages are not Events; every Capstan Event (kopf.event) stays.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 64  # threads mostly wait for the API server (kube.CONNECTION_POOL_SIZE)
    # The token SDK (livekit-api) and the client's API modules are imported now, not by the first
    # admission: those imports held the import lock, and with it every handler thread, for over a
    # second at the start of a burst (issue 11).
    importlib.import_module("capstan.rooms.tokens")
    kube.warm()
    memo.capstan = OperatorState.create(CONFIG, _post_event)
    metrics.track(memo.capstan)
    metrics.serve()


def _entries(kind: KindState) -> Iterable[QueueEntry]:
    return list(kind.queue.values())  # dict.copy-like: atomic under the GIL while the loop adds to it


def register(info: KindInfo) -> None:
    """Attach the handlers for one kind."""
    plural = info.plural
    queue_id, pods_id = f"{plural}_queue", f"{plural}_pods"
    pod_filter = {LABEL_KIND: plural}

    def lookup(kwargs: dict[str, Any]) -> task.PodLookup:
        index: kopf.Index = kwargs[pods_id]

        def pod(namespace: str, name: str, attempt: int) -> PodObservation:
            for summary in index.get((namespace, name), ()):
                seen = worker.observe_pod(summary)
                if seen.attempt == attempt:
                    return seen
            return PodObservation.absent()
        return pod

    def run(state: OperatorState, body: dict[str, Any], kwargs: dict[str, Any]) -> None:
        pods, entries = lookup(kwargs), (lambda: _entries(state.kinds[plural]))
        try:
            freed = task.reconcile(state, info, body, pods, entries)
        except Exception as exc:  # noqa: BLE001 - kopf drops a failed event handler's event for good
            retry.later(state.kinds[plural], body, exc, lambda newest: run(state, newest, kwargs))
            return
        retry.succeeded(state.kinds[plural], body)
        if freed or _has_free_place(state, plural, entries):
            task.admit_waiting(state, info, pods, entries)

    # Indexes: kopf runs no handler before every index is filled, so the quota and the Pod
    # lookup are complete from the first decision on (an operator restart admits nobody twice).
    # Async (on kopf's event loop): they only copy fields, and each event of a burst would otherwise
    # wait for a handler thread behind the reconcile passes.
    # The queue is also kept as a plain dict by uid (KindState.queue): reading kopf's index took a
    # tenth of the operator's CPU in a burst, read twice on every event of every task (issue 11).
    @kopf.index(GROUP, VERSION, plural, id=queue_id)
    async def queue_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict:
        entry = task.queue_entry(dict(body))
        memo.capstan.kinds[plural].queue[entry.uid] = entry
        return {entry.uid: entry}

    @kopf.index("", "v1", "pods", labels=pod_filter, id=pods_id)
    async def pod_index(body: kopf.Body, meta: kopf.Meta, **_: Any) -> dict:
        return {(meta["namespace"], children.owning_task(meta)): worker.pod_summary(dict(body))}

    @kopf.on.event(GROUP, VERSION, plural, id=f"{plural}-reconcile")
    def task_changed(body: kopf.Body, meta: kopf.Meta, type: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
        state: OperatorState = memo.capstan
        if type == "DELETED":
            state.kinds[plural].queue.pop(meta["uid"], None)
            state.kinds[plural].forget(meta["namespace"], meta["name"])
            entries = lambda: _entries(state.kinds[plural])  # noqa: E731
            if _has_free_place(state, plural, entries):
                task.admit_waiting(state, info, lookup(kwargs), entries)
            return
        run(state, _plain(body), kwargs)

    @kopf.on.event("", "v1", "pods", labels=pod_filter, id=f"{plural}-worker-pod")
    def pod_changed(meta: kopf.Meta, type: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
        state: OperatorState = memo.capstan
        mem = state.kinds[plural].find(meta["namespace"], children.owning_task(meta))
        if mem is None or mem.body is None:
            return  # its task's own event will come
        if type == "DELETED":
            mem.gone_attempts.add(int(meta["labels"].get(LABEL_ATTEMPT) or 0))
        run(state, mem.body, kwargs)

    @kopf.timer(GROUP, VERSION, plural, id=f"{plural}-resync", interval=CONFIG.reconcile_interval,
                initial_delay=CONFIG.reconcile_interval, when=lambda status, **_: _holds_place(status))
    def resync(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        run(memo.capstan, _plain(body), kwargs)

    @kopf.timer(GROUP, VERSION, plural, id=f"{plural}-callback-retry", interval=CALLBACK_RETRY_INTERVAL,
                when=lambda status, **_: _callbacks_waiting(status))
    def callback_retry(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        run(memo.capstan, _plain(body), kwargs)

    # Only a task that holds (or held) a place, or owes callbacks, is kept from deletion by the
    # finalizer; a queued task goes at once and costs no finalizer writes (kopf_persistence).
    @kopf.on.delete(GROUP, VERSION, plural, id=f"{plural}-finalize",
                    when=lambda status, **_: _needs_finalizer(status))
    def finalize(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        waiting = finish.finalize(memo.capstan, info, _plain(body), lookup(kwargs))
        if waiting:
            raise kopf.TemporaryError(waiting, delay=1)


def _plain(body: kopf.Body) -> dict[str, Any]:
    """A detached copy of kopf's live view, so a pass decides on one consistent object."""
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": dict(body.metadata),
            "spec": dict(body.spec), "status": dict(body.status)}


def _has_free_place(state: OperatorState, plural: str, entries: Any) -> bool:
    kind = state.kinds[plural]
    with kind.quota_lock:
        return kind.quota.has_free_place_for_someone(list(entries()))


def _needs_finalizer(status: kopf.Status) -> bool:
    return admit.is_admitted(dict(status)) or _callbacks_waiting(status)


def _holds_place(status: kopf.Status) -> bool:
    """Admitted tasks not yet ended: a missed Pod or task event is caught within the interval."""
    return bool(status.get("taskId")) and status.get("phase") not in task.TERMINAL_VALUES and any(
        c.get("type") == "Admitted" and c.get("status") == "True" for c in status.get("conditions") or [])


def _callbacks_waiting(status: kopf.Status) -> bool:
    last = max((int(e.get("seq", 0)) for e in status.get("events") or []), default=0)
    return last > int((status.get("callbacks") or {}).get("deliveredSeq", 0))


for _info in KINDS:
    register(_info)
