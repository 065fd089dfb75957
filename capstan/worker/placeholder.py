"""Base mode: a worker's lifecycle without media. It reports that it runs, waits for a stop
(spec.stop, deletion, SIGTERM), reports that it stopped and exits 0.

Workers whose media pipeline is not built yet run only this; any worker runs it when its Pod has
CAPSTAN_WORKER_MODE=base (set CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE=base on the operator), which
tests the operator's lifecycle, RBAC and callbacks without a room server, and smoke-tests a new
cluster.

A CloudRecording also emits TRTC's recorder events (306 failover on a later attempt, 301 start,
302 stop), so callbacks are exercised end to end before the recorder exists.
"""

from __future__ import annotations

from capstan.worker.base import Worker, now

TRTC_EVENT_KINDS = frozenset({"cloudrecordings"})


def run_until_stopped(worker: Worker, active_phase: str, what: str) -> int:
    trtc_events = worker.ctx.plural in TRTC_EVENT_KINDS
    if trtc_events and worker.ctx.attempt > 1:
        worker.emit(306, {"Status": 0})
    if trtc_events:
        worker.emit(301, {"Status": 0})
    worker.report(phase=active_phase, startTime=now(), workerPod=worker.ctx.pod_name,
                  message=f"attempt {worker.ctx.attempt}: {what}")
    while not worker.stop_event.wait(1.0):  # nothing is recorded in base mode: idle, truthfully
        pass
    if trtc_events:
        worker.emit(302, {"LeaveCode": 0})
    worker.report(phase="upload", stopTime=now(), message=f"stopped: {worker.stop_reason}")
    return 0
