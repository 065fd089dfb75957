"""Probe TS segments and encode an :class:`OutputPlan` into an MP4 with PyAV.

Sync rule: every decoded video frame and audio run is placed by wall clock (the shared
timeline: segment ``<utc>`` + media timestamp offset, :mod:`capstan.media.timeline`) and mapped
onto the output timeline, never by counting what came before. Video is resampled to constant
frame rate (repeat the latest frame, black where nothing covers the time); audio goes through
the shared framer (silence where nothing covers the time, overlaps dropped). Errors therefore
cannot accumulate across segments, gaps or sections.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from capstan.media.naming import TrackType
from capstan.media.pipeline.encoding import AudioEncoding
from capstan.media.pipeline.files import EncodedAudio
from capstan.media.pipeline.processing import AudioConverter, Scale
from capstan.media.pipeline.sources import SegmentSource
from capstan.merge.plan import OutputPlan, Segment, Span

# The merged MP4's sound: AAC stereo 48 kHz (the sample clock, silence and overlaps: media.audio).
AUDIO = AudioEncoding(sample_rate=48000, channels=2, bitrate=128_000)
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


def _segments_in_order(span: Span, kind: str) -> list[Segment]:
    return sorted(span.section.video if kind == "video" else span.section.audio, key=lambda s: s.sort_key)


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
    scale = Scale((width, height))
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

    for span in plan.spans:
        source = SegmentSource(_segments_in_order(span, "video"), "video", on_damaged=_damaged(on_damaged))
        for wall, frame, segment in source.frames():
            assert isinstance(frame, av.VideoFrame)
            t_out = span.to_output(wall)
            if t_out < shown_at:  # overlapping (e.g. recovered) segment: never step back in time
                continue
            yield from emit_until(t_out)
            if index >= total_frames:
                break
            shown = scale(frame)
            assert isinstance(segment, Segment)
            hold_until = span.to_output(segment.start + segment.duration) + VIDEO_HOLD_SECONDS
            shown_at, shown_until = t_out, min(hold_until, span.out_end)
    yield from emit_until(float("inf"))
    container.mux(stream.encode(None))


def _audio_steps(
    container: av.container.OutputContainer, plan: OutputPlan, on_damaged: OnDamaged
) -> Iterator[float]:
    track = EncodedAudio(container, AUDIO, total=round(plan.duration * AUDIO.sample_rate))
    convert = AudioConverter(AUDIO.sample_rate, AUDIO.layout)
    for span in plan.spans:
        source = SegmentSource(_segments_in_order(span, "audio"), "audio", on_damaged=_damaged(on_damaged))
        for wall, samples in source.audio_runs(convert):
            yield from track.place(span.to_output(wall), samples)
    yield from track.finish()


def _damaged(on_damaged: OnDamaged) -> Callable[[Any, str], None]:
    return lambda segment, reason: on_damaged(segment, reason)
