"""One audio framer for every encoder: samples placed on a sample clock, cut into fixed-size frames.

Encoders want frames of a fixed size (AAC 1024 samples, MP3 1152) with exact timestamps, while
sources deliver runs of samples at positions of their own (10 ms WebRTC frames, decoded segments
of a recording). :class:`AudioFramer` reconciles the two. Pure (numpy only, no I/O):

- a run that starts later than where the previous one ended leaves a **gap**: filled with
  silence (``fill_gaps=True``: MP3 and merged MP4 keep wall-clock time that way) or kept as a hole
  in the timestamps (``fill_gaps=False``: HLS), in which case the pending samples are padded to a
  whole frame and the next frame is marked ``new_run`` (an AAC encoder must start afresh there:
  its frames overlap, so one fed across the hole would smear the end of a run past it);
- a run that starts earlier than where the previous one ended **overlaps**: the part already
  covered is dropped (``trim_overlaps=True``: recorded media read back, where an overlap is the same
  sound twice), or the run just continues (``trim_overlaps=False``: live capture, where a clock
  that steps back is receive-time jitter and every sample is kept);
- differences within ``tolerance`` samples are jitter and ignored: the samples continue the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

AAC_FRAME = 1024
MP3_FRAME = 1152


@dataclass(frozen=True)
class AudioChunk:
    """``frame_size`` samples (fewer only for the last chunk of an unpadded flush)."""

    pts: int  # position of the first sample, in samples
    samples: np.ndarray  # (channels, n) float32, C-contiguous
    new_run: bool  # first chunk after a hole in the timestamps (or the very first chunk)


class AudioFramer:
    def __init__(self, frame_size: int, channels: int, *, tolerance: int = 0, fill_gaps: bool = True,
                 trim_overlaps: bool = True, limit: int | None = None, start: int | None = None) -> None:
        """``start``: where the output begins (silence up to the first samples); by default where they begin."""
        self.frame_size, self.channels = frame_size, channels
        self.tolerance, self.fill_gaps, self.trim_overlaps, self.limit = tolerance, fill_gaps, trim_overlaps, limit
        self.emitted = start or 0  # position after the last chunk handed out
        self._started = start is not None
        self._new_run = True
        self._pending: list[np.ndarray] = []
        self._pending_count = 0
        self._silence = np.zeros((channels, frame_size), np.float32)

    @property
    def cursor(self) -> int:
        """Position of the next sample."""
        return self.emitted + self._pending_count

    def place(self, position: int, samples: np.ndarray) -> Iterator[AudioChunk]:
        """Samples whose first one belongs at ``position``."""
        if not self._started:
            self._started, self.emitted = True, position
        cursor = self.cursor
        if position > cursor + self.tolerance:
            if self.fill_gaps:
                yield from self.fill_to(position)
            else:
                yield from self.flush(pad=True)
                self.emitted = max(position, self.cursor)
                self._new_run = True
        elif position < cursor - self.tolerance and self.trim_overlaps:
            samples = samples[:, cursor - position:]
        yield from self.push(samples)

    def push(self, samples: np.ndarray) -> Iterator[AudioChunk]:
        """Samples that continue the current run."""
        if self.limit is not None:
            samples = samples[:, :max(0, self.limit - self.cursor)]
        count = samples.shape[1]
        if count == 0:
            return
        self._started = True
        self._pending.append(samples)
        self._pending_count += count
        if self._pending_count < self.frame_size:
            return
        block = self._take()
        whole = block.shape[1] // self.frame_size * self.frame_size
        for offset in range(0, whole, self.frame_size):
            yield self._chunk(block[:, offset:offset + self.frame_size])
        if whole < block.shape[1]:
            rest = block[:, whole:]
            self._pending, self._pending_count = [rest], rest.shape[1]

    def fill_to(self, position: int) -> Iterator[AudioChunk]:
        """Silence from the cursor up to ``position`` (bounded memory, whatever the hole's length)."""
        if self.limit is not None:
            position = min(position, self.limit)
        if self._pending_count:
            first = min(position - self.cursor, self.frame_size - self._pending_count)
            if first > 0:
                yield from self.push(self._silence[:, :first])
        while self._pending_count == 0 and position - self.cursor >= self.frame_size:
            yield self._chunk(self._silence)
        if position > self.cursor:
            yield from self.push(self._silence[:, :position - self.cursor])

    def flush(self, *, pad: bool) -> Iterator[AudioChunk]:
        """What is pending: padded with silence to a whole frame, or as one short last chunk."""
        if not self._pending_count:
            return
        block = self._take()
        if pad and block.shape[1] < self.frame_size:
            block = np.concatenate([block, self._silence[:, :self.frame_size - block.shape[1]]], axis=1)
        yield self._chunk(block)

    def _take(self) -> np.ndarray:
        parts, self._pending, self._pending_count = self._pending, [], 0
        block = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return block.astype(np.float32, copy=False)

    def _chunk(self, samples: np.ndarray) -> AudioChunk:
        chunk = AudioChunk(self.emitted, np.ascontiguousarray(samples), self._new_run)
        self.emitted += samples.shape[1]
        self._new_run = False
        return chunk
