"""The recording's own clock: what is captured before the start or while paused is left out.

Pure (no I/O). Capture times are wall-clock seconds (the X server's grab time, the sound card's
sample clock); :meth:`RecordingClock.place` maps one to the output timeline, on which the paused
spans are cut out, so pause/resume yields one file without a hole (seed 003 Resume: "added to the
content before pause without generating new video segments"). Output times stay in wall-clock
seconds shifted back by the paused time before them, so they only ever increase.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RecordingClock:
    started_at: float | None = None
    pauses: list[tuple[float, float | None]] = field(default_factory=list)  # (paused at, resumed at)
    ended_at: float | None = None

    def start(self, at: float) -> bool:
        """Recording begins at ``at`` (the first call wins); True when this call started it."""
        if self.started_at is not None:
            return False
        self.started_at = at
        return True

    def end(self, at: float) -> None:
        """Nothing captured from ``at`` on is recorded (the stop was seen then)."""
        if self.ended_at is None:
            self.ended_at = at

    @property
    def paused(self) -> bool:
        return bool(self.pauses) and self.pauses[-1][1] is None

    def pause(self, at: float) -> bool:
        if self.paused:
            return False
        at = max(at, self.pauses[-1][1] or at) if self.pauses else at
        self.pauses.append((at, None))
        return True

    def resume(self, at: float) -> bool:
        if not self.paused:
            return False
        begun = self.pauses[-1][0]
        self.pauses[-1] = (begun, max(at, begun))
        return True

    def paused_seconds(self, now: float) -> float:
        """Time spent paused (after the start) up to ``now``."""
        total = 0.0
        for begun, ended in self.pauses:
            begun = max(begun, self.started_at or begun)
            end = min(now, ended if ended is not None else now)
            total += max(0.0, end - begun)
        return total

    def recorded_seconds(self, now: float) -> float:
        """Recorded time up to ``now``: since the start, less the pauses."""
        if self.started_at is None:
            return 0.0
        if self.ended_at is not None:
            now = min(now, self.ended_at)
        return max(0.0, now - self.started_at - self.paused_seconds(now))

    def place(self, t: float) -> float | None:
        """Output time of something captured at ``t``; None before the start or inside a pause."""
        if self.started_at is None or t < self.started_at or (self.ended_at is not None and t >= self.ended_at):
            return None
        shift = 0.0
        for begun, ended in self.pauses:
            if t < begun:
                break
            if ended is None or t < ended:
                return None
            shift += max(0.0, ended - max(begun, self.started_at))
        return t - shift
