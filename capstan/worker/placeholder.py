"""The base work every worker does until its media pipeline exists: report that it runs,
wait for a stop (spec.stop, deletion, SIGTERM), report that it stopped, exit 0."""

from __future__ import annotations

from capstan.worker.base import Worker, now


def run_until_stopped(worker: Worker, active_phase: str, what: str) -> int:
    worker.report(phase=active_phase, startTime=now(), workerPod=worker.ctx.pod_name,
                  message=f"attempt {worker.ctx.attempt}: {what}")
    while not worker.stop_event.wait(1.0):  # nothing to record yet: idle, truthfully
        pass
    worker.report(phase="upload", stopTime=now(), message=f"stopped: {worker.stop_reason}")
    return 0
