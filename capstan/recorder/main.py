"""The recorder worker (base work only so far: its media pipeline is a later issue)."""

from __future__ import annotations

from capstan.worker.base import Worker
from capstan.worker.placeholder import run_until_stopped


def run(worker: Worker) -> int:
    return run_until_stopped(worker, "idle", "recorder worker running (media pipeline not built yet)")
