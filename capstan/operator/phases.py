"""The task phase machine, pure: observations in, a decision out. No I/O here.

The operator owns the queue and the worker lifecycle (normal, failover, callback, finished,
failed); the worker reports what it is doing (idle, recording/pushing, paused, transcode, upload).
Everything is derived from the object's status and the worker Pod, so an operator restart
re-derives the same decision and neither loses nor duplicates a task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from capstan.api.common import Phase

# A worker that exits with this code refused the task (bad configuration): retrying cannot help,
# so there is no failover; the worker has written status.result itself.
EXIT_TASK_REFUSED = 3
# A worker that did its work and stopped cleanly but could not write its last status (the API
# server kept failing or timing out through every retry): not a failure of the task, so no
# failover and no `failed`; the operator finishes it and says the status may be incomplete.
EXIT_REPORT_FAILED = 5  # (4 is the recorder's drained exit: a failover)
TERMINAL = frozenset({Phase.finished, Phase.failed, Phase.canceled})
WORKER_PHASES = frozenset({Phase.idle, Phase.recording, Phase.pushing, Phase.paused, Phase.transcode,
                           Phase.upload})


class PodState(StrEnum):
    absent = "absent"
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


@dataclass(frozen=True)
class PodObservation:
    """What the operator sees of the current attempt's worker Pod."""

    state: PodState
    attempt: int = 0
    exit_code: int | None = None
    message: str | None = None
    # Shutting down (drain, eviction): still `running` until it terminates, never absent, so no
    # failover starts while it stores its open segment and spool.
    terminating: bool = False
    pending_seconds: float = 0.0  # how long it has been Pending (image pull, unschedulable)

    @classmethod
    def absent(cls) -> PodObservation:
        return cls(PodState.absent)


@dataclass(frozen=True)
class TaskObservation:
    """What the operator knows about a task when it decides."""

    phase: str | None
    attempt: int
    failovers: int
    admitted: bool
    stop_requested: bool
    deleting: bool
    pod: PodObservation
    callbacks_pending: int = 0
    max_failovers: int = 3
    pending_timeout: float = 300.0


class Action(StrEnum):
    none = "none"
    create_pod = "create_pod"
    replace_pod = "replace_pod"  # failover: delete the dead attempt, create attempt+1
    finish = "finish"
    await_callbacks = "await_callbacks"
    fail = "fail"


@dataclass
class Decision:
    action: Action = Action.none
    attempt: int = 0
    status: dict = field(default_factory=dict)
    event: tuple[str, str, str] | None = None  # (type Normal|Warning, reason, message)
    delete_pending_pod: bool = False  # the attempt's Pod never started a worker: remove it (no grace needed)


