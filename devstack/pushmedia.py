"""A media file whose content says where it is: for the pusher's tests and benchmark.

Video: 1280x720@30 H.264 (no B-frames, a keyframe every ``gop`` frames): a bar that moves across
the top (the moving pattern), the frame number as 12 black/white blocks along the bottom, and a
white sync square during the first ``FLASH_FRAMES`` frames of each second. Audio: a ``TONE_HZ``
tone during the same part of each second, a quiet hum otherwise. A receiver reads the frame number
from any picture (so it knows the source position), the tone from the audio, and the A/V offset
from the flash and the beep that start together.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FPS = 1280, 720, 30
TONE_HZ = 1000.0
HUM_HZ = 300.0
RATE = 48000
FLASH_FRAMES = 8  # ≈ 267 ms of each second
BITS = 12
BLOCK = 80  # side of one bit block (px); big enough for any codec and downscale
BITS_TOP = HEIGHT - BLOCK - 20
FLASH = (slice(40, 200), slice(40, 200))


def picture(n: int) -> np.ndarray:
    """Frame `n` as yuv420p planes stacked (h*3/2, w)."""
    y = np.full((HEIGHT, WIDTH), 60, np.uint8)
    x = (n * 16) % (WIDTH - 100)
    y[250:350, x:x + 100] = 200  # the moving bar
    for bit in range(BITS):
        if (n >> bit) & 1:
            left = 40 + bit * (BLOCK + 16)
            y[BITS_TOP:BITS_TOP + BLOCK, left:left + BLOCK] = 235
        else:
            left = 40 + bit * (BLOCK + 16)
            y[BITS_TOP:BITS_TOP + BLOCK, left:left + BLOCK] = 16
    if n % FPS < FLASH_FRAMES:
        y[FLASH] = 235
    uv = np.full((HEIGHT // 2, WIDTH), 128, np.uint8)
    return np.concatenate([y, uv])


def tone(start_sample: int, count: int) -> np.ndarray:
    """The beep over a quiet hum: never silent, so WebRTC's DTX never pauses the sound (a receiver
    re-anchors its clock after a pause, which would blur the A/V measurement)."""
    t = (np.arange(count) + start_sample) / RATE
    on = (t % 1.0) < FLASH_FRAMES / FPS
    hum = np.sin(2 * np.pi * HUM_HZ * t) * 0.04
    return (np.sin(2 * np.pi * TONE_HZ * t) * 0.4 * on + hum).astype(np.float32)


def make(path: Path, seconds: float, *, gop: int = 15, bframes: int = 0, bitrate: int = 2_500_000,
         fmt: str | None = None) -> Path:
    """Write the file (MP4 unless `fmt` says otherwise)."""
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        v.bit_rate = bitrate
        v.options = {"preset": "ultrafast", "bf": str(bframes), "g": str(gop), "keyint_min": str(gop),
                     "sc_threshold": "0"}
        a = out.add_stream("aac", rate=RATE)
        a.layout = "mono"
        frames = int(seconds * FPS)
        samples_per_frame = RATE // FPS
        audio_pts = 0
        for n in range(frames):
            frame = av.VideoFrame.from_ndarray(picture(n), format="yuv420p")
            frame.pts, frame.time_base = n, fractions.Fraction(1, FPS)
            for p in v.encode(frame):
                out.mux(p)
            pcm = tone(audio_pts, samples_per_frame).reshape(1, -1)
            af = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = RATE, audio_pts, fractions.Fraction(1, RATE)
            audio_pts += samples_per_frame
            for p in a.encode(af):
                out.mux(p)
        for stream in (v, a):
            for p in stream.encode(None):
                out.mux(p)
    return path


def frame_number(rgb_or_gray: np.ndarray) -> int:
    """The number a picture carries (any size: blocks are found proportionally)."""
    gray = rgb_or_gray.mean(axis=2) if rgb_or_gray.ndim == 3 else rgb_or_gray
    h, w = gray.shape
    sy, sx = h / HEIGHT, w / WIDTH
    n = 0
    for bit in range(BITS):
        left = 40 + bit * (BLOCK + 16)
        block = gray[int((BITS_TOP + 20) * sy):int((BITS_TOP + BLOCK - 20) * sy),
                     int((left + 20) * sx):int((left + BLOCK - 20) * sx)]
        if block.size and block.mean() > 128:  # a picture too small to carry the blocks reads as 0
            n |= 1 << bit
    return n


def flashing(rgb_or_gray: np.ndarray) -> bool:
    gray = rgb_or_gray.mean(axis=2) if rgb_or_gray.ndim == 3 else rgb_or_gray
    h, w = gray.shape
    sy, sx = h / HEIGHT, w / WIDTH
    return float(gray[int(60 * sy):int(180 * sy), int(60 * sx):int(180 * sx)].mean()) > 150


def onsets(times: list[float], on: list[bool]) -> list[float]:
    """Times where a signal turns on after being off."""
    return [t for t, prev, cur in zip(times[1:], on, on[1:], strict=False) if cur and not prev]
