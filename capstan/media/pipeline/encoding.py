"""Encoders built from one encoding spec: H.264 (libx264) for video, AAC or MP3 for audio.

An encoding spec is a small frozen object (:class:`VideoEncoding`, :class:`AudioEncoding`) made
once from the task's spec; every worker builds its encoders from it, so a recorder, a mixer and
a pusher encode the same way. Encoders take frames that already have their timestamps (the
timeline's job) and the right size (the scaler's job).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from capstan.media.audio import AAC_FRAME, MP3_FRAME, AudioChunk
from capstan.media.timeline import TS_HZ
from capstan.worker.metrics import ENCODED, ENCODING

DEFAULT_PRESET = "veryfast"
# x264 rate control and GOP length need a frame rate; a stream kept at its own rate uses this hint.
FPS_HINT = 15
# Up to this many pixels a second (720p30) x264 runs on the calling thread: one thread keeps up with
# room-sized pictures (about 8 ms a 720p picture at veryfast), and a thread pool's hand-offs cost
# more CPU than they save there (A/B of 600 pictures of 1280x720, alternating: 2.5-9 % less with one
# thread); above it x264 picks its own thread count.
ONE_THREAD_PIXEL_RATE = 1280 * 720 * 30


@dataclass(frozen=True)
class VideoEncoding:
    """H.264 settings. ``size`` None: the source's own size; ``max_fps`` None: every source frame."""

    bitrate: int = 550000
    gop_seconds: int = 10
    size: tuple[int, int] | None = None
    max_fps: int | None = None
    preset: str = DEFAULT_PRESET

    @classmethod
    def from_spec(cls, spec: Any) -> VideoEncoding:
        """From the API's VideoSpec (width/height/fps may be unset: the anchor's own)."""
        size = (spec.width, spec.height) if spec.width and spec.height else None
        return cls(bitrate=spec.bitrate, gop_seconds=spec.gop, size=size, max_fps=spec.fps)

    @property
    def fps_hint(self) -> int:
        return self.max_fps or FPS_HINT

    def threads(self, size: tuple[int, int]) -> int:
        """x264's thread count for pictures of ``size`` (0: its own choice)."""
        return 1 if size[0] * size[1] * self.fps_hint <= ONE_THREAD_PIXEL_RATE else 0


@dataclass(frozen=True)
class AudioEncoding:
    sample_rate: int = 48000
    channels: int = 1
    bitrate: int = 64000
    codec: str = "aac"  # or "libmp3lame"

    @classmethod
    def from_spec(cls, spec: Any) -> AudioEncoding:
        return cls(sample_rate=spec.sample_rate, channels=spec.channels, bitrate=spec.bitrate)

    @property
    def layout(self) -> str:
        return "mono" if self.channels == 1 else "stereo"

    @property
    def frame_size(self) -> int:
        return MP3_FRAME if self.codec == "libmp3lame" else AAC_FRAME

    def with_codec(self, codec: str, bitrate: int | None = None) -> AudioEncoding:
        return AudioEncoding(self.sample_rate, self.channels, bitrate or self.bitrate, codec)


class VideoEncoder:
    """libx264 on a 1/90000 time base; :attr:`stream` is the template segment containers copy."""

    def __init__(self, encoding: VideoEncoding, size: tuple[int, int]) -> None:
        self.encoding, self.size = encoding, size
        self._holder = av.open(io.BytesIO(), "w", format="mpegts")
        stream = self._holder.add_stream("libx264", rate=encoding.fps_hint)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        ctx = stream.codec_context
        ctx.time_base = Fraction(1, TS_HZ)
        ctx.framerate = Fraction(encoding.fps_hint, 1)
        ctx.bit_rate = encoding.bitrate
        ctx.gop_size = max(1, encoding.gop_seconds * encoding.fps_hint)
        ctx.thread_count = encoding.threads(size)
        stream.options = {"preset": encoding.preset, "bf": "0", "forced-idr": "1"}
        self._holder.start_encoding()
        self.stream: Any = stream
        self.flushed = False
        self._time_base = Fraction(1, TS_HZ)

    def encode(self, frame: av.VideoFrame, ticks: int, *, keyframe: bool) -> list[av.Packet]:
        frame.pts, frame.time_base = ticks, self._time_base
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        started = time.perf_counter()
        packets = list(self.stream.encode(frame))
        ENCODING["video"].inc(time.perf_counter() - started)
        ENCODED["video"].inc()
        return packets

    def flush(self) -> list[av.Packet]:
        if self.flushed:
            return []
        self.flushed = True
        return list(self.stream.encode(None))

    def close(self) -> None:
        self._holder.close()


class AudioEncoder:
    """AAC (or MP3) fed by an :class:`~capstan.media.audio.AudioFramer`; a new encoder per run.

    AAC frames overlap (MDCT), so an encoder fed across a hole would smear the end of one run into
    a packet stamped just before the next one: a chunk marked ``new_run`` starts a fresh encoder.

    Chunks of one run are handed to the codec :data:`BATCH_FRAMES` at a time: PyAV re-chunks every
    frame it is given through a filter graph (the codec has a fixed frame size), a cost per call
    that would otherwise be paid per 21 ms of sound.
    """

    BATCH_FRAMES = 16

    def __init__(self, encoding: AudioEncoding) -> None:
        self.encoding = encoding
        self._holder = av.open(io.BytesIO(), "w", format="mpegts")
        template: Any = self._holder.add_stream(encoding.codec, rate=encoding.sample_rate)
        template.layout, template.bit_rate = encoding.layout, encoding.bitrate
        self._holder.start_encoding()
        self.stream: Any = template  # only the segments' template: runs use their own encoders
        self._encoder: Any = None
        self._batch: list[AudioChunk] = []
        self._time_base = Fraction(1, encoding.sample_rate)

    def encode(self, chunk: AudioChunk) -> list[av.Packet]:
        packets: list[av.Packet] = []
        if chunk.new_run or self._encoder is None:
            packets += self.flush()
            self._encoder = self._new_encoder()
        self._batch.append(chunk)
        if len(self._batch) >= self.BATCH_FRAMES or chunk.samples.shape[1] < self.encoding.frame_size:
            packets += self._encode_batch()
        return packets

    def flush(self) -> list[av.Packet]:
        """Everything of the current run, the codec's delay included; the next chunk starts a new run."""
        packets = self._encode_batch()
        if self._encoder is not None:
            encoder, self._encoder = self._encoder, None
            packets += encoder.encode(None)
        return packets

    def close(self) -> None:
        self._holder.close()

    def _encode_batch(self) -> list[av.Packet]:
        if not self._batch:
            return []
        batch, self._batch = self._batch, []
        samples = batch[0].samples if len(batch) == 1 else np.concatenate([c.samples for c in batch], axis=1)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=self.encoding.layout)
        frame.sample_rate, frame.pts, frame.time_base = self.encoding.sample_rate, batch[0].pts, self._time_base
        started = time.perf_counter()
        packets = list(self._encoder.encode(frame))
        ENCODING["audio"].inc(time.perf_counter() - started)
        ENCODED["audio"].inc(len(batch))
        return packets

    def _new_encoder(self) -> Any:
        e = self.encoding
        encoder: Any = av.CodecContext.create(e.codec, "w")
        encoder.sample_rate, encoder.layout, encoder.format = e.sample_rate, e.layout, "fltp"
        encoder.bit_rate, encoder.time_base = e.bitrate, self._time_base
        return encoder
