"""Processing between a source and an encoder: pictures to the stored size, sound to the encoder's format.

:class:`Scale` keeps the picture's aspect ratio whatever happens upstream: a stream is stored at
one size (its first picture's, or the size the task asks for); a picture of another size later
(a camera dropping from 720p to 360p under congestion, a rotated phone) is scaled to fit inside
it and centred on black, never squeezed. Pictures that already fit pass through untouched (no
conversion, no copy), which is the common case.
"""

from __future__ import annotations

import av
import numpy as np

BLACK_Y, BLACK_UV = 16, 128


def even(size: tuple[int, int]) -> tuple[int, int]:
    """yuv420p needs even sides."""
    return (max(2, size[0] - size[0] % 2), max(2, size[1] - size[1] % 2))


def fit(source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """(width, height, left, top) of ``source`` scaled to fit inside ``target``, centred, even-aligned."""
    sw, sh = source
    tw, th = target
    scale = min(tw / sw, th / sh)
    w, h = min(tw, max(2, round(sw * scale / 2) * 2)), min(th, max(2, round(sh * scale / 2) * 2))
    return w, h, (tw - w) // 4 * 2, (th - h) // 4 * 2


class Scale:
    """Pictures → yuv420p at ``size`` with the aspect ratio kept (letter- or pillarboxed)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = even(size)
        self.changes = 0  # pictures whose size differed from the stored one (and were fitted)

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        width, height = self.size
        if frame.width == width and frame.height == height:
            return frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
        self.changes += 1
        w, h, left, top = fit((frame.width, frame.height), self.size)
        scaled = frame.reformat(width=w, height=h, format="yuv420p")
        if (w, h) == self.size:
            return scaled
        canvas = np.empty((height * 3 // 2, width), np.uint8)
        canvas[:height] = BLACK_Y
        canvas[height:] = BLACK_UV
        planes = scaled.to_ndarray()  # (h * 3 / 2, w): Y, then U and V at half size
        canvas[top:top + h, left:left + w] = planes[:h]
        chroma = planes[h:].reshape(2, h // 2, w // 2)
        canvas_chroma = canvas[height:].reshape(2, height // 2, width // 2)
        canvas_chroma[:, top // 2:top // 2 + h // 2, left // 2:left // 2 + w // 2] = chroma
        return av.VideoFrame.from_ndarray(canvas, format="yuv420p")


class AudioConverter:
    """Any decoded audio → float planar samples at the encoder's rate and channel layout."""

    def __init__(self, sample_rate: int, layout: str) -> None:
        self.sample_rate, self.layout = sample_rate, layout
        self.channels = 1 if layout == "mono" else 2
        self._resampler: av.AudioResampler | None = None

    def __call__(self, frame: av.AudioFrame) -> np.ndarray:
        if frame.sample_rate == self.sample_rate and frame.layout.name == self.layout:
            name = frame.format.name
            if name == "fltp":
                return frame.to_ndarray()
            if name in ("s16", "s16p") and self.channels == 1:  # WebRTC's mono s16: no resampler needed
                pcm = np.frombuffer(memoryview(frame.planes[0]), np.int16, count=frame.samples)
                return np.multiply(pcm, 1 / 32768, dtype=np.float32).reshape(1, -1)
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.sample_rate)
        frame.pts = None  # the timeline places the samples; the resampler must not judge the timestamps
        return self._joined(self._resampler.resample(frame))

    def run(self, frames: list[av.AudioFrame]) -> np.ndarray:
        """Contiguous frames as one block of samples (WebRTC's mono s16 in one vectorised step)."""
        if all(f.format.name in ("s16", "s16p") and f.layout.name == self.layout == "mono"
               and f.sample_rate == self.sample_rate for f in frames):
            pcm = np.concatenate([np.frombuffer(memoryview(f.planes[0]), np.int16, count=f.samples) for f in frames])
            return np.multiply(pcm, 1 / 32768, dtype=np.float32).reshape(1, -1)
        parts = [self(f) for f in frames]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def drain(self) -> np.ndarray:
        """What the resampler still holds (the end of a run); the next run starts a fresh one."""
        if self._resampler is None:
            return np.zeros((self.channels, 0), np.float32)
        resampler, self._resampler = self._resampler, None
        return self._joined(resampler.resample(None))

    def _joined(self, frames: list[av.AudioFrame]) -> np.ndarray:
        out = [f.to_ndarray() for f in frames]
        if not out:
            return np.zeros((self.channels, 0), np.float32)
        return out[0] if len(out) == 1 else np.concatenate(out, axis=1)
