"""The recorder worker: single-stream (session.py) or mixed-stream (mix.py) recording of one CloudRecording task."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from capstan.api.cloudrecording import CloudRecordingSpec, RecordMode
from capstan.net.urlpolicy import redact_userinfo
from capstan.operator.phases import EXIT_TASK_REFUSED
from capstan.recorder.mix import MixRecordingSession, mix_spec_problem
from capstan.recorder.session import RecordingSession
from capstan.rooms import BackendUnavailable, backend_for
from capstan.storage.client import client_from_env
from capstan.storage.uploader import Uploader
from capstan.worker.base import Worker

log = logging.getLogger("capstan.recorder")


def run(worker: Worker) -> int:
    spec = CloudRecordingSpec.model_validate(worker.spec)
    mixed = spec.record_mode == RecordMode.mix
    problem = mix_spec_problem(spec) if mixed else None
    if problem is not None:
        return refuse(worker, "InvalidParameter", problem)
    try:
        backend = backend_for(os.environ.get("ROOM_BACKEND", "livekit"))
    except BackendUnavailable as exc:
        return refuse(worker, "BackendUnavailable", f"spec.room.backend: {exc}")
    s3 = client_from_env()
    bucket = os.environ["S3_BUCKET"]
    holder: dict[str, RecordingSession] = {}
    uploader = Uploader(s3, bucket, worker.ctx.work_dir / "spool",
                        on_error=lambda code, message: holder["session"].on_upload_error(code, message))
    kind = MixRecordingSession if mixed else RecordingSession
    session = kind(worker, spec, backend, uploader, room_url=os.environ["ROOM_URL"],
                   room_token=os.environ.get("ROOM_TOKEN", ""), s3_client=s3, bucket=bucket)
    holder["session"] = session
    if worker.ctx.attempt > 1 and worker.status_at_start.get("stopTime"):
        # The recording had ended when the last attempt died storing its files: finish those, do not rejoin.
        code = session.finish_leftovers()
        uploader.stop()
        return code
    try:
        reason = asyncio.run(session.run())
    except Exception as exc:  # noqa: BLE001 - reported, then the operator decides on failover
        log.exception("recording failed")
        worker.report(message=f"attempt {worker.ctx.attempt} failed: {exc}"[:1000])
        uploader.flush(timeout=60)
        print(redact_userinfo(f"recorder: {exc}"), file=sys.stderr)
        return 1
    code = session.drain() if worker.drained and not _stop_asked(worker) else session.finish(reason)
    uploader.stop()
    return code


def _stop_asked(worker: Worker) -> bool:
    """A SIGTERM that raced a stop or a deletion (namespace deleted, finalizer past its bound) is a stop."""
    try:
        obj = worker.resource.get()
    except Exception:  # noqa: BLE001 - API away: a drain keeps the spool for the next attempt anyway
        return False
    return bool((obj.get("spec") or {}).get("stop") or (obj.get("metadata") or {}).get("deletionTimestamp"))


def refuse(worker: Worker, code: str, message: str) -> int:
    """End an attempt that cannot succeed however often it is retried."""
    worker.report(result={"errorCode": code, "errorMessage": message}, message=message)
    print(f"recorder: {message}", file=sys.stderr)
    return EXIT_TASK_REFUSED
