"""One timeline for every worker: capture clock → stream timestamps, and segments placed by ``<utc>``.

Pure (no I/O). Two directions of the same rule, so the recorder and the readers of its files
(finalize, merge) agree to the tick:

- **writing**: :class:`CaptureClock` turns the wall-clock capture time of a frame (Unix seconds)
  into ticks of one stream's timeline. The first capture time is the stream's start (TRTC's
  ``#EXT-X-TRTC-START-REC-TIME``); ticks start :data:`PTS_OFFSET_SECONDS` after 0 so the AAC
  encoder's priming, which precedes the first sample, never needs a negative timestamp. A gap in
  the input stays a gap: timestamps come from capture times, never from counting frames.
- **reading**: :class:`SegmentPlacer` puts the segments of one track back on the wall clock. A
  segment's ``<utc>`` is the wall time of its first packet; a packet lands at
  ``utc + (pts - first pts)``. A segment whose name agrees (within :data:`CONTINUITY_SECONDS`)
  with the previous segment's timeline continues that timeline with its exact timestamps, so
  rounding the name to milliseconds never adds jitter; otherwise (first segment, a new writer, a
  failover attempt) its name places it.
"""

from __future__ import annotations

TS_HZ = 90000
PTS_OFFSET_SECONDS = 1.0
CONTINUITY_SECONDS = 0.05


class CaptureClock:
    """Capture times of one stream → ticks (``hz`` per second), starting at its first capture time."""

    def __init__(self, hz: int = TS_HZ, offset_seconds: float = PTS_OFFSET_SECONDS) -> None:
        self.hz = hz
        self.offset = round(offset_seconds * hz)
        self.start: float | None = None

    def ticks(self, when: float) -> int | None:
        """Ticks of ``when``; the first call fixes the start. ``None`` for a time before the start."""
        if self.start is None:
            self.start = when
        if when < self.start:
            return None
        return round((when - self.start) * self.hz) + self.offset

    def wall(self, ticks: int) -> float:
        """Wall-clock time (Unix seconds) of a tick value."""
        if self.start is None:
            raise ValueError("the clock has not started")
        return self.start + (ticks - self.offset) / self.hz

    def rescale(self, ticks: int, hz: int) -> int:
        """The same moment in another rate (e.g. a sample clock of ``hz`` samples per second)."""
        return round(ticks * hz / self.hz)


class SegmentPlacer:
    """Places the segments of one track, in order, on an output timeline whose 0 is ``begin``."""

    def __init__(self, begin: float = 0.0, continuity: float = CONTINUITY_SECONDS) -> None:
        self.begin, self.continuity = begin, continuity
        self._offset: float | None = None

    def offset(self, utc_start: float, media_origin: float) -> float:
        """Seconds to add to a media time of this segment to put it on the output timeline.

        ``utc_start`` is the wall time its name gives (Unix seconds), ``media_origin`` the media time
        of its first packet.
        """
        placed = utc_start - self.begin - media_origin
        if self._offset is None or abs(placed - self._offset) > self.continuity:
            self._offset = placed  # a new timeline
        return self._offset
