"""Probe TS segments and encode an :class:`OutputPlan` into an MP4 with PyAV.

Sync rule: every decoded video frame and audio run is placed by wall clock
(segment ``<utc>`` + media timestamp offset) and mapped onto the output timeline, never by
counting what came before. Video is resampled to constant frame rate (repeat the latest frame,
black where nothing covers the time); audio is a sample-exact stream (silence where nothing
covers the time, overlaps dropped). Errors therefore cannot accumulate across segments, gaps
or sections.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from capstan.media.naming import TrackType
from capstan.merge.plan import OutputPlan, Segment, Span

AUDIO_RATE = 48000
AUDIO_LAYOUT = "stereo"
AUDIO_CHANNELS = 2
AAC_FRAME = 1024
# Timestamp jitter below this is absorbed; beyond it, audio is re-anchored to the wall clock.
AUDIO_JITTER_SECONDS = 0.005
# A segment's last picture stays on screen this long past the segment's end (bridges tiny holes).
VIDEO_HOLD_SECONDS = 0.5
OPEN_TIMEOUT_SECONDS = 30.0
DEFAULT_SIZE = (640, 360)


class DamagedSegment(Exception):
    """A segment that cannot be read; the merge reports it and goes on without it."""


@dataclass(frozen=True)
class MediaInfo:
    media_start: float
    duration: float
    width: int | None = None
    height: int | None = None


def probe(path: str, track: TrackType) -> MediaInfo:
    """Demux only (no decoding): first timestamp and duration of the one stream we need."""
    try:
        with av.open(path, timeout=OPEN_TIMEOUT_SECONDS) as container:
            streams = container.streams.video if track is TrackType.VIDEO else container.streams.audio
            if not streams:
                raise DamagedSegment(f"no {track} stream")
            stream = streams[0]
            first, last_end = None, None
            pts_seen: list[int] = []
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                pts_seen.append(packet.pts)
                end = packet.pts + (packet.duration or 0)
                first = packet.pts if first is None else min(first, packet.pts)
                last_end = end if last_end is None else max(last_end, end)
            if first is None or last_end is None or stream.time_base is None:
                raise DamagedSegment("no media packets")
            tb = stream.time_base
            duration = float((last_end - first) * tb)
            if isinstance(stream, av.VideoStream):
                duration = max(duration, _video_span(pts_seen, tb, stream))
                ctx = stream.codec_context
                return MediaInfo(float(first * tb), duration, ctx.width or None, ctx.height or None)
            return MediaInfo(float(first * tb), duration)
    except av.FFmpegError as exc:
        raise DamagedSegment(str(exc)) from exc


def _video_span(pts: list[int], tb: Fraction, stream: av.VideoStream) -> float:
    """TS video packets often carry no duration: last pts plus one frame interval."""
    ordered = sorted(set(pts))
    if len(ordered) >= 2:
        steps = np.diff(np.array(ordered, dtype=np.int64))
        frame = float(np.median(steps)) * float(tb)
    else:
        rate = stream.average_rate or stream.guessed_rate
        frame = float(1 / rate) if rate else 0.0
    return float((ordered[-1] - ordered[0]) * tb) + frame


# --- encoding --------------------------------------------------------------------------------

OnDamaged = Callable[[Segment, str], None]
OnProgress = Callable[[float], None]


def encode(
    plan: OutputPlan,
    path: str,
    *,
    fps: int,
    size: tuple[int, int] | None,
    on_damaged: OnDamaged,
    on_progress: OnProgress | None = None,
) -> None:
    """Write ``plan`` to ``path`` (via a temporary name, so a crash never leaves a half MP4)."""
    partial = f"{path}.part"
    try:
        with av.open(partial, "w", format="mp4") as container:
            steps: list[Iterator[float]] = []
            if plan.has_video:
                width, height = _even(size or (plan.width or DEFAULT_SIZE[0], plan.height or DEFAULT_SIZE[1]))
                steps.append(_video_steps(container, plan, fps, width, height, on_damaged))
            if plan.has_audio:
                steps.append(_audio_steps(container, plan, on_damaged))
            _interleave(steps, plan.duration, on_progress)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


def _even(size: tuple[int, int]) -> tuple[int, int]:
    """yuv420p needs even sides."""
    return (max(2, size[0] + size[0] % 2), max(2, size[1] + size[1] % 2))


def _interleave(steps: list[Iterator[float]], total: float, on_progress: OnProgress | None) -> None:
    """Advance whichever stream is behind, so the muxer gets packets in time order."""
    clocks = [0.0] * len(steps)
    live = list(range(len(steps)))
    while live:
        index = min(live, key=lambda i: clocks[i])
        try:
            clocks[index] = next(steps[index])
        except StopIteration:
            live.remove(index)
            continue
        if on_progress is not None:
            on_progress(min(min((clocks[i] for i in live), default=total), total))


def _decoded(segment: Segment, kind: str, on_damaged: OnDamaged) -> Iterator[av.VideoFrame | av.AudioFrame]:
    """Frames of one segment; a decoding error reports the segment and ends it there."""
    try:
        with av.open(segment.path, timeout=OPEN_TIMEOUT_SECONDS) as container:
            streams = container.streams.video if kind == "video" else container.streams.audio
            if not streams:
                raise DamagedSegment(f"no {kind} stream")
            if isinstance(streams[0], av.VideoStream):
                streams[0].thread_type = "AUTO"
            for frame in container.decode(streams[0]):
                if isinstance(frame, av.VideoFrame | av.AudioFrame) and frame.pts is not None:
                    yield frame
    except (av.FFmpegError, DamagedSegment) as exc:
        on_damaged(segment, str(exc))


def _video_frames(segment: Segment, on_damaged: OnDamaged) -> Iterator[av.VideoFrame]:
    return (f for f in _decoded(segment, "video", on_damaged) if isinstance(f, av.VideoFrame))


def _audio_frames(segment: Segment, on_damaged: OnDamaged) -> Iterator[av.AudioFrame]:
    return (f for f in _decoded(segment, "audio", on_damaged) if isinstance(f, av.AudioFrame))


def _wall(segment: Segment, frame: av.VideoFrame | av.AudioFrame) -> float:
    media_time = frame.time
    assert media_time is not None  # frames without pts never get here
    return segment.start + (media_time - segment.media_start)


def _video_steps(
    container: av.container.OutputContainer,
    plan: OutputPlan,
    fps: int,
    width: int,
    height: int,
    on_damaged: OnDamaged,
) -> Iterator[float]:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.time_base = Fraction(1, fps)
    stream.options = {"preset": "veryfast", "crf": "23"}
    total_frames = round(plan.duration * fps)
    black = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24").reformat(
        format="yuv420p"
    )
    index = 0
    shown, shown_at, shown_until = None, float("-inf"), float("-inf")

    def emit_until(t_out: float) -> Iterator[float]:
        nonlocal index
        while index < total_frames and index / fps < t_out - 1e-6:
            picture = shown if shown is not None and index / fps < shown_until else black
            picture.pts = index
            picture.time_base = stream.codec_context.time_base
            container.mux(stream.encode(picture))
            index += 1
            yield index / fps

    for span, segment in _segments_in_order(plan.spans, "video"):
        hold_until = span.to_output(segment.end) + VIDEO_HOLD_SECONDS
        for frame in _video_frames(segment, on_damaged):
            t_out = span.to_output(_wall(segment, frame))
            if t_out < shown_at:  # overlapping (e.g. recovered) segment: never step back in time
                continue
            yield from emit_until(t_out)
            if index >= total_frames:
                break
            shown = frame.reformat(width=width, height=height, format="yuv420p")
            shown_at, shown_until = t_out, min(hold_until, span.out_end)
    yield from emit_until(float("inf"))
    container.mux(stream.encode(None))


def _segments_in_order(spans: list[Span], kind: str) -> Iterator[tuple[Span, Segment]]:
    for span in spans:
        segments = span.section.video if kind == "video" else span.section.audio
        for segment in sorted(segments, key=lambda s: s.sort_key):
            yield span, segment


def _audio_steps(
    container: av.container.OutputContainer, plan: OutputPlan, on_damaged: OnDamaged
) -> Iterator[float]:
    stream = container.add_stream("aac", rate=AUDIO_RATE)
    stream.layout = AUDIO_LAYOUT
    stream.bit_rate = 128_000
    sink = _AudioSink(container, stream, round(plan.duration * AUDIO_RATE))
    for span, segment in _segments_in_order(plan.spans, "audio"):
        for anchor, samples in _audio_runs(segment, on_damaged):
            position = round(span.to_output(anchor) * AUDIO_RATE)
            yield from sink.place(position, samples)
    yield from sink.finish()


def _audio_runs(segment: Segment, on_damaged: OnDamaged) -> Iterator[tuple[float, np.ndarray]]:
    """Split a segment at timestamp holes; each run is resampled to the output format whole."""
    run: list[av.AudioFrame] = []
    expected = None
    for frame in _audio_frames(segment, on_damaged):
        wall = _wall(segment, frame)
        if run and expected is not None and abs(wall - expected) > AUDIO_JITTER_SECONDS:
            yield _resampled(segment, run)
            run = []
        run.append(frame)
        expected = wall + frame.samples / frame.sample_rate
    if run:
        yield _resampled(segment, run)


def _resampled(segment: Segment, frames: list[av.AudioFrame]) -> tuple[float, np.ndarray]:
    resampler = av.AudioResampler(format="fltp", layout=AUDIO_LAYOUT, rate=AUDIO_RATE)
    chunks = []
    for frame in [*frames, None]:
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray())
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((AUDIO_CHANNELS, 0), np.float32)
    return _wall(segment, frames[0]), samples.astype(np.float32, copy=False)


class _AudioSink:
    """Sample-exact output audio: silence fills holes, overlaps are dropped, AAC-sized frames out."""

    def __init__(self, container: av.container.OutputContainer, stream: av.AudioStream, total: int) -> None:
        self.container, self.stream, self.total = container, stream, total
        self.written = 0  # samples handed to the encoder, silence included
        self.pending = np.zeros((AUDIO_CHANNELS, 0), np.float32)

    def place(self, position: int, samples: np.ndarray) -> Iterator[float]:
        tolerance = round(AUDIO_JITTER_SECONDS * AUDIO_RATE)
        cursor = self.written + self.pending.shape[1]
        if position > cursor + tolerance:
            yield from self._silence(position - cursor)
        elif position < cursor - tolerance:
            samples = samples[:, cursor - position:]
        yield from self._push(samples)

    def finish(self) -> Iterator[float]:
        cursor = self.written + self.pending.shape[1]
        if cursor < self.total:
            yield from self._silence(self.total - cursor)
        if self.pending.shape[1]:
            yield from self._emit(self.pending)
        self.pending = self.pending[:, :0]
        self.container.mux(self.stream.encode(None))

    def _silence(self, count: int) -> Iterator[float]:
        while count > 0:
            chunk = min(count, AAC_FRAME * 64)
            yield from self._push(np.zeros((AUDIO_CHANNELS, chunk), np.float32))
            count -= chunk

    def _push(self, samples: np.ndarray) -> Iterator[float]:
        room = self.total - self.written - self.pending.shape[1]
        if room <= 0 or samples.shape[1] == 0:
            return
        self.pending = np.concatenate([self.pending, samples[:, :room]], axis=1)
        whole = self.pending.shape[1] // AAC_FRAME * AAC_FRAME
        if whole:
            block, self.pending = self.pending[:, :whole], self.pending[:, whole:]
            yield from self._emit(block)

    def _emit(self, block: np.ndarray) -> Iterator[float]:
        for offset in range(0, block.shape[1], AAC_FRAME):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(block[:, offset:offset + AAC_FRAME]), format="fltp", layout=AUDIO_LAYOUT
            )
            frame.sample_rate = AUDIO_RATE
            frame.pts = self.written
            frame.time_base = Fraction(1, AUDIO_RATE)
            self.container.mux(self.stream.encode(frame))
            self.written += frame.samples
            yield self.written / AUDIO_RATE
