"""A reconcile pass that failed (an API call timed out, the API server answered 5xx or 429)
is tried again after a backoff, with the newest view of the task.

kopf logs a failing event handler's exception and drops the event: with no later event, a new
task whose first status write timed out would never be accepted (the safety-net timer covers
admitted tasks only). One timer per task at a time; a success resets the backoff.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from capstan.operator.reconcile.state import KindState

log = logging.getLogger(__name__)
DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before the 1st, 2nd, ... retry; the last repeats


def later(kind: KindState, body: dict[str, Any], exc: BaseException,
          again: Callable[[dict[str, Any]], None]) -> None:
    """Schedule `again(newest view)` for this task, unless a retry is already scheduled."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    mem = kind.find(namespace, name)
    if mem is None:
        return
    with kind.retry_lock:
        if mem.retry_timer is not None:
            return
        delay = DELAYS[min(mem.failed_passes, len(DELAYS) - 1)]
        mem.failed_passes += 1

        def fire() -> None:
            with kind.retry_lock:
                mem.retry_timer = None
            if kind.find(namespace, name) is mem and mem.body is not None:  # not deleted meanwhile
                again(mem.body)

        # kopf keeps its settings (Event posting needs them) in context variables: run in a copy.
        mem.retry_timer = threading.Timer(delay, contextvars.copy_context().run, (fire,))
        mem.retry_timer.daemon = True
    if isinstance(exc, ApiException) or "timed out" in str(exc).lower() or isinstance(exc, OSError):
        log.warning("%s/%s: reconcile failed (%s); again in %.0f s", namespace, name, _short(exc), delay)
    else:
        log.error("%s/%s: reconcile failed; again in %.0f s", namespace, name, delay, exc_info=exc)
    mem.retry_timer.start()


def succeeded(kind: KindState, body: dict[str, Any]) -> None:
    mem = kind.find(body["metadata"]["namespace"], body["metadata"]["name"])
    if mem is not None:
        mem.failed_passes = 0


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"
