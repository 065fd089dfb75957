"""The backlog of new queued tasks' first writes: done after urgent work (admissions), in creation
order, a few at a time, and never starved for long (issue 11: create → Pod for the first tasks)."""

from __future__ import annotations

import threading
import time

from capstan.operator.reconcile import state
from capstan.operator.reconcile.state import Backlog


def test_waits_for_urgent_work_then_runs_in_creation_order() -> None:
    backlog = Backlog(threads=1)
    ran: list[str] = []
    done = threading.Event()

    def item(name: str):
        def run() -> None:
            ran.append(name)
            if len(ran) == 3:
                done.set()
        return run

    with backlog.urgent():
        # added newest first; none runs while the urgent work is under way
        for name, created in (("c", "2026-12-02T10:00:03Z"), ("a", "2026-12-02T10:00:01Z"),
                              ("b", "2026-12-02T10:00:02Z")):
            backlog.add(name, created, item(name))
        time.sleep(0.3)
        assert ran == []
    assert done.wait(5)
    assert ran == ["a", "b", "c"]
    assert len(backlog) == 0


def test_an_item_added_twice_runs_once_and_a_failure_does_not_stop_the_rest() -> None:
    backlog = Backlog(threads=2)
    ran: list[str] = []
    done = threading.Event()

    def fails() -> None:
        ran.append("fails")
        raise RuntimeError("API timeout")

    with backlog.urgent():
        backlog.add("x", "1", fails)
        backlog.add("x", "1", fails)
        backlog.add("y", "2", lambda: (ran.append("y"), done.set()))
    assert done.wait(5)
    time.sleep(0.1)
    assert sorted(ran) == ["fails", "y"]


def test_urgent_work_that_never_ends_delays_the_backlog_by_a_bounded_time(monkeypatch) -> None:
    monkeypatch.setattr(state, "BACKLOG_MAX_WAIT", 0.5)
    backlog = Backlog(threads=1)
    done = threading.Event()
    with backlog.urgent():
        started = time.monotonic()
        backlog.add("a", "1", done.set)
        assert done.wait(5)
        assert 0.4 < time.monotonic() - started < 3
