"""A task's status stays small (issue 9 item 3): a 24 h recording whose storage flaps all day used to
send a 308 per failure and keep every event, until the object neared etcd's 1.5 MiB limit and no
status patch went through. Driven through the real parts (the uploader's error reporting, the
worker's outbox, the operator's delivery state) on a simulated clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from capstan.api.common import CallbackStatus, prune_events
from capstan.recorder.ledger import KeptFile
from capstan.storage import uploader as uploader_module
from capstan.storage.uploader import Upload, Uploader
from capstan.worker.base import Worker, WorkerContext

DAY = 24 * 3600
STEP = 2.0  # a 2 s segment fails, the next one is stored: the storage flaps all day


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryResource:
    """The worker's own resource, in memory: merge-patches of its status."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.patches = 0

    def patch_status(self, status: dict[str, Any]) -> None:
        self.status.update(status)
        self.patches += 1


def test_a_day_of_flapping_storage_keeps_the_status_under_100_kib(tmp_path: Path, monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(uploader_module.time, "monotonic", clock)
    resource = MemoryResource()
    ctx = WorkerContext("cloudrecordings", "day", "ns", "task-1", 1, "day-crec-a1", tmp_path)
    worker = Worker(ctx, resource)  # type: ignore[arg-type]
    delivery = CallbackStatus()
    up = Uploader(object(), "b", tmp_path / "spool", start=False,
                  on_error=lambda code, message: worker.emit(308, {"Code": code, "Message": message}))
    item = Upload(1, str(tmp_path / "gone.ts"), "rec/task-1/x.ts", "video/mp2t")
    steps = int(DAY / STEP)
    for _ in range(steps):
        clock.now += STEP
        up._failed(item, ConnectionError("connection reset by peer " + "x" * 200))
        up._finish(item, stored=1000)
        # the operator delivers what is due; the worker sees deliveredSeq in its watch
        last = max((int(e["seq"]) for e in worker.events), default=0)
        if last > delivery.delivered_seq:
            delivery = delivery.model_copy(update={"delivered_seq": last,
                                                   "delivered": delivery.delivered + last - delivery.delivered_seq})
            worker._observe({"status": {"callbacks": delivery.model_dump(by_alias=True)}})

    sent_308 = delivery.delivered
    assert sent_308 <= DAY / uploader_module.ERROR_REPORT_INTERVAL_SECONDS + 1, sent_308  # coalesced
    assert sent_308 >= DAY / uploader_module.ERROR_REPORT_INTERVAL_SECONDS * 0.9  # and still reported
    assert "failed uploads since the last report" in worker.events[-1]["payload"]["Message"]

    # what else a long single-stream task carries: 3 anchors x main/aux x audio/video over 4 attempts
    files = [KeptFile(f"rec/task-1/{f'ha{ha}_' if ha else ''}1400000000_cm9vbQ..__UserId_s_{u}__UserId_e_"
                      f"{m}_{t}.m3u8", u, t, m, 1_800_000_000_000, 50_000_000, 86400.0, stored=True).to_status(None)
             for ha in range(4) for u in ("YWxpY2U.", "Ym9i", "Y2Fyb2w.") for m in ("main", "aux")
             for t in ("audio", "video")]
    conditions = [{"type": t, "status": "True", "reason": "R", "message": "m" * 200, "lastTransitionTime": "x",
                   "observedGeneration": 1} for t in ("Admitted", "Queued", "StreamLimitReached", "Finished")]
    status = {**resource.status, "callbacks": delivery.model_dump(by_alias=True), "files": files,
              "conditions": conditions, "taskId": "task-1", "phase": "recording", "message": "m" * 1000}
    size = len(json.dumps(status).encode())
    assert size < 100 * 1024, f"status of a day's flapping recording is {size} bytes"
    assert len(status["events"]) <= 21


def test_pruning_keeps_the_sequence_and_everything_undelivered() -> None:
    events = [{"seq": n, "type": 308, "ts": 0, "payload": {}} for n in range(1, 101)]
    kept = prune_events(events, delivered_seq=90, keep=5)
    assert [e["seq"] for e in kept] == [86, 87, 88, 89, 90, *range(91, 101)]
    assert [e["seq"] for e in prune_events(events, delivered_seq=100, keep=0)] == [100]  # the seq continues
