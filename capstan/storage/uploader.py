"""Ordered, retrying upload of finished files to S3 (DESIGN §6).

The recorder closes a segment, rewrites its playlist and hands both here. One background thread
uploads them in the order they were queued, so a playlist never reaches the bucket before the
segments it lists. A failed upload is retried with capped exponential backoff, forever: during a
storage outage files simply wait on local disk. A local file is deleted only after the object
was stored and a ``stat`` confirmed its size, so nothing is lost while the storage is away.

Each queued file has a small journal entry in ``<spool_dir>/.journal``; an Uploader started on
the same spool directory resumes those uploads. The recorder's spool is the task's PVC, which every
attempt mounts, so a failover attempt resumes what the dead one left (before it records anything).

A newer version of a key that is still waiting (a playlist rewritten while the storage is down)
replaces the older one: only the newest playlist is uploaded, after everything queued before it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capstan.worker import metrics

log = logging.getLogger(__name__)

MIN_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
# While the storage keeps failing, on_error (TRTC event 308) is raised at most this often.
ERROR_REPORT_INTERVAL_SECONDS = 30.0
JOURNAL_DIR = ".journal"

OnError = Callable[[str, str], None]
OnStored = Callable[[str, int], None]


@dataclass
class Upload:
    seq: int
    local_path: str
    key: str
    content_type: str
    attempts: int = 0
    queued_at: float = field(default_factory=time.monotonic)
    spooled_bytes: int | None = None  # its size while counted in capstan_worker_spool_bytes


@dataclass
class UploadStats:
    queued: int = 0
    stored: int = 0
    stored_bytes: int = 0
    failures: int = 0  # failed attempts (each retry counts)
    superseded: int = 0  # waiting versions replaced by a newer version of the same key
    dropped: int = 0  # local file vanished before it could be uploaded
    errors_reported: int = 0
    last_error: tuple[str, str] | None = None


class _SizeMismatch(Exception):
    pass


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(code, message) for TRTC's 308 payload: the storage's own error code when it sent one."""
    from minio.error import InvalidResponseError, S3Error, ServerError

    if isinstance(exc, S3Error):
        return exc.code or "S3Error", exc.message or str(exc)
    if isinstance(exc, ServerError):
        return "ServerError", str(exc)
    if isinstance(exc, InvalidResponseError):
        return "InvalidResponse", str(exc)
    if isinstance(exc, _SizeMismatch):
        return "SizeMismatch", str(exc)
    if isinstance(exc, FileNotFoundError):
        return "LocalFileMissing", str(exc)
    reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps the real cause
    if isinstance(reason, BaseException):
        exc = reason
    module = type(exc).__module__ or ""
    network = module.startswith(("urllib3", "http.client", "socket", "ssl"))
    if network or isinstance(exc, ConnectionError | TimeoutError):
        return "NetworkError", f"{type(exc).__name__}: {exc}"[:500]
    return type(exc).__name__, str(exc)[:500]


