"""What one operator process remembers between events, kept in kopf's memo (not module globals),
so two operators in one process never share it.

The watch can deliver a task's status later than the operator's own write of it; deciding on
such a view re-admits the task and writes `phase: normal` over a worker's `idle` (issue 11).
So each task remembers the resourceVersion of the operator's last write, and a view older than
that is not decided on: the watch event of that write is on its way and brings a newer one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from capstan.api import KINDS
from capstan.api.common import CallbackStatus
from capstan.operator.admission import QueueEntry, Quota
from capstan.operator.callbacks import Dispatcher
from capstan.operator.config import OperatorConfig

ADMISSION_THREADS = 64  # an admission pass waits for the API server most of its time
CHILDREN_THREADS = 64  # an attempt's children are created in parallel rounds (reconcile.worker)
BACKLOG_THREADS = 4  # first writes of new queued tasks at once (Backlog)
BACKLOG_MAX_WAIT = 2.0  # seconds the backlog yields to urgent work before it writes anyway
log = logging.getLogger(__name__)
# (body, type Normal|Warning, reason, message): a Kubernetes Event about the task.
EventPoster = Callable[[dict[str, Any], str, str, str], None]


def resource_version(body: dict[str, Any]) -> int:
    """The object's resourceVersion as a number (etcd's revision; the API server's watch cache
    orders by it too). 0 when absent or not numeric, which never counts as stale."""
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class SingleFlight:
    """Work that one thread at a time does: a caller finding it under way leaves a request for one
    more round and returns at once, instead of waiting (the flag is read after the lock is released,
    so a request left meanwhile is never lost)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requested = False

    def run(self, work: Callable[[], bool | None]) -> bool:
        """Rounds of `work` until no request is left; whether any round returned True (False when
        another thread was at it: it does the round asked for)."""
        self.requested = True
        result = False
        while self.requested:
            if not self.lock.acquire(blocking=False):
                return result
            try:
                self.requested = False
                result = bool(work()) or result
            finally:
                self.lock.release()
        return result


