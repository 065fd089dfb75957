"""File sinks: MP4 files of copied packets, and encoded audio tracks (an MP3 file, a merged MP4's sound).

- :class:`Mp4Copy` writes packets already encoded (the recorder's H.264/AAC from its TS segments)
  into one MP4 without re-encoding; numbering and the 2 GB / 24 h cuts are the caller's
  (:mod:`capstan.media.cuts`).
- :class:`EncodedAudio` is one audio stream of an output container fed through the shared
  :class:`~capstan.media.audio.AudioFramer`: placed samples in, silence where nothing covers the
  time, overlaps dropped, fixed-size frames to the encoder. :func:`open_mp3` is an MP3 file made
  of one such stream.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from capstan.media.audio import AudioFramer
from capstan.media.pipeline.encoding import AudioEncoder, AudioEncoding
from capstan.media.pipeline.sources import PlacedPacket

# Differences between where samples are placed and where the previous ones ended below this are
# jitter (absorbed); beyond it, silence is inserted or the overlap dropped.
AUDIO_JITTER_SECONDS = 0.005


class Mp4Copy:
    """One MP4 of copied packets, written under ``<name>.part`` and renamed when complete."""

    def __init__(self, path: Path, templates: dict[str, Any]) -> None:
        self.path, self.partial = path, path.with_name(path.name + ".part")
        self.container = av.open(str(self.partial), "w", format="mp4")
        self.streams = {kind: self.container.add_stream_from_template(stream, opaque=False)
                        for kind, stream in templates.items()}
        self.tbs: dict[str, Fraction] = {kind: stream.time_base for kind, stream in templates.items()}
        self.first: float | None = None  # output seconds of the file's first packet
        self.end = 0.0

    def mux(self, p: PlacedPacket) -> None:
        tb = self.tbs[p.kind]
        if self.first is None:
            self.first = float(p.dts * tb)
        origin = round(self.first / tb)
        packet = p.packet
        packet.stream, packet.time_base = self.streams[p.kind], tb
        packet.dts, packet.pts, packet.duration = p.dts - origin, p.pts - origin, p.duration
        self.end = max(self.end, float((p.dts + p.duration) * tb))
        self.container.mux(packet)

    def close(self) -> None:
        self.container.close()
        os.replace(self.partial, self.path)

    @property
    def duration(self) -> float:
        return self.end - (self.first or 0.0)


class EncodedAudio:
    """An audio stream of ``container`` on a sample clock that starts at output time 0.

    ``total`` (samples), when given, is the exact length: the end is filled with silence and
    anything past it dropped.
    """

    def __init__(self, container: Any, encoding: AudioEncoding, *, total: int | None = None) -> None:
        self.container, self.encoding, self.total = container, encoding, total
        self.encoder = AudioEncoder(encoding)
        self.stream = container.add_stream_from_template(self.encoder.stream)
        self.framer = AudioFramer(encoding.frame_size, encoding.channels, fill_gaps=True, limit=total, start=0,
                                  tolerance=round(AUDIO_JITTER_SECONDS * encoding.sample_rate))

    @property
    def seconds(self) -> float:
        """Output time up to which samples were handed to the encoder."""
        return self.framer.emitted / self.encoding.sample_rate

    def place(self, seconds: float, samples: np.ndarray) -> Iterator[float]:
        """Samples whose first one belongs at ``seconds``; yields the progress as they are encoded."""
        for chunk in self.framer.place(round(seconds * self.encoding.sample_rate), samples):
            self._mux(self.encoder.encode(chunk))
            yield self.seconds

    def finish(self) -> Iterator[float]:
        if self.total is not None:
            for chunk in self.framer.fill_to(self.total):
                self._mux(self.encoder.encode(chunk))
                yield self.seconds
        for chunk in self.framer.flush(pad=False):
            self._mux(self.encoder.encode(chunk))
        self._mux(self.encoder.flush())
        self.encoder.close()
        yield self.seconds

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            packet.stream = self.stream
            self.container.mux(packet)


@contextlib.contextmanager
def open_mp3(path: Path, encoding: AudioEncoding) -> Iterator[EncodedAudio]:
    """An MP3 file (libmp3lame) written under ``<name>.part``, renamed when the block ends without error."""
    partial = path.with_name(path.name + ".part")
    try:
        with av.open(str(partial), "w", format="mp3") as container:
            track = EncodedAudio(container, encoding.with_codec("libmp3lame"))
            yield track
            for _ in track.finish():
                pass
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
