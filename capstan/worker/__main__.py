"""Worker entrypoint: python -m capstan.worker recorder|pusher|panorama."""

from __future__ import annotations

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


if __name__ == "__main__":
    raise SystemExit(main())