class Backlog:
    """The first write of a new task that has to wait in the queue (its taskId, `Queued`, its place),
    done after the urgent work: admissions and worker Pods being created.

    A burst of creates beyond the quota made every queued task's accept write compete with the
    admissions for the API server, so the first tasks' Pods came tens of seconds late (issue 11).
    Deferring those writes costs the queued tasks nothing (they wait anyway; their place is in the
    index from the create on, so admission order is unchanged); `kubectl get` shows them without
    a phase a little longer. Items run in creation order, `BACKLOG_THREADS` at once, whenever no
    urgent work is under way, or after `BACKLOG_MAX_WAIT` seconds anyway.
    """

    def __init__(self, threads: int = BACKLOG_THREADS) -> None:
        self._items: dict[str, tuple[str, Callable[[], Any]]] = {}  # uid -> (created, run)
        self._cond = threading.Condition()
        self._urgent = 0
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="backlog")
        self._threads = threads
        self._thread: threading.Thread | None = None

    def add(self, uid: str, created: str, run: Callable[[], Any]) -> None:
        """Queue `run` under `uid` (an item already waiting under it is replaced: they fold into one)."""
        with self._cond:
            self._items[uid] = (created, run)
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="backlog", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """Around urgent work: the backlog waits while one is open."""
        self._enter(1)
        try:
            yield
        finally:
            self._enter(-1)

    def _enter(self, step: int) -> None:
        with self._cond:
            self._urgent += step
            self._cond.notify_all()

    def _drain(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                deadline = time.monotonic() + BACKLOG_MAX_WAIT
                while self._urgent and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                batch = sorted(self._items.items(), key=lambda item: item[1][0])[:self._threads]
                for uid, _ in batch:
                    del self._items[uid]
            for done in [self._pool.submit(run) for _, (_, run) in batch]:
                try:
                    done.result()
                except Exception:  # noqa: BLE001 - the task's next event or the retry takes it up
                    log.exception("a queued task's first write failed")


@dataclass
class TaskMemory:
    """One task as this process knows it. Guarded by `passes.lock`: a task event, a Pod event and
    the timer of the same task may run at once in kopf's handler threads."""

    uid: str
    passes: SingleFlight = field(default_factory=SingleFlight)  # the reconcile passes (task.reconcile)
    retry_timer: threading.Timer | None = None  # a failed pass's next try (reconcile.retry)
    failed_passes: int = 0  # failed passes in a row: the retry's backoff
    written_rv: int = 0  # resourceVersion after this process's last write of the task
    body: dict[str, Any] | None = None  # the newest view: from the watch or from a write
    created_attempt: int = 0  # the attempt whose Pod this process created (the Pod watch may lag)
    gone_attempts: set[int] = field(default_factory=set)  # attempts whose Pod the watch saw deleted
    callbacks: CallbackStatus | None = None  # delivery state last written here
    shown_place: int | None = None  # queue place last written into status.message

    def is_stale(self, body: dict[str, Any]) -> bool:
        return resource_version(body) < self.written_rv

    def see(self, body: dict[str, Any]) -> None:
        """Keep the newer of the remembered view and `body`."""
        if self.body is None or resource_version(body) >= resource_version(self.body):
            self.body = body


@dataclass
class KindState:
    """The tasks of one kind: their memories by (namespace, name), and the quota."""

    quota: Quota
    quota_lock: threading.Lock = field(default_factory=threading.Lock)
    tasks: dict[tuple[str, str], TaskMemory] = field(default_factory=dict)
    by_uid: dict[str, TaskMemory] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # One thread at a time admits the queue's head (reconcile.task.admit_waiting); the others only
    # ask for another round, so a burst of events does not become a convoy on the same tasks' locks.
    admission: SingleFlight = field(default_factory=SingleFlight)
    retry_lock: threading.Lock = field(default_factory=threading.Lock)
    backlog: Backlog = field(default_factory=Backlog)  # new queued tasks' first writes
    admitting: set[str] = field(default_factory=set)  # uids whose admission pass is under way (quota_lock)
    # What the quota needs of every task the watch shows, by uid: written by the queue index
    # handler (kopf fills every index before it runs any handler), removed on the DELETED event.
    queue: dict[str, QueueEntry] = field(default_factory=dict)

    def memory(self, namespace: str, name: str, uid: str) -> TaskMemory:
        """This task's memory; a new one when the name now belongs to another object."""
        with self._lock:
            mem = self.tasks.get((namespace, name))
            if mem is None or mem.uid != uid:
                if mem is not None:
                    self.by_uid.pop(mem.uid, None)
                mem = self.tasks[(namespace, name)] = self.by_uid[uid] = TaskMemory(uid)
            return mem

    def find(self, namespace: str, name: str) -> TaskMemory | None:
        with self._lock:
            return self.tasks.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            mem = self.tasks.pop((namespace, name), None)
            if mem is not None:
                self.by_uid.pop(mem.uid, None)
        if mem is not None:
            with self.quota_lock:
                self.quota.forget(mem.uid)
            with self.retry_lock:
                if mem.retry_timer is not None:
                    mem.retry_timer.cancel()


@dataclass
class OperatorState:
    """Everything the reconcile needs besides the object: configuration, memories, Event poster."""

    config: OperatorConfig
    post_event: EventPoster
    kinds: dict[str, KindState] = field(default_factory=dict)
    callbacks: Dispatcher = field(default_factory=Dispatcher)  # deliveries, off kopf's handler threads
    # Admission rounds start the queue's head in parallel (reconcile.task.admit_waiting).
    admission_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(ADMISSION_THREADS, thread_name_prefix="admit"))
    children_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(CHILDREN_THREADS, thread_name_prefix="children"))

    @classmethod
    def create(cls, config: OperatorConfig, post_event: EventPoster) -> OperatorState:
        return cls(config, post_event, {info.plural: KindState(Quota(config.max_tasks)) for info in KINDS})
