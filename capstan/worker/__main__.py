"""Worker entrypoint: python -m capstan.worker recorder|pusher|panorama."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys

from capstan.worker import metrics
from capstan.worker.base import OwnResource, Worker, WorkerContext
from capstan.worker.placeholder import run_until_stopped

ENTRYPOINTS = {"recorder": "capstan.recorder.main", "pusher": "capstan.pusher.main",
               "panorama": "capstan.panorama.main"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ENTRYPOINTS:
        print(f"usage: python -m capstan.worker {{{'|'.join(ENTRYPOINTS)}}}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics.serve()
    ctx = WorkerContext.from_env()
    worker = Worker(ctx, OwnResource(ctx))
    if os.environ.get("CAPSTAN_WORKER_MODE") == "base":
        return worker.run(lambda w: run_until_stopped(w, "idle", f"{args[0]} worker in base mode (no media)"))
    module = importlib.import_module(ENTRYPOINTS[args[0]])
    return worker.run(module.run)


def exit_now(code: int) -> None:
    """Exit with `code` without interpreter finalization: the worker's daemon threads (its own-resource
    watch, the metrics server, the room SDKs' threads) may still be logging, and finalizing under them
    aborts the process (SIGABRT, exit 134) -- which turned a refusal (3) or a clean stop (0) into a
    failover. Everything the worker keeps is written and flushed by the time `main` returns."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
