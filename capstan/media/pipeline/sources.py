"""Sources: where frames and packets come from.

- :class:`RoomTrackSource`: decoded frames of one anchor's track with their capture times, from
  the room port (any backend).
- :class:`SegmentSource`: one track of recorded TS segments, put back on the wall clock by the
  :class:`~capstan.media.timeline.SegmentPlacer` (finalize copies its packets into MP4s and
  decodes its audio into MP3s; the merge command decodes both).

Later sources (a media file, an RTMP stream, a screen and sound capture) yield the same things.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import av
import numpy as np

from capstan.media.pipeline.processing import AudioConverter
from capstan.media.timeline import SegmentPlacer
from capstan.rooms.base import RemoteTrack, RoomConnection, TimedFrame

OPEN_TIMEOUT_SECONDS = 30.0
# Decoded audio whose timestamps differ from the samples before it by more than this starts a new run.
AUDIO_JITTER_SECONDS = 0.005
DEFAULT_FRAME_SECONDS = Fraction(1, 15)


class RoomTrackSource:
    """Frames of one subscribed room track until it is unpublished, unsubscribed or the room is left."""

    def __init__(self, conn: RoomConnection, track: RemoteTrack) -> None:
        self.conn, self.track = conn, track

    def __aiter__(self) -> AsyncIterator[TimedFrame]:
        return self.conn.subscribe(self.track).__aiter__()

    async def close(self) -> None:
        await self.conn.unsubscribe(self.track)


class SegmentRef(Protocol):
    """A recorded segment: its file and the wall time (Unix seconds) its ``<utc>`` name gives."""

    @property
    def path(self) -> str | os.PathLike[str]: ...

    @property
    def start(self) -> float: ...

    @property
    def ha(self) -> int:
        """Failover attempt that wrote it (0: the first)."""
        ...


@dataclass
class PlacedPacket:
    """A demuxed packet on the output timeline (time base of its track)."""

    kind: str
    dts: int
    pts: int
    duration: int
    size: int
    keyframe: bool
    packet: Any  # av.Packet, or None when only planning


OnDamaged = Callable[[SegmentRef, str], None]


def segment_origin(container: Any) -> float | None:
    """Time of the segment's first packet (any track): the moment its ``<utc>`` name stands for."""
    firsts = [float(st.start_time * st.time_base) for st in container.streams
              if st.start_time is not None and st.time_base is not None]
    return min(firsts) if firsts else None


class SegmentSource:
    """One track (``video`` or ``audio``) across ``segments`` (in order), on a timeline whose 0 is ``begin``.

    Without ``on_damaged`` a segment that cannot be read raises; with it, the segment is reported
    and the source goes on without the rest of it.
    """

    def __init__(self, segments: Sequence[SegmentRef], kind: str, *, begin: float = 0.0,
                 on_damaged: OnDamaged | None = None) -> None:
        self.segments, self.kind, self.begin, self.on_damaged = segments, kind, begin, on_damaged

    def _open(self) -> Iterator[tuple[int, SegmentRef, Any, Any, float]]:
        """(number, segment, container, stream, offset seconds) for each readable segment."""
        placer = SegmentPlacer(self.begin)
        for number, segment in enumerate(self.segments):
            try:
                with av.open(os.fspath(segment.path), timeout=OPEN_TIMEOUT_SECONDS) as container:
                    streams = container.streams.video if self.kind == "video" else container.streams.audio
                    origin = segment_origin(container)
                    if not streams or origin is None:
                        if self.on_damaged is not None:
                            self.on_damaged(segment, f"no {self.kind} stream")
                        continue
                    yield number, segment, container, streams[0], placer.offset(segment.start, origin)
            except av.FFmpegError as exc:
                if self.on_damaged is None:
                    raise
                self.on_damaged(segment, str(exc))

    def packets(self, tb: Fraction, *, keep: bool) -> Iterator[PlacedPacket]:
        """Demuxed packets (not decoded), overlaps dropped; a later failover attempt (another ``ha``)
        takes over where its first segment starts. ``keep=False`` leaves out the packets themselves."""
        last_dts: int | None = None
        held: PlacedPacket | None = None
        steps: list[int] = []
        for number, segment, container, stream, offset_seconds in self._open():
            following = self.segments[number + 1] if number + 1 < len(self.segments) else None
            handover = None
            if following is not None and following.ha != segment.ha:
                handover = round((following.start - self.begin) / tb)
            if stream.time_base != tb:
                raise ValueError(f"{segment.path}: time base {stream.time_base}, expected {tb}")
            offset = round(offset_seconds / tb)
            need_keyframe = False
            for packet in container.demux(stream):
                if packet.dts is None or packet.pts is None or packet.size == 0:
                    continue
                dts = packet.dts + offset
                if handover is not None and dts >= handover:
                    break
                if last_dts is not None and dts <= last_dts:
                    need_keyframe = self.kind == "video"  # overlaps media already placed
                    continue
                if need_keyframe and not packet.is_keyframe:
                    continue  # would reference pictures that were dropped
                need_keyframe = False
                if held is not None:
                    step = dts - held.dts
                    if self.kind == "video" or held.duration <= 0:
                        typical = _median(steps)
                        held.duration = step if not steps or step <= 3 * typical else typical
                    steps.append(step)
                    del steps[:-50]
                    yield held
                held = PlacedPacket(self.kind, dts, packet.pts + offset, packet.duration or 0, packet.size,
                                    bool(packet.is_keyframe), packet if keep else None)
                last_dts = dts
        if held is not None:
            if held.duration <= 0 or self.kind == "video":
                held.duration = _median(steps) if steps else round(DEFAULT_FRAME_SECONDS / tb)
            yield held

    def frames(self) -> Iterator[tuple[float, av.VideoFrame | av.AudioFrame, SegmentRef]]:
        """Decoded frames with their output time in seconds and the segment they come from."""
        for _, segment, container, stream, offset in self._open():
            if isinstance(stream, av.VideoStream):
                stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    if frame.time is not None:
                        yield frame.time + offset, frame, segment
            except av.FFmpegError as exc:
                if self.on_damaged is None:
                    raise
                self.on_damaged(segment, str(exc))

    def audio_runs(self, convert: AudioConverter) -> Iterator[tuple[float, np.ndarray]]:
        """Decoded audio as contiguous runs (output seconds of the first sample, converted samples):
        a run ends where the timestamps jump, and is converted whole so resampling never spans a hole."""
        run: list[av.AudioFrame] = []
        run_start = expected = 0.0
        for t, frame, _ in self.frames():
            assert isinstance(frame, av.AudioFrame)
            if run and abs(t - expected) > AUDIO_JITTER_SECONDS:
                yield run_start, _converted(convert, run)
                run = []
            if not run:
                run_start = t
            run.append(frame)
            expected = t + frame.samples / frame.sample_rate
        if run:
            yield run_start, _converted(convert, run)


def _converted(convert: AudioConverter, frames: list[av.AudioFrame]) -> np.ndarray:
    samples, rest = convert.run(frames), convert.drain()
    return np.concatenate([samples, rest], axis=1) if rest.shape[1] else samples


def _median(values: list[int]) -> int:
    return int(np.median(values)) if values else 0
