"""MP4 cut planning (2 GB / 24 h): pure, on packet sizes and times."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from capstan.media.cuts import MOOV_BYTES_PER_PACKET, MOOV_FIXED_BYTES, CutLimits, plan_cuts, starts_next_file

TB = {"video": Fraction(1, 90000), "audio": Fraction(1, 48000)}


@dataclass
class P:
    kind: str
    dts: int
    duration: int
    size: int
    keyframe: bool


def video(seconds: float, fps: int = 10, gop: int = 20, size: int = 1000) -> list[P]:
    step = 90000 // fps
    return [P("video", i * step, step, size, i % gop == 0) for i in range(round(seconds * fps))]


def test_cut_by_duration_on_keyframes() -> None:
    cuts = plan_cuts(video(10), TB, CutLimits(max_seconds=4.5), "video")
    assert [c.at for c in cuts] == [4.0, 8.0]  # keyframes every 2 s; 6 s would pass 4.5 s


def test_cut_by_size_keeps_each_file_below_the_limit() -> None:
    packets = video(10)
    limit = MOOV_FIXED_BYTES + 35 * (1000 + MOOV_BYTES_PER_PACKET)
    cuts = plan_cuts(packets, TB, CutLimits(max_bytes=limit), "video")
    assert [c.at for c in cuts] == [2.0, 4.0, 6.0, 8.0]
    files: list[list[P]] = [[]]
    pending = iter(cuts)
    upcoming = next(pending, None)
    for p in packets:
        if upcoming is not None and starts_next_file(p, float(p.dts * TB[p.kind]), upcoming, "video"):
            files.append([])
            upcoming = next(pending, None)
        files[-1].append(p)
    assert sum(len(f) for f in files) == len(packets)
    for f in files:
        assert f[0].keyframe
        assert MOOV_FIXED_BYTES + sum(p.size + MOOV_BYTES_PER_PACKET for p in f) <= limit


def test_a_gop_larger_than_the_limit_is_cut_at_the_next_keyframe() -> None:
    cuts = plan_cuts(video(6, gop=30), TB, CutLimits(max_seconds=1.0), "video")
    assert [c.at for c in cuts] == [3.0]


def test_audio_only_cuts_anywhere() -> None:
    packets = [P("audio", i * 1024, 1024, 200, False) for i in range(200)]
    cuts = plan_cuts(packets, TB, CutLimits(max_seconds=1.0), "audio")
    assert len(cuts) == 4 and all(abs(b.at - a.at - 1.0) < 0.03 for a, b in zip(cuts, cuts[1:], strict=False))
