"""Janus backend pieces that need no server: stream mapping and RTP-to-wall-clock frame times."""

from __future__ import annotations

from capstan.rooms.base import MediaId, RemoteTrack, TrackKind
from capstan.rooms.fanout import CLOCK_DRIFT, WallClock
from capstan.rooms.janus import tracks_of


def test_tracks_of_a_publisher() -> None:
    publisher = {"id": "alice", "display": "Alice", "streams": [
        {"type": "video", "mid": "0", "description": "main"},
        {"type": "audio", "mid": "1"},  # no description: main
        {"type": "video", "mid": "2", "description": "aux"},
        {"type": "data", "mid": "3"},
        {"type": "video", "mid": "4", "disabled": True},
    ]}
    assert tracks_of(publisher) == {
        "0": RemoteTrack("alice", MediaId.MAIN, TrackKind.VIDEO, "alice/0"),
        "1": RemoteTrack("alice", MediaId.MAIN, TrackKind.AUDIO, "alice/1"),
        "2": RemoteTrack("alice", MediaId.AUX, TrackKind.VIDEO, "alice/2"),
    }


def test_wall_clock_keeps_gaps_and_takes_the_least_delayed_frame() -> None:
    clock = WallClock()
    assert clock.time(0.0, 1000.3) == 1000.3
    assert clock.time(0.1, 1000.35) == 1000.35  # less delayed than the first: the offset moves down
    t = clock.time(0.2, 1000.6)  # delayed (jitter): its capture time, not its arrival
    assert abs(t - 1000.45) < 1e-3
    # a 5 s gap in the RTP timeline stays a 5 s gap, even when the frames after it arrive in a burst
    t2 = clock.time(5.2, 1005.9)
    assert abs((t2 - t) - 5.0) < 5 * CLOCK_DRIFT + 1e-9
    assert clock.time(None, 1234.5) == 1234.5  # no timestamp: receive time


def test_wall_clock_follows_a_slow_sender_clock() -> None:
    clock = WallClock()
    # the sender's clock runs 0.02 % slow: media time advances 0.9998 s per real second
    for second in range(0, 3600, 10):
        t = clock.time(second * 0.9998, 1000.0 + second + 0.05)
        assert t <= 1000.0 + second + 0.05
    assert 1000.0 + 3590 + 0.05 - t < 0.1  # still close after an hour (the drift alone would be 0.72 s)
