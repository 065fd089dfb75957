"""Generate real single-stream TS segment sets with PyAV, named the TRTC way.

Each *run* (a stretch a user published without a break) is encoded as one continuous stream
and then cut into TS segments, as an HLS recorder does: timestamps continue across the
segments of a run and only the first audio segment carries the AAC encoder's priming.
A segment's ``<utc>`` is the wall time of its first packet, so tests know the truth exactly.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from capstan.media import naming, playlist

BASE = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
SDKAPPID, ROOM = 1400000001, 4321
AUDIO_RATE = 48000
TS_HZ = 90000
# ffmpeg's AAC encoder emits one frame (1024 samples) of priming before the first real sample.
AAC_PRIMING_SAMPLES = 1024


@dataclass(frozen=True)
class Run:
    start: float  # seconds after BASE when the run's content starts
    seconds: float
    ha: int = 0


@dataclass(frozen=True)
class Written:
    path: Path
    start: datetime
    duration: float


def write_video(
    directory: Path, user: str, media: str, runs: list[Run], *, color: tuple[int, int, int],
    size: tuple[int, int] = (160, 120), fps: int = 15, segment_seconds: float = 2.0,
    flashes: tuple[float, ...] = (), flash_seconds: float = 0.2,
) -> list[Written]:
    """Solid ``color``; white during each flash (wall seconds after BASE)."""
    written: list[Written] = []
    for run in runs:
        buf = io.BytesIO()
        with av.open(buf, "w", format="mpegts") as holder:
            stream = holder.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            stream.codec_context.time_base = Fraction(1, fps)
            gop = max(1, round(segment_seconds * fps))
            stream.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop),
                              "sc_threshold": "0", "bf": "0"}
            plain = _solid(size, color)
            white = _solid(size, (255, 255, 255))
            for index in range(round(run.seconds * fps)):
                wall = run.start + index / fps
                lit = any(f <= wall + 1e-9 < f + flash_seconds for f in flashes)
                frame = white if lit else plain
                frame.pts = index
                frame.time_base = stream.codec_context.time_base
                holder.mux(stream.encode(frame))
            holder.mux(stream.encode(None))
        written += _cut(buf, "video", directory, user, media, run, segment_seconds, content_offset=0,
                        size=size)
    return written


def write_audio(
    directory: Path, user: str, runs: list[Run], *, tone_hz: float, segment_seconds: float = 2.0,
    beeps: tuple[float, ...] = (), beep_seconds: float = 0.2, amplitude: float = 0.3,
    rate: int = AUDIO_RATE,
) -> list[Written]:
    """A continuous sine of ``tone_hz``; with ``beeps``, silence except during each beep."""
    written: list[Written] = []
    for run in runs:
        buf = io.BytesIO()
        with av.open(buf, "w", format="mpegts") as holder:
            stream = holder.add_stream("aac", rate=rate)
            stream.layout = "mono"
            total = round(run.seconds * rate)
            for first in range(0, total, 1024):
                n = np.arange(first, min(first + 1024, total))
                wall = run.start + n / rate
                wave = amplitude * np.sin(2 * np.pi * tone_hz * wall)
                if beeps:
                    gate = np.zeros_like(wave)
                    for b in beeps:
                        gate[(wall >= b) & (wall < b + beep_seconds)] = 1.0
                    wave = wave * gate
                frame = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None, :], format="fltp",
                                                   layout="mono")
                frame.sample_rate, frame.pts = rate, first
                frame.time_base = Fraction(1, rate)
                holder.mux(stream.encode(frame))
            holder.mux(stream.encode(None))
        written += _cut(buf, "audio", directory, user, "main", run, segment_seconds,
                        content_offset=AAC_PRIMING_SAMPLES * TS_HZ / rate)
    return written


def _solid(size: tuple[int, int], color: tuple[int, int, int]) -> av.VideoFrame:
    image = np.empty((size[1], size[0], 3), np.uint8)
    image[:] = color
    return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")


def _cut(
    buf: io.BytesIO, track: str, directory: Path, user: str, media: str, run: Run,
    segment_seconds: float, *, content_offset: float, size: tuple[int, int] | None = None,
) -> list[Written]:
    buf.seek(0)
    with av.open(buf, format="mpegts") as source:
        stream = source.streams.video[0] if track == "video" else source.streams.audio[0]
        packets = [p for p in source.demux(stream) if p.size and p.pts is not None]
        origin = min(p.pts for p in packets) + content_offset  # pts of the run's content start
        groups: list[list[av.Packet]] = []
        for packet in packets:
            boundary = len(groups) * segment_seconds * TS_HZ
            new = not groups or (packet.pts - origin >= boundary and (track == "audio" or packet.is_keyframe))
            if new:
                groups.append([])
            groups[-1].append(packet)
        written: list[Written] = []
        for group in groups:
            first = min(p.pts for p in group)
            start = BASE + timedelta(seconds=run.start + (first - origin) / TS_HZ)
            start = start.replace(microsecond=start.microsecond // 1000 * 1000)
            name = naming.single_segment_name(SDKAPPID, ROOM, user, media, track, start, ha=run.ha)
            path = directory / name
            with av.open(str(path), "w", format="mpegts") as out:
                out_stream = out.add_stream_from_template(stream)
                for packet in group:
                    packet.stream = out_stream
                    out.mux(packet)
            last = max(group, key=lambda p: p.pts)
            step = last.duration or round(TS_HZ / 15)
            written.append(Written(path, start, (last.pts + step - first) / TS_HZ))
    _write_playlist(directory, user, media, track, run, written, size)
    return written


def _write_playlist(directory: Path, user: str, media: str, track: str, run: Run,
                    written: list[Written], size: tuple[int, int] | None) -> None:
    name = naming.single_playlist_name(SDKAPPID, ROOM, user, media, track, ha=run.ha)
    path = directory / name
    entries = [playlist.PlaylistEntry(w.duration, w.path.name) for w in written]
    start_ms = naming.unix_ms(written[0].start)
    if path.exists():  # a later run of the same track appends (the recorder keeps one playlist)
        earlier = playlist.parse(path.read_text())
        entries, start_ms = earlier.entries + entries, earlier.start_rec_time_ms or start_ms
    text = playlist.render(playlist.Playlist(
        entries=entries, start_rec_time_ms=start_ms,
        width=size[0] if size else None, height=size[1] if size else None, ended=True,
        target_duration=math.ceil(max(w.duration for w in written)),
    ))
    path.write_text(text)