def decide(obs: TaskObservation) -> Decision:
    """The next step for one task."""
    phase = Phase(obs.phase) if obs.phase else None
    if phase in TERMINAL:
        return Decision()
    if not obs.admitted:
        if obs.stop_requested or obs.deleting:  # stopped while queued: it never takes a place
            return Decision(Action.finish, status={"phase": Phase.canceled.value},
                            event=("Normal", "Canceled", "stopped before the worker started"))
        return Decision()
    pod = obs.pod
    if pod.state is PodState.absent or pod.attempt < obs.attempt:
        if phase is Phase.callback or (phase is not None and phase not in WORKER_PHASES
                                       and phase is not Phase.normal):
            return _after_worker(obs)
        if obs.stop_requested or obs.deleting:
            if obs.attempt == 0:
                return Decision(Action.finish, status={"phase": Phase.canceled.value},
                                event=("Normal", "Canceled", "stopped before the worker started"))
            # The worker is gone and a stop was asked for: what it wrote is kept.
            return _after_worker(obs)
        attempt = max(obs.attempt, 1)
        if pod.state is PodState.absent and obs.attempt >= 1 and phase in WORKER_PHASES:
            # The worker Pod vanished under a running task (node lost, forced delete): fail over.
            return _failover(obs, "worker pod disappeared")
        # The phase is left alone: it is `normal` since acceptance, and rewriting it from a view
        # that may be older than the worker's first report would put `normal` over `idle`.
        status: dict = {"attempt": attempt} if phase else {"phase": Phase.normal.value, "attempt": attempt}
        return Decision(Action.create_pod, attempt=attempt, status=status,
                        event=("Normal", "WorkerCreated", f"worker attempt {attempt} created"))
    if pod.state is PodState.pending:
        if phase in WORKER_PHASES:
            # The worker has reported (a failover writes `normal` before its Pod): its Pod runs and
            # the Pod watch lags. A stop now is the worker's to finish, not a cancel of a Pod that never ran.
            return Decision()
        return _pending(obs)
    if pod.state is PodState.running:
        return Decision()
    if pod.state is PodState.succeeded:
        return _after_worker(obs)
    # Failed.
    if pod.exit_code == EXIT_REPORT_FAILED:
        done = _after_worker(obs)
        why = (f"worker attempt {pod.attempt} stopped cleanly but could not report its last status; "
               "status.files and status.message may be incomplete")
        done.event = ("Warning", "WorkerCouldNotReport", why)
        return done
    if pod.exit_code == EXIT_TASK_REFUSED:
        return Decision(Action.fail, status={"phase": Phase.failed.value},
                        event=("Warning", "TaskRefused", f"worker attempt {pod.attempt} refused the task; "
                                                         "see status.result"))
    if obs.stop_requested or obs.deleting:
        return Decision(Action.fail, status={"phase": Phase.failed.value,
                                             "result": {"errorCode": "WorkerFailed",
                                                        "errorMessage": _pod_message(pod)}},
                        event=("Warning", "WorkerFailed", _pod_message(pod)))
    return _failover(obs, _pod_message(pod))


def _pending(obs: TaskObservation) -> Decision:
    """A Pod that never started its worker must not hold a quota slot forever: a stop or a deletion
    ends the task at once, and one Pending too long fails it with the Pod's reason."""
    pod = obs.pod
    if obs.stop_requested or obs.deleting:
        if obs.failovers == 0:
            decision = Decision(Action.finish, status={"phase": Phase.canceled.value},
                                event=("Normal", "Canceled", "stopped before the worker started"))
        else:
            decision = _after_worker(obs)  # the earlier attempts' files are kept
    elif pod.pending_seconds > obs.pending_timeout:
        message = (f"worker attempt {pod.attempt} was Pending for more than {obs.pending_timeout:g} s"
                   + (f": {pod.message}" if pod.message else ""))
        decision = Decision(Action.fail, status={"phase": Phase.failed.value,
                                                 "result": {"errorCode": "WorkerPending", "errorMessage": message}},
                            event=("Warning", "WorkerPending", message))
    else:
        return Decision()
    decision.delete_pending_pod = True
    return decision


def _failover(obs: TaskObservation, why: str) -> Decision:
    if obs.failovers >= obs.max_failovers:
        message = f"worker failed after {obs.failovers} failovers: {why}"
        return Decision(Action.fail, status={"phase": Phase.failed.value,
                                             "result": {"errorCode": "WorkerFailed", "errorMessage": message}},
                        event=("Warning", "WorkerFailed", message))
    attempt = obs.attempt + 1
    return Decision(Action.replace_pod, attempt=attempt,
                    status={"phase": Phase.normal.value, "attempt": attempt, "failovers": obs.failovers + 1},
                    event=("Warning", "Failover", f"{why}; starting attempt {attempt}"))


def _after_worker(obs: TaskObservation) -> Decision:
    if obs.callbacks_pending:
        return Decision(Action.await_callbacks, status={"phase": Phase.callback.value})
    return Decision(Action.finish, status={"phase": Phase.finished.value},
                    event=("Normal", "Finished", "task finished"))


def _pod_message(pod: PodObservation) -> str:
    base = f"worker attempt {pod.attempt} exited with code {pod.exit_code}"
    return f"{base}: {pod.message}" if pod.message else base
