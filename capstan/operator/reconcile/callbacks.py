"""The outbox step of the reconcile: one entry, `deliver_pending(state, task)`, so the delivery
mechanism (`capstan.operator.callbacks`) can change without touching the sequencer.

The delivery state this process last wrote is remembered per task: a view from the watch may be
older, and an event must not be sent twice because of that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from capstan.api.common import CallbackStatus, TaskEvent
from capstan.operator import callbacks as delivery
from capstan.operator import kube, metrics

if TYPE_CHECKING:
    from capstan.operator.reconcile.state import OperatorState
    from capstan.operator.reconcile.task import Task


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
        cfg = state.config
        new, attempts = delivery.deliver_due(
            task.info, spec, st, current, lambda name, key: kube.read_secret_key(task.namespace, name, key),
            lambda url, data, headers: delivery.deliver(url, data, headers, cfg.callback_timeout, cfg.url_policy),
            cfg.callback_give_up_seconds)
        for tried in attempts:
            _announce(state, task, events, tried)
    if new != current:
        task.mem.callbacks = new
        task.write({"callbacks": new.model_dump(by_alias=True)}, conditional=False)
    return new


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
