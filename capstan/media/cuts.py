"""Where a long recording is cut into numbered MP4 files (seed 002: a new file at 2 GB or 24 h).

Pure (no I/O): it sees packet sizes, times and keyframe flags, never media. A first pass over
the packets plans the cuts; the writing pass asks :func:`starts_next_file` for each packet, so
a file always begins on a decodable picture and nothing is lost or doubled at a cut.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

MP4_MAX_BYTES = 2 * 1024**3
MP4_MAX_SECONDS = 24 * 3600
# Estimated MP4 index (moov) cost, used to keep a file below max_bytes.
MOOV_FIXED_BYTES = 4096
MOOV_BYTES_PER_PACKET = 12
# At a cut, audio this close before the keyframe goes to the next file (one AAC frame at 16 kHz:
# the priming frame of a run that starts at the keyframe).
AUDIO_LEAD_SECONDS = 0.07


class PacketInfo(Protocol):
    kind: str  # "video" or "audio"
    dts: int  # output timeline, in the track's time base
    duration: int
    size: int
    keyframe: bool


@dataclass(frozen=True)
class Cut:
    at: float  # output seconds of the packet that starts the next file
    earliest: float  # other-track packets from here on already belong to the next file


@dataclass(frozen=True)
class CutLimits:
    max_bytes: int = MP4_MAX_BYTES
    max_seconds: float = MP4_MAX_SECONDS


def plan_cuts(packets: Iterable[PacketInfo], tbs: dict[str, Fraction], limits: CutLimits, cut_kind: str) -> list[Cut]:
    """Where new files start (not counting the first): ``cut_kind`` keyframes (any audio packet
    when there is no video) chosen so each file stays within the limits, its index included."""
    cuts: list[Cut] = []
    file_start: float | None = None
    file_bytes = 0
    candidate: tuple[Cut, int] | None = None  # a possible cut and the file's bytes before it
    overflow = False
    previous = float("-inf")  # time of the last cut_kind packet
    for p in packets:
        t = float(p.dts * tbs[p.kind])
        end = float((p.dts + p.duration) * tbs[p.kind])
        is_candidate = p.kind == cut_kind and (p.keyframe or cut_kind == "audio")
        if is_candidate:
            # audio just before a keyframe (e.g. the AAC priming of a run that starts there) goes
            # with it, unless a picture lies in between
            cut = Cut(t, max(previous + 1e-6, t - AUDIO_LEAD_SECONDS) if cut_kind == "video" else t)
        if file_start is None:
            file_start, file_bytes = t, MOOV_FIXED_BYTES
        elif is_candidate and overflow:
            cuts.append(cut)
            file_start, file_bytes, candidate, overflow = t, MOOV_FIXED_BYTES, None, False
        if is_candidate and t > file_start:
            candidate = (cut, file_bytes)
        if p.kind == cut_kind:
            previous = t
        file_bytes += p.size + MOOV_BYTES_PER_PACKET
        if overflow or (file_bytes <= limits.max_bytes and end - file_start <= limits.max_seconds):
            continue
        if candidate is not None:
            chosen, before = candidate
            cuts.append(chosen)
            file_start, file_bytes, candidate = chosen.at, MOOV_FIXED_BYTES + file_bytes - before, None
            overflow = file_bytes > limits.max_bytes or end - file_start > limits.max_seconds
        else:
            overflow = True  # one GOP is larger than the limit: cut at the next keyframe
    return cuts


def starts_next_file(p: PacketInfo, t: float, cut: Cut, cut_kind: str) -> bool:
    """Whether packet ``p`` at output time ``t`` is the first of the file after ``cut``."""
    if p.kind == cut_kind:
        return t >= cut.at - 1e-9 and (p.keyframe or cut_kind == "audio")
    return t >= cut.earliest
