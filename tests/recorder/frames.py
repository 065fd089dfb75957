"""Synthetic decoded frames as a room SDK delivers them, and readers that check TS/MP4/MP3 output."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# 2024-05-01T10:00:00Z, a wall clock far from now so names are predictable.
T0 = 1714557600.0
AUDIO_RATE = 48000
CHUNK = 480  # 10 ms, what WebRTC delivers


def solid(size: tuple[int, int], color: tuple[int, int, int]) -> av.VideoFrame:
    """An I420 picture like a decoder produces (not rgb: the writer must not need to convert)."""
    image = np.empty((size[1], size[0], 3), np.uint8)
    image[:] = color
    return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")


def video_frames(start: float, seconds: float, *, fps: int = 15, size: tuple[int, int] = (64, 48),
                 color: tuple[int, int, int] = (200, 40, 40)) -> Iterator[tuple[av.VideoFrame, float]]:
    base = solid(size, color)
    for i in range(round(seconds * fps)):
        frame = av.VideoFrame.from_ndarray(base.to_ndarray(), format="yuv420p")
        yield frame, start + i / fps


def tone_frames(start: float, seconds: float, *, hz: float, rate: int = AUDIO_RATE, chunk: int = CHUNK,
                amplitude: float = 0.3) -> Iterator[tuple[av.AudioFrame, float]]:
    """Mono s16 10 ms frames of a sine, the phase following wall time (so gaps keep phase)."""
    total = round(seconds * rate)
    for first in range(0, total, chunk):
        n = np.arange(first, min(first + chunk, total))
        t = start + n / rate
        wave = (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(wave[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts, frame.time_base = round(start * rate) + first, Fraction(1, rate)
        yield frame, start + first / rate


def interleave(*sources: Iterator[tuple[av.VideoFrame | av.AudioFrame, float]]) -> Iterator[
        tuple[av.VideoFrame | av.AudioFrame, float]]:
    """Merge frame sources in capture-time order, as a live room delivers them."""
    heads = [next(s, None) for s in sources]
    while any(h is not None for h in heads):
        index = min((i for i, h in enumerate(heads) if h is not None), key=lambda i: heads[i][1])  # type: ignore[index]
        item = heads[index]
        assert item is not None
        yield item
        heads[index] = next(sources[index], None)


@dataclass(frozen=True)
class Stream:
    first: float  # seconds, first frame/packet time
    end: float  # last time + its duration
    times: list[float]
    durations: list[float]


def stream_times(path: Path, kind: str) -> Stream:
    """Decoded frame times of the first ``kind`` stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        times, durations = [], []
        for frame in container.decode(stream):
            assert frame.time is not None
            times.append(float(frame.time))
            if isinstance(frame, av.AudioFrame):
                durations.append(frame.samples / frame.sample_rate)
            else:
                rate = stream.average_rate or stream.guessed_rate or 15
                durations.append(float(1 / rate))
    return Stream(times[0], times[-1] + durations[-1], times, durations)


def mean_rgb(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        mean = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
        return (int(round(mean[0])), int(round(mean[1])), int(round(mean[2])))


def dominant_hz(path: Path, skip: float = 0.1) -> float:
    with av.open(str(path)) as container:
        data = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
        rate = container.streams.audio[0].sample_rate
    data = data[int(skip * rate):]
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    return float(np.fft.rfftfreq(len(data), 1 / rate)[int(np.argmax(spectrum))])
