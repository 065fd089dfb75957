"""The panorama worker: one WebRecording task (see session.py)."""

from __future__ import annotations

import logging
import os
import sys

from capstan.api.webrecording import WebRecordingSpec
from capstan.net.urlpolicy import UrlPolicy, redact_userinfo
from capstan.panorama.session import WebRecordingSession
from capstan.storage.client import client_from_env, public_base_url
from capstan.storage.uploader import Uploader
from capstan.worker.base import Worker

log = logging.getLogger("capstan.panorama")


def run(worker: Worker) -> int:
    spec = WebRecordingSpec.model_validate(worker.spec)
    s3 = client_from_env()
    bucket = os.environ["S3_BUCKET"]
    uploader = Uploader(s3, bucket, worker.ctx.work_dir / "spool")
    session = WebRecordingSession(worker, spec, uploader=uploader, s3=s3, bucket=bucket, policy=UrlPolicy.from_env(),
                                  public_base_url=public_base_url(spec.output.storage))
    try:
        if worker.ctx.attempt > 1 and worker.status_at_start.get("stopTime"):
            return session.finish_leftovers()  # it had stopped: store what the spool holds, do not record anew
        return session.run()
    except Exception as exc:  # noqa: BLE001 - reported, then the operator decides on failover
        log.exception("web recording failed")
        worker.report(message=redact_userinfo(f"attempt {worker.ctx.attempt} failed: {exc}")[:1000])
        print(redact_userinfo(f"panorama: {exc}"), file=sys.stderr)
        uploader.flush(timeout=60)
        return 1
    finally:
        uploader.stop()
