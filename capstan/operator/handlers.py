"""kopf handlers: thin glue between watch events and the pure phase machine.

Per kind: `accept` gives a new task its id and puts it in the queue; `reconcile` (a timer) admits,
observes the worker Pod, asks `phases.decide` what to do and does it; `stop` notes a stop request;
`finalize` lets the worker stop gracefully before the resource goes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import uuid
from typing import Any

import kopf
import kubernetes

from capstan.api import GROUP, KINDS, VERSION, KindInfo
from capstan.api.common import CallbackStatus, Phase, TaskEvent
from capstan.net.urlpolicy import redact_userinfo
from capstan.operator import callbacks, children, failover, kube, metrics
from capstan.operator.admission import QueueEntry, queue_position
from capstan.operator.config import FINALIZER, PREFIX, OperatorConfig
from capstan.operator.phases import TERMINAL, Action, Decision, PodObservation, PodState, TaskObservation, decide
from capstan.operator.worker_env import TaskConfigError, worker_env

CONFIG = OperatorConfig.from_env()
_admission_lock = threading.Lock()
_reserved: dict[str, set[str]] = {info.plural: set() for info in KINDS}
_TERMINAL_VALUES = {p.value for p in TERMINAL}
# The delivery state this process last wrote per task uid: a timer tick may still see an older
# status from the watch, and must not send an event twice because of that.
_callback_state: dict[str, CallbackStatus] = {}


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.posting.level = 20  # INFO and above become Kubernetes Events
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 32
    metrics.serve()


def _condition(type_: str, status: bool, reason: str, message: str, generation: int | None) -> dict:
    return {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": now(), "observedGeneration": generation}


def _set_condition(status: dict, patch: kopf.Patch, cond: dict) -> None:
    """Replace one condition, keeping its transition time when its status did not change."""
    current = list(patch.status.get("conditions") or status.get("conditions") or [])
    for old in current:
        if old.get("type") == cond["type"]:
            if (old.get("status"), old.get("reason"), old.get("message")) == (
                    cond["status"], cond["reason"], cond["message"]):
                return
            if old.get("status") == cond["status"]:
                cond["lastTransitionTime"] = old.get("lastTransitionTime", cond["lastTransitionTime"])
    current = [c for c in current if c.get("type") != cond["type"]] + [cond]
    patch.status["conditions"] = current


def _is_admitted(status: dict) -> bool:
    return any(c.get("type") == "Admitted" and c.get("status") == "True" for c in status.get("conditions") or [])


def _room(spec: dict) -> str:
    room = spec.get("room") or {}
    return str(room.get("roomId") or room.get("strRoomId") or "")


def _observe_pod(info: KindInfo, namespace: str, name: str, attempt: int) -> PodObservation:
    if attempt < 1:
        return PodObservation.absent()
    pod = kube.read_pod(namespace, children.pod_name(info, name, attempt))
    if pod is None:
        return PodObservation.absent()
    phase = (pod.get("status") or {}).get("phase", "Pending")
    exit_code, message = None, None
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state_of = cs.get("state") or {}
        term, waiting = state_of.get("terminated"), state_of.get("waiting")
        if term:
            exit_code, message = term.get("exitCode"), term.get("message") or term.get("reason")
        elif waiting and phase == "Pending":
            message = ": ".join(p for p in (waiting.get("reason"), waiting.get("message")) if p)
        message = redact_userinfo(message) if message else message
    state = {"Pending": PodState.pending, "Running": PodState.running, "Succeeded": PodState.succeeded,
             "Failed": PodState.failed}.get(phase, PodState.pending)
    created = pod["metadata"].get("creationTimestamp")
    pending_for = ((dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(str(created).replace("Z", "+00:00")))
                   .total_seconds() if created and state is PodState.pending else 0.0)
    # A Pod with a deletionTimestamp is shutting down (drain, eviction), not gone: its worker still
    # stores its open segment and spool; failover waits until it has terminated.
    return PodObservation(state, attempt=attempt, exit_code=exit_code, message=message,
                          terminating=bool(pod["metadata"].get("deletionTimestamp")), pending_seconds=pending_for)


def _post(body: kopf.Body, event: tuple[str, str, str] | None) -> None:
    if event:
        kopf.event(body, type=event[0], reason=event[1], message=event[2])


def register(info: KindInfo) -> None:
    """Attach the handlers for one kind."""
    queue_id = f"{info.plural}_queue"

    @kopf.index(GROUP, VERSION, info.plural, id=queue_id)
    def queue_index(body: kopf.Body, meta: kopf.Meta, status: kopf.Status, **_: Any) -> dict:
        return {meta["uid"]: QueueEntry(
            uid=meta["uid"], created=meta.get("creationTimestamp", ""), name=meta["name"],
            admitted=_is_admitted(dict(status)), terminal=status.get("phase") in _TERMINAL_VALUES)}

    @kopf.on.resume(GROUP, VERSION, info.plural, id=f"{info.plural}-accept-resume")
    @kopf.on.create(GROUP, VERSION, info.plural, id=f"{info.plural}-accept")
    def accept(body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch,
               **_: Any) -> None:
        if status.get("taskId"):
            return  # already accepted (operator restart): keep the task id
        patch.status["taskId"] = str(uuid.uuid4())
        patch.status["phase"] = Phase.normal.value
        patch.status["createTime"] = now()
        patch.status["room"] = _room(dict(spec))
        patch.status["attempt"] = 0
        patch.status["failovers"] = 0
        patch.status["observedGeneration"] = meta.get("generation")
        kopf.event(body, type="Normal", reason="Accepted", message=f"task {patch.status['taskId']} accepted")
        metrics.TASKS_ACCEPTED.labels(info.plural).inc()

    @kopf.on.field(GROUP, VERSION, info.plural, field="spec.stop", id=f"{info.plural}-stop")
    def stop(body: kopf.Body, new: Any, status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
        if new and not status.get("cancelTime"):
            patch.status["cancelTime"] = now()
            kopf.event(body, type="Normal", reason="StopRequested", message="stop requested; worker finishing")

    @kopf.timer(GROUP, VERSION, info.plural, id=f"{info.plural}-reconcile", interval=CONFIG.reconcile_interval,
                when=lambda status, **_: _needs_reconcile(status))
    def reconcile(body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch,
                  **kwargs: Any) -> None:
        st = dict(status)
        uid, generation = meta["uid"], meta.get("generation")
        admitted = _is_admitted(st)
        if not admitted:
            admitted = _admit(info, body, st, patch, kwargs[queue_id], uid, generation)
        attempt = int(st.get("attempt") or 0)
        cb_state = _callbacks(info, body, dict(spec), st, patch)
        obs = TaskObservation(
            phase=st.get("phase"), attempt=attempt, failovers=int(st.get("failovers") or 0),
            admitted=admitted, stop_requested=bool(spec.get("stop")), deleting=bool(meta.get("deletionTimestamp")),
            pod=_observe_pod(info, meta["namespace"], meta["name"], attempt), max_failovers=CONFIG.max_failovers,
            pending_timeout=CONFIG.pending_timeout_seconds,
            callbacks_pending=callbacks.pending_count(_events(st), cb_state))
        decision = decide(obs)
        if decision.action is Action.finish and attempt >= 1:
            # The worker's last events may not have reached our watch yet: count them from a fresh read.
            fresh = _fresh_status(info, meta["namespace"], meta["name"])
            pending = callbacks.pending_count(_events(fresh), cb_state)
            if pending:
                decision = decide(dataclasses.replace(obs, callbacks_pending=pending))
        if decision.action is Action.none:
            return
        if decision.delete_pending_pod:  # it never started a worker: nothing to save
            kube.delete_pod(meta["namespace"], children.pod_name(info, meta["name"], attempt), grace_seconds=0)
        body_dict = dict(body)
        body_dict["status"] = {**st, **decision.status}
        if decision.action in (Action.create_pod, Action.replace_pod):
            try:
                env = worker_env(info, body_dict, lambda name, key: kube.read_secret_key(meta["namespace"], name, key))
            except TaskConfigError as exc:
                decision = Decision(Action.fail, status={"phase": Phase.failed.value, "result": {
                    "errorCode": "InvalidParameter", "errorMessage": str(exc)}},
                    event=("Warning", "InvalidParameter", str(exc)))
        if decision.action in (Action.create_pod, Action.replace_pod):
            if decision.action is Action.replace_pod:
                # The dead attempt has terminated (or vanished): its spool is on the task's PVC, not in the Pod.
                kube.delete_pod(meta["namespace"], children.pod_name(info, meta["name"], attempt), grace_seconds=0)
                metrics.FAILOVERS.labels(info.plural).inc()
                outcome = failover.remove_dead_identity(
                    dict(spec), lambda n, k: kube.read_secret_key(meta["namespace"], n, k))
                kopf.event(body, type="Normal", reason="FailoverIdentity",
                           message=f"dead attempt's room identity: {outcome}")
            kube.ensure_identity(info, body_dict)
            kube.ensure_spool(children.spool_claim(info, body_dict, CONFIG))
            for secret in env.secrets:
                kube.apply_secret(secret)
            created = kube.create_pod(children.worker_pod(info, body_dict, decision.attempt, CONFIG, env.env))
            if not created and decision.action is Action.create_pod:
                decision.event = None  # the Pod was already there: nothing new happened
            patch.status["workerPod"] = children.pod_name(info, meta["name"], decision.attempt)
        elif decision.action in (Action.finish, Action.fail):
            _callback_state.pop(uid, None)
            if decision.status.get("phase") == Phase.finished.value:
                # the last worker exited 0 only with its spool stored; a failed task keeps its spool until deleted
                kube.delete_spool(info, meta["namespace"], meta["name"])
            if decision.status.get("phase") == Phase.finished.value and cb_state.failed:
                decision.status["result"] = {"errorCode": "CallbackFailed",
                                             "errorMessage": callbacks.failed_message(cb_state.last_error or "")}
            patch.status["finishTime"] = now()
            if not st.get("stopTime"):
                patch.status["stopTime"] = now()
            metrics.TASKS_ENDED.labels(info.plural, decision.status.get("phase", "")).inc()
            _set_condition(st, patch, _condition("Finished", True, decision.status.get("phase", "").capitalize(),
                                                 (decision.event or ("", "", "done"))[2], generation))
        for key, value in decision.status.items():
            patch.status[key] = value
        patch.status["observedGeneration"] = generation
        _post(body, decision.event)

    @kopf.on.delete(GROUP, VERSION, info.plural, id=f"{info.plural}-finalize")
    def finalize(body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch,
                 **_: Any) -> None:
        """Keep the resource until its worker has stopped and its callbacks are out, then remove the children."""
        ns, name = meta["namespace"], meta["name"]
        attempt = int(status.get("attempt") or 0)
        pod = _observe_pod(info, ns, name, attempt)
        if pod.state in (PodState.pending, PodState.running):
            deleted_at = dt.datetime.fromisoformat(meta["deletionTimestamp"].replace("Z", "+00:00"))
            waited = (dt.datetime.now(dt.UTC) - deleted_at).total_seconds()
            # A running worker stores its last files first (DESIGN §6); only past the documented bound
            # (CAPSTAN_DELETE_UPLOAD_BOUND_SECONDS) is it stopped with what still waits in its spool.
            if pod.state is PodState.pending or waited > CONFIG.delete_upload_bound_seconds:
                kube.delete_pod(ns, children.pod_name(info, name, attempt))
            raise kopf.TemporaryError("waiting for the worker to stop and save its files", delay=1)
        # The worker's last events (302, 305, the result) go out before the resource does; the
        # give-up rule bounds the wait.
        fresh = _fresh_status(info, ns, name)
        if callbacks.pending_count(_events(fresh), _callbacks(info, body, dict(spec), fresh, patch)):
            raise kopf.TemporaryError("delivering the last callbacks", delay=1)
        kube.delete_children(info, ns, name)
        _reserved[info.plural].discard(meta["uid"])
        _callback_state.pop(meta["uid"], None)


def _fresh_status(info: KindInfo, namespace: str, name: str) -> dict:
    obj = kubernetes.client.CustomObjectsApi(kube.client()).get_namespaced_custom_object(
        GROUP, VERSION, namespace, info.plural, name, _request_timeout=kube.TIMEOUT)
    return dict(obj.get("status") or {})  # type: ignore[attr-defined]


def _events(status: dict) -> list[TaskEvent]:
    return [TaskEvent.model_validate(e) for e in status.get("events") or []]


def _needs_reconcile(status: kopf.Status) -> bool:
    """Running tasks, and ended ones whose events still wait for delivery (a failed task's 302)."""
    if not status.get("taskId"):
        return False
    if status.get("phase") not in _TERMINAL_VALUES:
        return True
    last = max((int(e.get("seq", 0)) for e in status.get("events") or []), default=0)
    return last > int((status.get("callbacks") or {}).get("deliveredSeq", 0))


def _callbacks(info: KindInfo, body: kopf.Body, spec: dict, st: dict, patch: kopf.Patch) -> CallbackStatus:
    """Deliver the due events of the outbox (or, without spec.callback, mark them done); the new state."""
    uid = body["metadata"]["uid"]
    state = CallbackStatus.model_validate(st.get("callbacks") or {})
    remembered = _callback_state.get(uid)
    if remembered and (remembered.delivered_seq, remembered.attempts) > (state.delivered_seq, state.attempts):
        state = remembered
    events = _events(st)
    if not callbacks.pending_count(events, state):
        return state
    if not spec.get("callback"):
        new = callbacks.skip_all(events, state)
    else:
        ns = body["metadata"]["namespace"]
        new, attempts = callbacks.deliver_due(
            info, spec, st, state, lambda name, key: kube.read_secret_key(ns, name, key),
            lambda url, data, headers: callbacks.deliver(url, data, headers, CONFIG.callback_timeout,
                                                         CONFIG.url_policy),
            CONFIG.callback_give_up_seconds)
        for tried in attempts:
            _post_attempt(info, body, events, tried)
    if new != state:
        patch.status["callbacks"] = new.model_dump(by_alias=True)
        _callback_state[uid] = new
    return new


def _post_attempt(info: KindInfo, body: kopf.Body, events: list[TaskEvent], tried: callbacks.Attempt) -> None:
    metrics.CALLBACKS.labels(info.plural, tried.outcome.value).inc()
    event = tried.event
    if tried.outcome is callbacks.Outcome.refused:
        kopf.event(body, type="Warning", reason="CallbackRefused", message=tried.error or "")
    elif tried.outcome is callbacks.Outcome.gave_up:
        kopf.event(body, type="Warning", reason="CallbackFailed",
                   message=f"event {event.type} (seq {event.seq}): {callbacks.failed_message(tried.error or '')}")
    elif tried.tries == 1 and (tried.error or "").startswith(callbacks.URL_REFUSED):
        kopf.event(body, type="Warning", reason="CallbackURLRefused",
                   message=f"event {event.type} (seq {event.seq}) not sent, retrying: {tried.error}")
    elif tried.key_missing and tried.tries == 1:
        kopf.event(body, type="Warning", reason="CallbackKeyMissing",
                   message=f"cannot sign event {event.type} (seq {event.seq}), retrying: {tried.error}")
    elif (tried.outcome is callbacks.Outcome.delivered and event.type in callbacks.ANNOUNCED_TYPES
          and not any(e.type == event.type and e.seq < event.seq for e in events)):
        kopf.event(body, type="Normal", reason="CallbackDelivered", message=f"event {event.type} delivered")


def _admit(info: KindInfo, body: kopf.Body, st: dict, patch: kopf.Patch, index: kopf.Index, uid: str,
           generation: int | None) -> bool:
    entries = [entry for _, store in index.items() for entry in store]
    reserved = _reserved[info.plural]
    with _admission_lock:
        # Forget reservations the index has caught up with.
        seen = {e.uid for e in entries if e.admitted or e.terminal}
        reserved.difference_update(seen | (reserved - {e.uid for e in entries}))
        position = queue_position(entries, uid, CONFIG.max_tasks, reserved)
        if position == 0:
            reserved.add(uid)
    if position == 0:
        _set_condition(st, patch, _condition("Queued", False, "Admitted", "a place is free", generation))
        _set_condition(st, patch, _condition("Admitted", True, "QuotaAvailable",
                                             f"admitted under the limit of {CONFIG.max_tasks} tasks", generation))
        kopf.event(body, type="Normal", reason="Admitted", message="admitted; starting the worker")
        return True
    if CONFIG.queue_policy == "refuse":
        message = f"the limit of {CONFIG.max_tasks} concurrent tasks is reached (RestrictedConcurrency)"
        patch.status["phase"] = Phase.failed.value
        patch.status["result"] = {"errorCode": "FailedOperation.RestrictedConcurrency", "errorMessage": message}
        kopf.event(body, type="Warning", reason="Refused", message=message)
        return False
    message = f"waiting for a free place: {position} in queue, limit {CONFIG.max_tasks} concurrent tasks"
    _set_condition(st, patch, _condition("Queued", True, "QuotaExceeded", message, generation))
    if st.get("message") != message:
        patch.status["message"] = message
    return False


for _info in KINDS:
    register(_info)
