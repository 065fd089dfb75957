"""Helpers of the web-recording tests: a stand-in for the worker's API side, a bucket on local disk,
the test page, and readers of what was recorded (size, duration, counters, colours, tone)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from capstan.api.webrecording import WebRecordingSpec
from capstan.net.urlpolicy import UrlPolicy
from capstan.storage.uploader import Uploader
from capstan.worker.base import WorkerContext

from .page import PAGE_HOST, PageServer, colour_index, read_counter

POLICY = UrlPolicy.from_env({"CAPSTAN_URL_ALLOW_CIDRS": f"{PAGE_HOST}/32"})
# Names the tests resolve themselves, so no DNS query leaves the machine (the browser's own
# background requests, e.g. its component updater, get "does not resolve").
NAMES = {"private.capstan.test": ["10.0.0.1"], "page.capstan.test": [PAGE_HOST]}


def resolve(host: str, port: int) -> list[str]:
    if host in NAMES:
        return list(NAMES[host])
    raise OSError(f"{host}: not a test name")
NEEDS = ("Xvfb", "pulseaudio", "parec", "chromium")
missing = [b for b in NEEDS if shutil.which(b) is None]
media = pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)} "
                                                 "(devstack/install-system-deps.sh)")
os.environ.setdefault("CAPSTAN_PANORAMA_FPS", "15")  # two shared cores: the bench runs 30


class FakeWorker:
    """The parts of capstan.worker.base.Worker a session uses, recorded."""

    def __init__(self, work_dir: Path, spec: dict[str, Any]) -> None:
        self.ctx = WorkerContext(plural="webrecordings", name="w", namespace="ns", task_id="task-1", attempt=1,
                                 pod_name="w-wrec-a1", work_dir=work_dir)
        self.spec = spec
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.stop_requested_at: float | None = None
        self.reports: list[dict[str, Any]] = []
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.annotation_listeners: list[Callable[[dict[str, str]], None]] = []
        self.annotations: dict[str, str] = {}

    def on_spec_change(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self.listeners.append(listener)

    def on_annotations_change(self, listener: Callable[[dict[str, str]], None]) -> None:
        self.annotation_listeners.append(listener)

    def annotate(self, **annotations: str) -> None:
        self.annotations = {**self.annotations, **annotations}
        for listener in self.annotation_listeners:
            listener(self.annotations)

    def change(self, **fields: Any) -> None:
        self.spec = {**self.spec, **fields}
        for listener in self.listeners:
            listener(self.spec)

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.stop_requested_at = time.time()
        self.stop_event.set()

    def report(self, **status: Any) -> None:
        self.reports.append(status)

    def emit(self, event_type: int, payload: dict[str, Any]) -> None:
        pass

    def latest(self, key: str) -> Any:
        for r in reversed(self.reports):
            if key in r:
                return r[key]
        return None


@dataclass
class _Stat:
    size: int


@dataclass
class DiskBucket:
    """fput_object / stat_object of a MinIO client, on a local directory."""

    root: Path
    stored: list[str] = field(default_factory=list)

    def fput_object(self, bucket: str, key: str, path: str, content_type: str = "") -> None:
        dest = self.root / bucket / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        self.stored.append(key)

    def stat_object(self, bucket: str, key: str) -> _Stat:
        return _Stat((self.root / bucket / key).stat().st_size)

    def path(self, key: str) -> Path:
        return self.root / "bucket" / key


@dataclass
class Run:
    code: int
    worker: FakeWorker
    bucket: DiskBucket
    took: float
    session: Any

    def file(self) -> Path:
        files = self.worker.latest("files") or []
        assert len(files) == 1, files
        return self.bucket.path(files[0]["fileName"])


def spec_for(url: str, **fields: Any) -> dict[str, Any]:
    output = {"storage": {"endpoint": "127.0.0.1:9", "bucket": "bucket", "credentialsSecretRef": {"name": "s3"}},
              **fields.pop("output", {})}
    return {"recordUrl": url, "width": 640, "height": 360, "output": output, **fields}


def record(tmp: Path, spec: dict[str, Any], script: Callable[[FakeWorker], None] | None = None,
           env: dict[str, str] | None = None, timeout: float = 120) -> Run:
    """Run one session in this process; ``script`` acts on the worker meanwhile (changes, stop)."""
    from capstan.panorama.session import WebRecordingSession

    worker = FakeWorker(tmp / "work", spec)
    bucket = DiskBucket(tmp / "store")
    uploader = Uploader(bucket, "bucket", tmp / "work" / "spool")
    session = WebRecordingSession(worker, WebRecordingSpec.model_validate(spec), uploader=uploader,  # type: ignore[arg-type]
                                  policy=POLICY, env=env or {}, resolve=resolve)
    result: list[int] = []
    began = time.monotonic()
    thread = threading.Thread(target=lambda: result.append(session.run()), daemon=True)
    thread.start()
    if script is not None:
        script(worker)
    thread.join(timeout)
    uploader.stop()
    assert result, "the session did not end"
    return Run(result[0], worker, bucket, time.monotonic() - began, session)


def wait_report(worker: FakeWorker, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60) -> float:
    """Wait for a report matching ``predicate``; the time it was seen."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        for r in worker.reports[seen:]:
            if predicate(r):
                return time.time()
        seen = len(worker.reports)
        time.sleep(0.05)
    raise AssertionError(f"no such report within {timeout} s: {worker.reports[-5:]}")


def recording(worker: FakeWorker, timeout: float = 60) -> float:
    return wait_report(worker, lambda r: r.get("phase") == "recording", timeout)


@dataclass
class Media:
    width: int
    height: int
    duration: float
    frames: list[tuple[float, int, int | None]]  # (time, counter, colour index)
    audio: np.ndarray  # mono float samples
    rate: int


def read_media(path: Path | str, options: dict[str, str] | None = None) -> Media:
    with av.open(str(path), options=options or {}) as c:
        v = c.streams.video[0]
        width, height = v.codec_context.width, v.codec_context.height
        duration = float(c.duration / av.time_base) if c.duration else 0.0
    frames: list[tuple[float, int, int | None]] = []
    with av.open(str(path), options=options or {}) as c:
        for f in c.decode(video=0):
            rgb = f.to_ndarray(format="rgb24")
            frames.append((float(f.time or 0), read_counter(rgb), colour_index(rgb)))
    chunks: list[np.ndarray] = []
    rate = 48000
    with av.open(str(path), options=options or {}) as c:
        if c.streams.audio:
            rate = c.streams.audio[0].codec_context.sample_rate
            for f in c.decode(audio=0):
                chunks.append(f.to_ndarray().reshape(f.to_ndarray().shape[0], -1).mean(axis=0))
    audio = np.concatenate(chunks) if chunks else np.zeros(0)
    return Media(width, height, duration, frames, audio, rate)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    window = samples[len(samples) // 4: len(samples) // 4 + rate]  # one second from the middle
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    return float(np.argmax(spectrum[1:]) + 1) * rate / len(window)


@pytest.fixture
def page() -> Any:
    server = PageServer()
    yield server
    server.close()
