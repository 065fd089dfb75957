"""Read merged MP4s back with PyAV: durations, frame colours, dominant tones, onsets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True)
class Tracks:
    video: float | None  # seconds, from the decoded frames
    audio: float | None
    fps: float | None
    size: tuple[int, int] | None


def tracks(path: Path) -> Tracks:
    with av.open(str(path)) as container:
        video = audio = fps = size = None
        if container.streams.video:
            stream = container.streams.video[0]
            times = [f.time for f in container.decode(stream)]
            fps = float(stream.average_rate)
            video = max(times) + 1 / fps - min(times)
            size = (stream.codec_context.width, stream.codec_context.height)
    with av.open(str(path)) as container:
        if container.streams.audio:
            frames = list(container.decode(container.streams.audio[0]))
            audio = frames[-1].time + frames[-1].samples / frames[-1].sample_rate - frames[0].time
    return Tracks(video, audio, fps, size)


def rgb_at(path: Path, t: float) -> tuple[int, int, int] | None:
    """Mean colour of the frame shown at ``t`` seconds; None if the file has no video."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return None
        chosen = None
        for frame in container.decode(container.streams.video[0]):
            if frame.time > t + 1e-6:
                break
            chosen = frame
        assert chosen is not None
        mean = chosen.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
        return tuple(int(round(v)) for v in mean)


def audio_samples(path: Path) -> tuple[np.ndarray, int, float]:
    """Left channel, sample rate and the time of the first sample."""
    with av.open(str(path)) as container:
        frames = list(container.decode(container.streams.audio[0]))
    data = np.concatenate([f.to_ndarray()[0] for f in frames])
    return data, frames[0].sample_rate, float(frames[0].time)


def tone_at(path: Path, t0: float, t1: float) -> tuple[float, float]:
    """Dominant frequency (Hz) and RMS of the audio between t0 and t1."""
    data, rate, first = audio_samples(path)
    chunk = data[int((t0 - first) * rate):int((t1 - first) * rate)]
    rms = float(np.sqrt(np.mean(chunk ** 2))) if len(chunk) else 0.0
    spectrum = np.abs(np.fft.rfft(chunk * np.hanning(len(chunk))))
    return float(np.fft.rfftfreq(len(chunk), 1 / rate)[np.argmax(spectrum)]), rms


def audio_onset(path: Path, after: float, threshold: float = 0.1) -> float:
    data, rate, first = audio_samples(path)
    start = int((after - first) * rate)
    hits = np.nonzero(np.abs(data[start:]) > threshold)[0]
    return first + (start + int(hits[0])) / rate


def video_onset(path: Path, after: float, threshold: float = 200.0) -> float:
    """Time of the first frame after ``after`` whose mean luma is above ``threshold``."""
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            if frame.time >= after and frame.to_ndarray(format="gray").mean() > threshold:
                return float(frame.time)
    raise AssertionError("no flash found")
