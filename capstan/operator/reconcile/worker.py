"""The worker Pod of each attempt: what the Pod watch shows of it, and starting a new attempt.

`observe_pod` is the one place that turns a Pod into what the phase machine sees (including what
a Pod that is being deleted counts as). A new attempt's number is written to the status before its
Pod is created, so the worker can never report before the operator's write and be overwritten.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from capstan.api.common import Phase
from capstan.net.urlpolicy import redact_userinfo
from capstan.operator import children, failover, kube, metrics
from capstan.operator.config import FINALIZER, LABEL_ATTEMPT
from capstan.operator.defaults import TaskConfigError, effective_spec
from capstan.operator.phases import Action, Decision, PodObservation, PodState
from capstan.operator.reconcile import finish
from capstan.operator.worker_env import worker_env

if TYPE_CHECKING:
    from capstan.operator.reconcile.state import OperatorState
    from capstan.operator.reconcile.task import Plan, PodLookup, Task

_POD_STATES = {"Pending": PodState.pending, "Running": PodState.running, "Succeeded": PodState.succeeded,
               "Failed": PodState.failed}


def pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    """What the Pod index keeps of a worker Pod: enough for `observe_pod`, little memory."""
    meta = pod.get("metadata") or {}
    return {"metadata": {k: meta.get(k) for k in ("name", "labels", "creationTimestamp", "deletionTimestamp")},
            "status": {k: (pod.get("status") or {}).get(k) for k in ("phase", "containerStatuses")}}


def observe_pod(pod: dict[str, Any], now: dt.datetime | None = None) -> PodObservation:
    """What the phase machine sees of one worker Pod."""
    meta = pod.get("metadata") or {}
    attempt = int((meta.get("labels") or {}).get(LABEL_ATTEMPT) or 0)
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    exit_code, message = None, None
    for cs in status.get("containerStatuses") or []:
        state_of = cs.get("state") or {}
        term, waiting = state_of.get("terminated"), state_of.get("waiting")
        if term:
            exit_code, message = term.get("exitCode"), term.get("message") or term.get("reason")
        elif waiting and phase == "Pending":
            message = ": ".join(p for p in (waiting.get("reason"), waiting.get("message")) if p)
        message = redact_userinfo(message) if message else message
    state = _POD_STATES.get(phase, PodState.pending)
    # A Pod that stays Pending sends no more events: how long it has been Pending is worked out
    # again at each pass (the safety-net timer's included), from its creation time.
    created = meta.get("creationTimestamp")
    pending_for = ((now or dt.datetime.now(dt.UTC)) - dt.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
                   ).total_seconds() if created and state is PodState.pending else 0.0
    # A Pod with a deletionTimestamp is shutting down (drain, eviction), not gone: its worker still
    # stores its open segment and spool; failover waits until it has terminated.
    return PodObservation(state, attempt=attempt, exit_code=exit_code, message=message,
                          terminating=bool(meta.get("deletionTimestamp")), pending_seconds=pending_for)


def current_pod(task: Task, pods: PodLookup, attempt: int) -> PodObservation:
    """The current attempt's Pod; one this process created counts as pending until the watch shows it."""
    if attempt < 1:
        return PodObservation.absent()
    seen = pods(task.namespace, task.name, attempt)
    if seen.state is PodState.absent and task.mem.created_attempt == attempt \
            and attempt not in task.mem.gone_attempts:
        return PodObservation(PodState.pending, attempt=attempt)
    return seen


def parallel(state: OperatorState, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run `calls` at once on the children pool, wait for all of them; their results in order (the
    first error is raised once every call has ended)."""
    futures = [state.children_pool.submit(call) for call in calls]
    concurrent.futures.wait(futures)
    return [done.result() for done in futures]


def _create_or_remember(secret: dict[str, Any], existing: list[dict[str, Any]]) -> None:
    if not kube.create_secret(secret):
        existing.append(secret)


def step(state: OperatorState, task: Task, view: dict[str, Any], decision: Decision, plan: Plan) -> None:
    """Start attempt `decision.attempt` (replacing the dead one on failover): status first, Pod after."""
    body = {**task.body, "status": {**view, **decision.status}}
    secrets = kube.secret_reader(task.namespace)  # each Secret fetched once for this attempt
    try:
        # The worker gets the spec's values, or the operator's defaults where the task left them out.
        spec = effective_spec(task.info, task.spec, state.config.defaults)
        env = worker_env(task.info, {**body, "spec": spec}, secrets)
    except TaskConfigError as exc:
        plan.status.update({"phase": Phase.failed.value, "result": {"errorCode": "InvalidParameter",
                                                                     "errorMessage": str(exc)}})
        plan.events.append(("Warning", "InvalidParameter", str(exc)))
        finish.ended(state, task, plan, Phase.failed.value, str(exc))
        return
    for key, value in decision.status.items():
        plan.set(view, key, value)
    attempt = decision.attempt
    plan.set(view, "workerPod", children.pod_name(task.info, task.name, attempt))
    cfg = state.config
    # The children in two parallel rounds, not seven requests one after another (issue 11): beside
    # the status write what depends on nothing (identity, spool, new Secrets); after it the finalizer
    # (it changes the object, so beside the conditional status write it made that write conflict),
    # the RoleBinding (its Role must exist: RBAC checks the rules it grants) and the Pod (its attempt
    # is written, its ServiceAccount exists). The worker waits out a 403 while its binding lands
    # (capstan.worker.base). A task deleted before the finalizer held it gets no worker: its Pod,
    # created that same moment, is removed before it could record anything.
    # A pass on a stale view sends the first round too, before its write is refused: it only creates
    # what is missing; a Secret already there (a failover's, or a racing pass's) is replaced after.
    existing: list[dict[str, Any]] = []
    plan.alongside += [lambda: kube.ensure_service_account(task.info, body), lambda: kube.ensure_role(task.info, body),
                       lambda: kube.ensure_spool(children.spool_claim(task.info, body, cfg)),
                       *[functools.partial(_create_or_remember, secret, existing) for secret in env.secrets]]

    def start() -> None:
        for secret in existing:
            kube.replace_secret(secret)
        if decision.action is Action.replace_pod:
            # The dead attempt has terminated (or vanished): its spool is on the task's PVC, not in the Pod.
            kube.delete_pod(task.namespace, children.pod_name(task.info, task.name, attempt - 1), grace_seconds=0)
            metrics.FAILOVERS.labels(task.info.plural).inc()
            outcome = failover.remove_dead_identity(
                spec, secrets, task.info.room_identity_field)
            state.post_event(task.body, "Normal", "FailoverIdentity", f"dead attempt's room identity: {outcome}")
        held, _, created = parallel(state, [
            lambda: kube.add_finalizer(task.info, task.body, FINALIZER),
            lambda: kube.ensure_role_binding(task.info, body),
            lambda: kube.create_pod(children.worker_pod(task.info, body, attempt, cfg, env.env))])
        if not held:
            kube.delete_children(task.info, task.namespace, task.name)
            return
        task.mem.created_attempt = attempt
        if (created or decision.action is Action.replace_pod) and decision.event:
            state.post_event(task.body, *decision.event)

    plan.after.append(start)
