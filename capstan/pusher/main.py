"""The pusher worker: one StreamPush task (see session.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from capstan.api.streampush import StreamPushSpec
from capstan.net.urlpolicy import UrlPolicy, redact_userinfo
from capstan.operator.phases import EXIT_TASK_REFUSED
from capstan.pusher.session import PushSession
from capstan.rooms import BackendUnavailable, backend_for
from capstan.worker.base import Worker

log = logging.getLogger("capstan.pusher")


def run(worker: Worker) -> int:
    spec = StreamPushSpec.model_validate(worker.spec)
    try:
        backend = backend_for(os.environ.get("ROOM_BACKEND", "livekit"))
    except BackendUnavailable as exc:
        message = f"spec.room.backend: {exc}"
        worker.report(result={"errorCode": "BackendUnavailable", "errorMessage": message}, message=message)
        return EXIT_TASK_REFUSED
    progress = (worker.resource.get().get("status") or {}).get("progress") or {}
    session = PushSession(worker, spec, backend, room_url=os.environ["ROOM_URL"], room_name=os.environ["ROOM_NAME"],
                          room_token=os.environ.get("ROOM_TOKEN", ""), policy=UrlPolicy.from_env(),
                          redis_url=os.environ.get("REDIS_URL") or None,
                          status_position=float(progress.get("positionSeconds") or 0) or None)
    try:
        return asyncio.run(session.run())
    except Exception as exc:  # noqa: BLE001 - reported, then the operator decides on failover
        log.exception("push failed")
        worker.report(message=redact_userinfo(f"attempt {worker.ctx.attempt} failed: {exc}")[:1000])
        print(redact_userinfo(f"pusher: {exc}"), file=sys.stderr)
        return 1
    finally:
        session.close()
