"""The phase machine decides the same thing for the same observations (restart safety)."""

from capstan.operator.phases import Action, PodObservation, PodState, TaskObservation, decide


def obs(**kw):
    base = dict(phase="normal", attempt=0, failovers=0, admitted=True, stop_requested=False, deleting=False,
                pod=PodObservation.absent())
    base.update(kw)
    return TaskObservation(**base)


def test_queued_task_waits():
    assert decide(obs(admitted=False)).action is Action.none


def test_admitted_task_gets_attempt_one():
    d = decide(obs())
    assert d.action is Action.create_pod and d.attempt == 1 and d.status["attempt"] == 1


def test_running_worker_is_left_alone():
    assert decide(obs(phase="recording", attempt=1, pod=PodObservation(PodState.running, 1))).action is Action.none


def test_failed_worker_fails_over_with_next_attempt():
    d = decide(obs(phase="recording", attempt=1, pod=PodObservation(PodState.failed, 1, exit_code=137)))
    assert d.action is Action.replace_pod and d.attempt == 2
    assert d.status["failovers"] == 1 and d.event[1] == "Failover"


def test_vanished_worker_fails_over():
    d = decide(obs(phase="recording", attempt=2, failovers=1))
    assert d.action is Action.replace_pod and d.attempt == 3


def test_failovers_are_bounded():
    d = decide(obs(phase="recording", attempt=4, failovers=3, pod=PodObservation(PodState.failed, 4, exit_code=1)))
    assert d.action is Action.fail and d.status["phase"] == "failed"
    assert "3 failovers" in d.status["result"]["errorMessage"]


def test_success_finishes_or_waits_for_callbacks():
    done = PodObservation(PodState.succeeded, 1, exit_code=0)
    assert decide(obs(phase="upload", attempt=1, pod=done)).status["phase"] == "finished"
    d = decide(obs(phase="upload", attempt=1, pod=done, callbacks_pending=2))
    assert d.action is Action.await_callbacks and d.status["phase"] == "callback"


def test_stop_before_start_cancels():
    d = decide(obs(stop_requested=True))
    assert d.status["phase"] == "canceled"


def test_terminal_is_final():
    assert decide(obs(phase="finished", attempt=1)).action is Action.none


def test_a_refused_task_fails_without_failover():
    d = decide(obs(phase="idle", attempt=1, pod=PodObservation(PodState.failed, 1, exit_code=3)))
    assert d.action is Action.fail and d.status == {"phase": "failed"}


def test_a_terminating_worker_counts_as_running():
    """A drained Pod (deletionTimestamp set) still stores its files: no failover until it has terminated."""
    pod = PodObservation(PodState.running, 1, terminating=True)
    assert decide(obs(phase="recording", attempt=1, pod=pod)).action is Action.none


def test_a_pod_pending_too_long_fails_and_frees_its_slot():
    pod = PodObservation(PodState.pending, 1, message="ErrImagePull: no such image", pending_seconds=301)
    d = decide(obs(phase="normal", attempt=1, pod=pod))
    assert d.action is Action.fail and d.delete_pending_pod and d.status["result"]["errorCode"] == "WorkerPending"
    assert "ErrImagePull" in d.status["result"]["errorMessage"]
    young = PodObservation(PodState.pending, 1, pending_seconds=10)
    assert decide(obs(phase="normal", attempt=1, pod=young)).action is Action.none


def test_stop_while_the_pod_is_pending_ends_the_task_at_once():
    pod = PodObservation(PodState.pending, 1, pending_seconds=5)
    d = decide(obs(phase="normal", attempt=1, pod=pod, stop_requested=True))
    assert d.action is Action.finish and d.status["phase"] == "canceled" and d.delete_pending_pod
    # after a failover the earlier attempts' files are kept: finished, not canceled
    d = decide(obs(phase="normal", attempt=2, failovers=1, pod=PodObservation(PodState.pending, 2), deleting=True))
    assert d.status["phase"] == "finished" and d.delete_pending_pod


def test_a_worker_that_could_not_report_is_finished_not_failed_over():
    from capstan.operator.phases import EXIT_REPORT_FAILED

    d = decide(obs(phase="upload", attempt=1, pod=PodObservation(PodState.failed, 1, exit_code=EXIT_REPORT_FAILED)))
    assert d.action is Action.finish and d.status["phase"] == "finished"
    assert d.event[1] == "WorkerCouldNotReport"


def test_a_queued_task_stopped_is_canceled_without_a_place():
    d = decide(obs(admitted=False, stop_requested=True))
    assert d.action is Action.finish and d.status["phase"] == "canceled"


def test_the_first_attempt_does_not_rewrite_a_reported_phase():
    d = decide(obs(phase="normal", attempt=1))  # attempt 1 written, its Pod not visible yet
    assert d.action is Action.create_pod and "phase" not in d.status


def test_a_stop_while_the_pod_watch_lags_behind_the_workers_report_is_not_a_cancel():
    """The worker reported `idle`, the Pod watch still shows its Pod Pending: a stop is left to the
    worker (it ends `finished` with what it wrote), and no Pending timeout applies."""
    lagging = PodObservation(PodState.pending, 1, pending_seconds=400)
    d = decide(obs(phase="idle", attempt=1, pod=lagging, stop_requested=True))
    assert d.action is not Action.finish and not d.delete_pending_pod and "phase" not in d.status
    d = decide(obs(phase="recording", attempt=1, pod=lagging))
    assert d.action is not Action.fail and not d.delete_pending_pod
