"""Progress for one output file: a redrawn bar on a terminal, plain lines in logs and pipes."""

from __future__ import annotations

import time
from typing import TextIO

BAR_WIDTH = 30
REDRAW_SECONDS = 0.1
LINE_STEP_PERCENT = 25


class Progress:
    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.label, self.total = "", 0.0
        self._last_draw = 0.0
        self._next_percent = 0

    def start(self, label: str, total_seconds: float) -> None:
        self.label, self.total = label, max(total_seconds, 1e-9)
        self._last_draw, self._next_percent = 0.0, 0
        self.update(0.0)

    def update(self, done_seconds: float) -> None:
        percent = int(min(max(done_seconds / self.total, 0.0), 1.0) * 100)
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw < REDRAW_SECONDS and percent < 100:
                return
            self._last_draw = now
            filled = BAR_WIDTH * percent // 100
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.stream.write(
                f"\r{self.label} [{bar}] {percent:3d}% {done_seconds:7.1f}/{self.total:.1f} s"
            )
            self.stream.flush()
        elif percent >= self._next_percent:
            self.stream.write(f"{self.label}: {percent}% ({done_seconds:.1f}/{self.total:.1f} s)\n")
            self.stream.flush()
            self._next_percent = (percent // LINE_STEP_PERCENT + 1) * LINE_STEP_PERCENT

    def finish(self) -> None:
        self.update(self.total)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
