"""A worker started beside its RoleBinding (the operator creates both at once, issue 11) waits out
a 403 at its start, and only there: later a 403 is a refusal, not a delay."""

from __future__ import annotations

from pathlib import Path

from kubernetes.client.exceptions import ApiException

from capstan.worker import base
from capstan.worker.base import Worker, WorkerContext


class Refusing:
    """The worker's own resource while RBAC has not seen its binding yet: `refusals` 403s, then the task."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.calls = refusals, 0

    def get(self) -> dict:
        self.calls += 1
        if self.calls <= self.refusals:
            raise ApiException(status=403, reason="Forbidden")
        return {"metadata": {"name": "t"}, "status": {}}


def _worker(tmp_path: Path, resource: Refusing) -> Worker:
    ctx = WorkerContext("cloudrecordings", "t", "ns", "task-1", 1, "t-crec-a1", tmp_path)
    return Worker(ctx, resource)  # type: ignore[arg-type]


def test_a_403_just_after_start_is_waited_out(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(base, "REPORT_BACKOFF", (0.01,))
    resource = Refusing(refusals=3)
    ok, obj = _worker(tmp_path, resource)._retry(resource.get, "reading the task")
    assert ok and obj["metadata"]["name"] == "t" and resource.calls == 4


def test_a_403_later_is_a_refusal(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(base, "REPORT_BACKOFF", (0.01,))
    resource = Refusing(refusals=3)
    worker = _worker(tmp_path, resource)
    worker._started -= base.RBAC_SETTLE_SECONDS + 1
    ok, _ = worker._retry(resource.get, "reading the task")
    assert not ok and resource.calls == 1
