"""SingleFlight: one thread at a time does the work; a caller that finds it under way returns at
once, and its request is one more round by the thread at work (never lost, never waited for)."""

from __future__ import annotations

import threading

import pytest

from capstan.operator.reconcile.state import SingleFlight


def test_a_request_left_during_a_round_is_one_more_round_by_the_thread_at_work() -> None:
    flight = SingleFlight()
    inside, release = threading.Event(), threading.Event()
    rounds: list[str] = []

    def slow() -> bool:
        rounds.append(threading.current_thread().name)
        if len(rounds) == 1:
            inside.set()
            release.wait(5)
        return len(rounds) == 1

    first = threading.Thread(target=lambda: results.append(flight.run(slow)), name="first")
    results: list[bool] = []
    first.start()
    assert inside.wait(5)
    # a second caller while the first round runs: it returns at once, without running the work
    assert flight.run(slow) is False and rounds == ["first"]
    release.set()
    first.join(5)
    assert rounds == ["first", "first"]  # the request became one more round of the thread at work
    assert results == [True]  # any round's True is reported


def test_work_that_raises_releases_the_flight() -> None:
    flight = SingleFlight()

    def boom() -> bool:
        raise RuntimeError("api timeout")

    with pytest.raises(RuntimeError):
        flight.run(boom)
    assert flight.run(lambda: True) is True
