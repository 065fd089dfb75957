"""Keeping a backend's own real-time audio queue in step with the wall clock the pictures are paced by.

LiveKit's ``AudioSource`` sends 10 ms of sound every 10 ms of its own (native, steady) clock from
what was written into its queue; when the queue runs dry it sends nothing, then silence, and the
sound written afterwards leaves as soon as it is written — later than planned, for the rest of the
push. So the writer, not the queue, decides where each sample lands, and :class:`AudioSchedule`
models the queue to do it: every sample due at ``d`` (the wall clock of the pictures) should leave
at ``d - lead``; a block is written ``cushion`` before that, so the queue holds ``cushion`` of
sound whenever a block arrives and a writer stall shorter than that changes nothing. A block that
would leave too early (the first one, the gap between two runs) is preceded by the silence up to
its time; one that would leave late (the queue ran dry: a stall longer than the cushion) loses its
overdue head instead, so the sound comes back in step with the pictures at once instead of staying
behind them. Pure: the caller gives it the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class ScheduledAudioOutput(Protocol):
    """An audio output whose backend sends from a queue of its own on its own clock (LiveKit)."""

    lead: float  # seconds before its due time a sample leaves for the room to arrive with the pictures
    cushion: float  # seconds of sound kept in the backend's queue
    frame_samples: int  # samples per block the reader makes
    thread_safe: bool  # send() may be called from a (single) thread of the caller's

    def send(self, frame: Any, silence: int, skip: int) -> None:
        """Queue `silence` samples of silence, then `frame` less its first `skip` samples (at once)."""
        ...


@dataclass
class AudioSchedule:
    rate: int  # samples per second
    lead: float
    cushion: float
    quantum: int = 0  # the queue's unit (10 ms); silence and skips are whole units
    tolerance: float = 0.015  # a start this close to its time is left alone (the queue's 10 ms ticks)
    tail: float = 0.0  # wall time at which what was written has all left
    skipped: int = 0  # samples dropped so far (late blocks)
    padded: int = 0  # samples of silence written so far

    def __post_init__(self) -> None:
        if not self.quantum:
            self.quantum = self.rate // 100

    def write_at(self, due: float) -> float:
        """When the block due at `due` is written."""
        return due - self.lead - self.cushion

    def place(self, due: float, samples: int, now: float) -> tuple[int, int]:
        """The block of `samples` due at `due`, written at `now`: (silence to write before it,
        samples to drop from its head)."""
        start = max(self.tail, now)  # when its first sample would leave
        target = due - self.lead
        silence = skip = 0
        if start < target - self.tolerance:
            silence = round((target - start) * self.rate) // self.quantum * self.quantum
        elif start > target + self.tolerance:
            late = -(-round((start - target) * self.rate) // self.quantum) * self.quantum  # whole units, up
            skip = min(samples, late)
        self.skipped += skip
        self.padded += silence
        if silence + samples - skip > 0:
            self.tail = start + (silence + samples - skip) / self.rate
        return silence, skip