class Uploader:
    def __init__(
        self,
        client: Any,
        bucket: str,
        spool_dir: str | os.PathLike[str],
        *,
        on_error: OnError | None = None,
        on_stored: OnStored | None = None,
        min_backoff: float = MIN_BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        error_interval: float = ERROR_REPORT_INTERVAL_SECONDS,
        start: bool = True,
    ) -> None:
        self.client, self.bucket = client, bucket
        self.spool_dir = Path(spool_dir)
        self.journal_dir = self.spool_dir / JOURNAL_DIR
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.on_error, self.on_stored = on_error, on_stored
        self.min_backoff, self.max_backoff, self.error_interval = min_backoff, max_backoff, error_interval
        self.stats = UploadStats()
        self._queue: deque[Upload] = deque()
        self._inflight: Upload | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._seq = 0
        self._failing_since: float | None = None
        self._last_report = float("-inf")
        self._unreported = 0
        self._resume_journal()
        self._thread = threading.Thread(target=self._run, name=f"uploader-{bucket}", daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        """Start uploading (for an Uploader made with ``start=False``)."""
        if not self._thread.is_alive():
            self._thread.start()

    # --- producer side -----------------------------------------------------------------------

    def put(self, local_path: str | os.PathLike[str], key: str, content_type: str = "application/octet-stream") -> None:
        """Queue a file that is complete on local disk; the Uploader owns (and deletes) it now."""
        path = os.fspath(local_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        with self._cond:
            if self._stopping:
                raise RuntimeError("uploader is stopped")
            self._seq += 1
            item = Upload(self._seq, os.path.abspath(path), key, content_type)
            self._write_journal(item)
            self._supersede(key)
            self._queue.append(item)
            self._spooled(item)
            self.stats.queued += 1
            self._cond.notify_all()
        # The worker's own record of every closed file (chaos tests count these against the bucket).
        log.info("spooled %s (seq %d)", key, item.seq)

    def put_bytes(self, data: bytes, key: str, content_type: str = "application/octet-stream") -> None:
        """Write ``data`` to a fresh spool file, then :meth:`put` it (used for playlists)."""
        with self._cond:
            self._seq += 1
            name = f"{self._seq:012d}-{key.rsplit('/', 1)[-1]}"
        path = self.spool_dir / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.put(path, key, content_type)

    def pending(self) -> list[str]:
        """Keys not yet stored, in upload order (the one being uploaded first)."""
        with self._cond:
            items = ([self._inflight] if self._inflight else []) + list(self._queue)
            return [i.key for i in items]

    def pending_files(self) -> list[str]:
        with self._cond:
            items = ([self._inflight] if self._inflight else []) + list(self._queue)
            return [i.local_path for i in items]

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is stored; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._inflight is not None:
                if not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
            return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the thread. What could not be stored stays on disk and in the journal."""
        done = self.flush(timeout)
        self.stop()
        return done

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- worker side -------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                item = self._queue.popleft()
                self._inflight = item
            try:
                size = self._upload(item)
            except FileNotFoundError as exc:
                self._failed(item, exc)
                self._finish(item, stored=None)
                failures = 0
                continue
            except Exception as exc:  # noqa: BLE001 - every failure is retried
                failures += 1
                metrics.UPLOAD_RETRIES.inc()
                self._failed(item, exc)
                with self._cond:
                    self._queue.appendleft(item)
                    self._inflight = None
                    self._cond.notify_all()
                    delay = min(self.max_backoff, self.min_backoff * 2 ** min(failures - 1, 30))
                    delay *= random.uniform(0.8, 1.0)
                    end = time.monotonic() + delay
                    while not self._stopping and (left := end - time.monotonic()) > 0:
                        self._cond.wait(left)
                continue
            failures = 0
            self._finish(item, stored=size)

    def _upload(self, item: Upload) -> int:
        item.attempts += 1
        size = os.path.getsize(item.local_path)
        self.client.fput_object(self.bucket, item.key, item.local_path, content_type=item.content_type)
        stat = self.client.stat_object(self.bucket, item.key)
        if stat.size != size:
            raise _SizeMismatch(f"{item.key}: stored {stat.size} bytes, local file has {size}")
        return size

    def _finish(self, item: Upload, stored: int | None) -> None:
        if stored is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(item.local_path)
        self._remove_journal(item)
        self._unspooled(item)
        if stored is not None:
            metrics.UPLOADED_BYTES.inc(stored)
            metrics.UPLOADED_OBJECTS.labels(metrics.object_type(item.key)).inc()
        with self._cond:
            self._inflight = None
            if stored is not None:
                self.stats.stored += 1
                self.stats.stored_bytes += stored
                self._failing_since = None
            else:
                self.stats.dropped += 1
            self._cond.notify_all()
        if stored is not None and self.on_stored is not None:
            try:
                self.on_stored(item.key, stored)
            except Exception:  # noqa: BLE001 - a callback must not stop uploads
                log.exception("on_stored hook failed")

    def _failed(self, item: Upload, exc: BaseException) -> None:
        code, message = describe_error(exc)
        now = time.monotonic()
        with self._cond:
            self.stats.failures += 1
            self.stats.last_error = (code, message)
            if self._failing_since is None:
                self._failing_since = now
            # At most one report per interval, whatever succeeded in between (flapping storage used to
            # send one per failure); a report counts the failures it stands for.
            self._unreported += 1
            report = now - self._last_report >= self.error_interval
            if report:
                self._last_report = now
                self.stats.errors_reported += 1
                if self._unreported > 1:
                    message = f"{message} ({self._unreported} failed uploads since the last report)"
                self._unreported = 0
        log.warning("upload of %s failed (attempt %d): %s %s", item.key, item.attempts, code, message)
        if report and self.on_error is not None:
            try:
                self.on_error(code, message)
            except Exception:  # noqa: BLE001
                log.exception("on_error hook failed")

    # --- queue housekeeping ------------------------------------------------------------------

    def _supersede(self, key: str) -> None:
        """Drop waiting (not in-flight) versions of ``key``; caller holds the lock."""
        for old in [i for i in self._queue if i.key == key]:
            self._queue.remove(old)
            with contextlib.suppress(FileNotFoundError):
                os.remove(old.local_path)
            self._remove_journal(old)
            self._unspooled(old)
            self.stats.superseded += 1

    @staticmethod
    def _spooled(item: Upload) -> None:
        try:
            item.spooled_bytes = os.path.getsize(item.local_path)
        except OSError:
            item.spooled_bytes = 0
        metrics.SPOOL_BYTES.inc(item.spooled_bytes)
        metrics.SPOOL_FILES.inc()

    @staticmethod
    def _unspooled(item: Upload) -> None:
        if item.spooled_bytes is not None:
            metrics.SPOOL_BYTES.dec(item.spooled_bytes)
            metrics.SPOOL_FILES.dec()
            item.spooled_bytes = None

    def _journal_path(self, item: Upload) -> Path:
        return self.journal_dir / f"{item.seq:012d}.json"

    def _write_journal(self, item: Upload) -> None:
        path = self._journal_path(item)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"path": item.local_path, "key": item.key, "contentType": item.content_type}))
        os.replace(tmp, path)

    def _remove_journal(self, item: Upload) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._journal_path(item))

    def _resume_journal(self) -> None:
        for entry in sorted(self.journal_dir.glob("*.json")):
            try:
                seq = int(entry.stem)
                data = json.loads(entry.read_text())
                item = Upload(seq, data["path"], data["key"], data.get("contentType", "application/octet-stream"))
            except (ValueError, KeyError, OSError):
                log.warning("ignoring unreadable journal entry %s", entry)
                continue
            self._seq = max(self._seq, seq)
            if not os.path.isfile(item.local_path):  # deleted after it was stored; only the entry was left
                entry.unlink(missing_ok=True)
                continue
            self._supersede(item.key)
            self._queue.append(item)
            self._spooled(item)
            self.stats.queued += 1
        for stale in self.journal_dir.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        if self._queue:
            log.info("resumed %d spooled files from the journal", len(self._queue))
