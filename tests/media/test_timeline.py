"""The shared timeline: capture clock to ticks, and segments placed back by their <utc>."""

from __future__ import annotations

import pytest

from capstan.media.timeline import TS_HZ, CaptureClock, SegmentPlacer

T0 = 1714557600.0


def test_capture_times_become_ticks_from_the_first_one() -> None:
    clock = CaptureClock()
    assert clock.ticks(T0 + 2.0) == TS_HZ  # the first time is the start, one second of offset
    assert clock.ticks(T0 + 2.5) == TS_HZ + TS_HZ // 2
    assert clock.ticks(T0 + 1.0) is None  # before the start
    assert clock.wall(TS_HZ * 3) == pytest.approx(T0 + 4.0)
    assert clock.rescale(TS_HZ * 2, 48000) == 96000


def test_a_gap_in_capture_times_stays_a_gap() -> None:
    clock = CaptureClock(offset_seconds=0)
    ticks = [clock.ticks(T0 + t) for t in (0.0, 0.1, 5.0)]
    assert ticks == [0, 9000, 450000]


def test_continuing_segments_keep_their_exact_timeline() -> None:
    placer = SegmentPlacer(begin=T0)
    # a writer's segments: names rounded to ms, media times continuous from 1.0
    first = placer.offset(T0, 1.0)
    second = placer.offset(T0 + 2.0004, 3.0)  # the name is 0.4 ms off: continuity wins
    assert first == second == pytest.approx(-1.0)


def test_a_new_timeline_is_placed_by_its_name() -> None:
    placer = SegmentPlacer(begin=T0)
    placer.offset(T0, 1.0)
    # a failover attempt: a new writer whose media times start again at 1.0, 6 s later
    assert placer.offset(T0 + 6.0, 1.0) == pytest.approx(5.0)
    # and then it continues that timeline
    assert placer.offset(T0 + 8.001, 3.0) == pytest.approx(5.0)
