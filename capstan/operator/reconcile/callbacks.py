"""The outbox step of the reconcile: one entry, `deliver_pending(state, task)`, so the delivery
mechanism (`capstan.operator.callbacks`) can change without touching the sequencer.

The delivery state this process last wrote is remembered per task: a view from the watch may be
older, and an event must not be sent twice because of that.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from capstan.api.common import CallbackStatus, Phase, TaskEvent, prune_events
from capstan.operator import callbacks as delivery
from capstan.operator import kube, metrics
from capstan.operator.defaults import effective_spec

if TYPE_CHECKING:
    from capstan.operator.reconcile.state import OperatorState
    from capstan.operator.reconcile.task import Task


_ENDED = frozenset({Phase.finished.value, Phase.failed.value, Phase.canceled.value})


def events_of(status: dict[str, Any]) -> list[TaskEvent]:
    return [TaskEvent.model_validate(e) for e in status.get("events") or []]


def known_state(status: dict[str, Any], remembered: CallbackStatus | None) -> CallbackStatus:
    """The newer of the status's delivery state and the one this process wrote last."""
    seen = CallbackStatus.model_validate(status.get("callbacks") or {})
    if remembered and (remembered.delivered_seq, remembered.attempts) > (seen.delivered_seq, seen.attempts):
        return remembered
    return seen


def pending(status: dict[str, Any], state: CallbackStatus | None) -> int:
    """Events of the outbox not yet delivered or given up."""
    return delivery.pending_count(events_of(status), known_state(status, state))


def deliver_pending(state: OperatorState, task: Task) -> CallbackStatus:
    """Deliver the due events of the outbox (or, without spec.callback, mark them done); the new state.

    `status.callbacks` is written by the operator alone, so its write needs no precondition."""
    st, spec = task.status, task.spec
    current = known_state(st, task.mem.callbacks)
    events = events_of(st)
    if not delivery.pending_count(events, current):
        return current
    if not spec.get("callback"):
        new = delivery.skip_all(events, current)
    else:
        # The dispatcher delivers on its own loop; this pass collects what it finished (the
        # callback-retry timer comes back within a second) and starts the next job from that state.
        new = current
        done = state.callbacks.collect(task.mem.uid)
        if done is not None:
            new, attempts = done
            for tried in attempts:
                _announce(state, task, events, tried)
        if delivery.pending_count(events, new):
            state.callbacks.submit(task.mem.uid, _job(state, task, new))
    if new != current:
        task.mem.callbacks = new
        update: dict[str, Any] = {"callbacks": new.model_dump(by_alias=True)}
        if st.get("phase") in _ENDED:
            # No worker writes the outbox any more (it does its own pruning while it runs): prune here.
            update["events"] = prune_events(list(st.get("events") or []), new.delivered_seq)
        task.write(update, conditional=False)
    return new


def _job(state: OperatorState, task: Task, current: CallbackStatus) -> Any:
    """One delivery pass of the task's due events, run on the dispatcher's loop."""
    cfg, st, info, ns = state.config, dict(task.status), task.info, task.namespace
    # With the default storage filled in: a result body may name files by the URLs of that storage.
    spec = effective_spec(info, task.spec, cfg.defaults, strict=False)

    async def job(dispatcher: delivery.Dispatcher) -> tuple[CallbackStatus, list[delivery.Attempt]]:
        async def read_key(name: str, key: str) -> str:
            return await asyncio.to_thread(kube.read_secret_key, ns, name, key)

        async def send(url: str, data: bytes, headers: dict[str, str]) -> str | None:
            started = time.monotonic()
            try:
                return await dispatcher.send(url, data, headers, cfg.callback_timeout, cfg.url_policy)
            finally:
                metrics.CALLBACK_DURATION.labels(info.plural).observe(time.monotonic() - started)

        return await delivery.adeliver_due(info, spec, st, current, read_key, send, cfg.callback_give_up_seconds)
    return job


def _announce(state: OperatorState, task: Task, events: list[TaskEvent], tried: delivery.Attempt) -> None:
    """The Kubernetes Event (and metric) of one delivery try, where a user should see it."""
    metrics.CALLBACKS.labels(task.info.plural, tried.outcome.value).inc()
    event = tried.event
    post = state.post_event
    if tried.outcome is delivery.Outcome.refused:
        post(task.body, "Warning", "CallbackRefused", tried.error or "")
    elif tried.outcome is delivery.Outcome.gave_up:
        post(task.body, "Warning", "CallbackFailed",
             f"event {event.type} (seq {event.seq}): {delivery.failed_message(tried.error or '')}")
    elif tried.tries == 1 and (tried.error or "").startswith(delivery.URL_REFUSED):
        post(task.body, "Warning", "CallbackURLRefused",
             f"event {event.type} (seq {event.seq}) not sent, retrying: {tried.error}")
    elif tried.key_missing and tried.tries == 1:
        post(task.body, "Warning", "CallbackKeyMissing",
             f"cannot sign event {event.type} (seq {event.seq}), retrying: {tried.error}")
    elif (tried.outcome is delivery.Outcome.delivered and event.type in delivery.ANNOUNCED_TYPES
          and not any(e.type == event.type and e.seq < event.seq for e in events)):
        post(task.body, "Normal", "CallbackDelivered", f"event {event.type} delivered")
