"""What every worker shares: its identity from env, a Kubernetes client with its own narrow token,
a status reporter for its own resource, a watch for stop/deletion/spec changes, and graceful SIGTERM.

A worker may only get/watch its own resource and patch its own status (the per-task Role).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from capstan.api import GROUP, VERSION
from capstan.api.common import prune_events
from capstan.net.urlpolicy import redact_userinfo

TIMEOUT = 10
# A status write that fails for a transient reason (timeout, connection, 429/5xx) is retried with
# these pauses between tries (the last repeats) for up to REPORT_RETRY_SECONDS.
REPORT_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)
REPORT_RETRY_SECONDS = 60.0
# Exit code of a worker that did its work and stopped cleanly but lost a status write through every
# retry: the operator finishes the task (no failover, not `failed`) and says the status may be
# incomplete. Must equal capstan.operator.phases.EXIT_REPORT_FAILED (the worker does not import the operator).
EXIT_REPORT_FAILED = 5
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
# The operator creates a worker's RoleBinding beside its Pod (issue 11), and in any cluster RBAC sees
# a new binding a moment after it is created: a 403 this soon after start is waited out.
RBAC_SETTLE_SECONDS = 30.0
log = logging.getLogger("capstan.worker")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WorkerContext:
    """Who this worker is, from the env the operator put in its Pod."""

    plural: str
    name: str
    namespace: str
    task_id: str
    attempt: int
    pod_name: str
    work_dir: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerContext:
        env = dict(os.environ if env is None else env)
        missing = [k for k in ("CAPSTAN_KIND", "CAPSTAN_NAME", "CAPSTAN_NAMESPACE") if not env.get(k)]
        if missing:
            raise SystemExit(f"worker: missing environment {', '.join(missing)} (set by the operator's Pod)")
        work = Path(env.get("CAPSTAN_WORK_DIR") or env.get("TMPDIR") or "/tmp")
        return cls(plural=env["CAPSTAN_KIND"], name=env["CAPSTAN_NAME"], namespace=env["CAPSTAN_NAMESPACE"],
                   task_id=env.get("CAPSTAN_TASK_ID", ""), attempt=int(env.get("CAPSTAN_ATTEMPT", "1")),
                   pod_name=env.get("CAPSTAN_POD_NAME", ""), work_dir=work)

    @property
    def ha_prefix(self) -> str:
        """`ha<n>_` for recovered files of attempt n+1 (seed 002), empty for the first attempt."""
        return f"ha{self.attempt - 1}_" if self.attempt > 1 else ""


def is_transient(exc: BaseException) -> bool:
    """Worth another try: the API server was slow, unreachable or overloaded, not refusing."""
    if isinstance(exc, ApiException):
        return not exc.status or exc.status in TRANSIENT_HTTP
    return isinstance(exc, (OSError, urllib3.exceptions.HTTPError))


def api_client() -> kubernetes.client.ApiClient:
    """In-cluster token, else KUBECONFIG (the devstack pod runner writes one with the Pod's SA token)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


class OwnResource:
    """The worker's handle on its own custom resource."""

    def __init__(self, ctx: WorkerContext, client: kubernetes.client.ApiClient | None = None):
        self.ctx = ctx
        self.api = kubernetes.client.CustomObjectsApi(client or api_client())

    def get(self) -> dict[str, Any]:
        obj = self.api.get_namespaced_custom_object(GROUP, VERSION, self.ctx.namespace, self.ctx.plural,
                                                    self.ctx.name, _request_timeout=TIMEOUT)
        return dict(obj)  # type: ignore[call-overload]

    def patch_status(self, status: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.ctx.namespace, self.ctx.plural, self.ctx.name, {"status": status},
            _request_timeout=TIMEOUT)


class Worker:
    """Runs a worker body with stop handling; subclasses/callers provide `body(worker)`."""

    def __init__(self, ctx: WorkerContext, resource: OwnResource):
        self.ctx = ctx
        self.resource = resource
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.stop_requested_at: float | None = None  # wall clock: a recording ends there, not when a loop saw it
        self.spec: dict[str, Any] = {}
        self.generation = 0
        self._spec_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._annotation_listeners: list[Callable[[dict[str, str]], None]] = []
        self.annotations: dict[str, str] | None = None  # as last seen (annotations do not bump the generation)
        self.events: list[dict[str, Any]] = []  # our copy of status.events, the callback outbox
        self.delivered_seq = 0  # how far the operator has delivered it (status.callbacks.deliveredSeq)
        self.status_at_start: dict[str, Any] = {}  # what earlier attempts left in status (files, stopTime)
        # SIGTERM without a stop asked for (drain, eviction, preemption): store what we have, then
        # exit non-zero so the operator fails over (DESIGN §6) -- not a user stop.
        self.drained = False
        self._events_lock = threading.Lock()
        self.reports_lost = 0  # status writes given up after every retry
        self._events_unwritten = False  # the outbox's last state is not in the status yet
        self.report_retry_seconds = REPORT_RETRY_SECONDS
        self._started = time.monotonic()

    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            log.info("stopping: %s", reason)
            self.stop_reason = reason
            self.stop_requested_at = time.time()
            self.stop_event.set()

    def _on_sigterm(self) -> None:
        if not self.stop_event.is_set():
            self.drained = True
        self.request_stop("SIGTERM")

    def on_spec_change(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._spec_listeners.append(listener)

    def on_annotations_change(self, listener: Callable[[dict[str, str]], None]) -> None:
        """Called with the resource's annotations whenever they change after the first reading."""
        self._annotation_listeners.append(listener)

    def _retry(self, call: Callable[[], Any], what: str) -> tuple[bool, Any]:
        """Call the API server, retrying transient failures with backoff; (False, None) once given up."""
        deadline = time.monotonic() + self.report_retry_seconds
        for tries in range(1, 1000):
            try:
                return True, call()
            except Exception as exc:  # noqa: BLE001 - classified below; never fatal to the worker
                pause = REPORT_BACKOFF[min(tries, len(REPORT_BACKOFF)) - 1]
                settling = (isinstance(exc, ApiException) and exc.status == 403
                            and time.monotonic() - self._started < RBAC_SETTLE_SECONDS)
                if not (is_transient(exc) or settling) or time.monotonic() + pause > deadline:
                    log.warning("%s failed (try %d, giving up): %s", what, tries, exc)
                    return False, None
                log.warning("%s failed (try %d, retrying in %.1f s): %s", what, tries, pause, exc)
                time.sleep(pause)
        return False, None

    def _write(self, status: dict[str, Any], what: str) -> bool:
        """Patch our own status; False once given up.

        A merge patch of the same fields is idempotent, so a try that timed out after the API
        server applied it does no harm when repeated."""
        return self._retry(lambda: self.resource.patch_status(status), f"writing {what}")[0]

    def report(self, **status: Any) -> None:
        """Patch our own status (retried through transient failures); never fatal: the recording
        matters more. A write given up is counted, and turns a clean exit into EXIT_REPORT_FAILED.

        Messages become Events and `kubectl get` columns: credentials in URLs are dropped first."""
        if isinstance(status.get("message"), str):
            status["message"] = redact_userinfo(status["message"])
        result = status.get("result")
        if isinstance(result, dict) and isinstance(result.get("errorMessage"), str):
            status["result"] = {**result, "errorMessage": redact_userinfo(result["errorMessage"])}
        if not self._write(status, f"status ({', '.join(sorted(status))})"):
            self.reports_lost += 1

    def emit(self, event_type: int, payload: dict[str, Any]) -> None:
        """Append an event to the outbox (status.events) for the operator to deliver as a callback.

        Only the worker writes `events`, so the whole list is patched; it starts from what the
        resource holds, so a failover attempt continues the sequence. A write given up after its
        retries goes out with the next event (the list is written whole).
        """
        with self._events_lock:
            # delivered events leave the outbox (counts stay in status.callbacks): the status stays small
            self.events = prune_events(self.events, self.delivered_seq)
            seq = max((int(e.get("seq", 0)) for e in self.events), default=0) + 1
            self.events.append({"seq": seq, "type": event_type, "ts": int(time.time() * 1000),
                                "payload": payload})
            self._events_unwritten = not self._write({"events": list(self.events)},
                                                     f"event {event_type} (seq {seq})")

    @property
    def status_complete(self) -> bool:
        """Every status write and the whole outbox reached the API server."""
        return not self.reports_lost and not self._events_unwritten

    def _observe(self, obj: dict[str, Any]) -> None:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        delivered = ((obj.get("status") or {}).get("callbacks") or {}).get("deliveredSeq")
        self.delivered_seq = max(self.delivered_seq, int(delivered or 0))
        if meta.get("deletionTimestamp"):
            self.request_stop("resource deleted")
        elif spec.get("stop"):
            self.request_stop("spec.stop is true")
        generation = int(meta.get("generation") or 0)
        if generation != self.generation:
            self.generation, self.spec = generation, spec
            for listener in self._spec_listeners:
                listener(spec)
        annotations = dict(meta.get("annotations") or {})
        if self.annotations is not None and annotations != self.annotations:
            for annotation_listener in self._annotation_listeners:
                annotation_listener(annotations)
        self.annotations = annotations

    def _watch(self) -> None:
        """Follow our own resource (watch restricted to our name by fieldSelector, as the Role allows)."""
        while not self.stop_event.is_set():
            try:
                w = kubernetes.watch.Watch()
                for event in w.stream(self.resource.api.list_namespaced_custom_object, GROUP, VERSION,
                                      self.ctx.namespace, self.ctx.plural,
                                      field_selector=f"metadata.name={self.ctx.name}", timeout_seconds=30,
                                      _request_timeout=40):
                    if event["type"] == "DELETED":
                        self.request_stop("resource gone")
                    else:
                        self._observe(event["object"])
                    if self.stop_event.is_set():
                        w.stop()
                        break
            except Exception as exc:  # noqa: BLE001 - keep watching through API hiccups
                log.warning("watch of own resource failed: %s; retrying", exc)
                self.stop_event.wait(2)

    def run(self, body: Callable[[Worker], int]) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._on_sigterm())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop("SIGINT"))
        # A slow API server at start must not cost an attempt (exit 1 is a failover): retried like writes.
        read, obj = self._retry(self.resource.get, "reading the task")
        if not read:
            print("worker: could not read its task from the API server", file=sys.stderr)
            return 1
        self.status_at_start = dict(obj.get("status") or {})
        self.events = list(self.status_at_start.get("events") or [])
        self._observe(obj)
        threading.Thread(target=self._watch, name="own-resource-watch", daemon=True).start()
        code = body(self)
        if code == 0 and not self.status_complete:
            log.warning("stopped cleanly, but %d status writes were lost%s", self.reports_lost,
                        " and the outbox is not written" if self._events_unwritten else "")
            return EXIT_REPORT_FAILED
        return code
