"""Where a web recording's files go and what they are called (seed 003 Output.Cos), and the MP4
made from the recorded segments.

Naming is pure: ``targetDir`` (default: the task id) / ``targetName`` (default: the stop timestamp
in ms, as the seed's ``1621406865789.mp4``). HLS segments are uploaded while recording, before the
stop timestamp is known, so they are named ``<stem>_<utc ms>.ts`` (``stem``: targetName without its
extension, else the task id) and only the playlist carries the final name.

The MP4 is an assembly of pipeline parts: the TS segments the recording wrote (its spool: a crash
loses at most the open one) → :class:`~capstan.media.pipeline.sources.SegmentSource` (video and
audio packets, not decoded) → :class:`~capstan.media.pipeline.files.Mp4Copy`. Nothing is re-encoded.
"""

from __future__ import annotations

import heapq
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import av

from capstan.media.pipeline.files import Mp4Copy
from capstan.media.pipeline.sources import OPEN_TIMEOUT_SECONDS, PlacedPacket, SegmentSource

EXTENSIONS = {"mp4": ".mp4", "hls": ".m3u8"}


def target_dir(given: str | None, task_id: str) -> str:
    """The directory in the bucket, without leading or trailing slashes (``11234/`` → ``11234``)."""
    cleaned = "/".join(p for p in (given or "").split("/") if p and p != ".")
    if ".." in cleaned.split("/"):
        raise ValueError("output.targetDir may not contain '..'")
    return cleaned or task_id


def file_name(given: str | None, muxer: str, stop_ms: int) -> str:
    """The recording's file name: targetName with the muxer's extension, else ``<stop ms>.<ext>``."""
    ext = EXTENSIONS[muxer]
    if not given:
        return f"{stop_ms}{ext}"
    return given if given.lower().endswith(ext) else f"{_stem(given)}{ext}"


def segment_stem(given: str | None, task_id: str) -> str:
    return _stem(given) if given else task_id


def _stem(name: str) -> str:
    base, dot, ext = name.rpartition(".")
    return base if dot and base and ext.lower() in ("mp4", "m3u8", "ts") else name


def file_url(key: str, *, domain: str | None, public_base_url: str | None) -> str | None:
    """URL of a stored file: on ``domain`` (seed 003 Output.Cos.Domain; https unless it says
    otherwise), else under the storage's public base URL; None when neither is set (presign it)."""
    quoted = urllib.parse.quote(key)
    if domain:
        base = domain if "://" in domain else f"https://{domain}"
        return f"{base.rstrip('/')}/{quoted}"
    if public_base_url:
        return f"{public_base_url.rstrip('/')}/{quoted}"
    return None


@dataclass
class WebNames:
    """:class:`~capstan.media.pipeline.hls.SegmentNaming` for a web recording; ``final`` is set at
    the stop, before the last playlist is written. Attempt n > 1 (a failover) writes ``ha<n-1>_``
    segments, as seed 002 names a recovered recorder's files."""

    stem: str
    final: str | None = None
    user_id: str | None = None
    ha: int = 0

    @property
    def playlist(self) -> str:
        return self.final or f"{self.stem}.m3u8"

    def segment(self, start: datetime) -> str:
        prefix = f"ha{self.ha}_" if self.ha else ""
        return f"{prefix}{self.stem}_{round(start.timestamp() * 1000)}.ts"


def leftover_segments(directory: Path, stem: str, exclude: set[str]) -> list[RecordedSegment]:
    """Segments an earlier attempt of this task left in the spool (its work directory survives a
    failover), in time order; ``exclude``: this attempt's own."""
    pattern = re.compile(rf"^(?:ha(\d+)_)?{re.escape(stem)}_(\d+)\.ts(?:\.part)?$")
    found = []
    # a segment still open when its attempt died is kept too: TS read up to its last whole packet
    for path in directory.glob("*.ts*") if directory.is_dir() else []:
        m = pattern.match(path.name)
        if m and path.name not in exclude and path.stat().st_size > 0:
            found.append(RecordedSegment(path, int(m.group(2)) / 1000, int(m.group(1) or 0)))
    return sorted(found, key=lambda s: (s.start, s.ha))


@dataclass(frozen=True)
class RecordedSegment:
    """A closed TS segment of this recording and the wall time of its first packet (SegmentRef)."""

    path: Path
    start: float
    ha: int = 0


def _templates(first: Path) -> tuple[Any, dict[str, Any]]:
    container = av.open(str(first), timeout=OPEN_TIMEOUT_SECONDS)
    streams: dict[str, Any] = {}
    if container.streams.video:
        streams["video"] = container.streams.video[0]
    if container.streams.audio:
        streams["audio"] = container.streams.audio[0]
    return container, streams


def _interleaved(segments: Sequence[RecordedSegment], kinds: dict[str, Any]) -> Iterator[PlacedPacket]:
    begin = segments[0].start
    sources = [SegmentSource(segments, kind, begin=begin).packets(stream.time_base, keep=True)
               for kind, stream in kinds.items()]
    keyed = (((float(p.dts * kinds[p.kind].time_base), i, p) for p in src) for i, src in enumerate(sources))
    for _, _, p in heapq.merge(*keyed, key=lambda item: (item[0], item[1])):
        yield p


def write_mp4(segments: Sequence[RecordedSegment], path: Path) -> float:
    """One MP4 of every segment's packets (copied); its duration in seconds."""
    if not segments:
        raise ValueError("nothing was recorded")
    holder, streams = _templates(segments[0].path)
    try:
        if not streams:
            raise ValueError(f"{segments[0].path.name} has no audio or video stream")
        writer = Mp4Copy(path, streams)
        try:
            for packet in _interleaved(segments, streams):
                writer.mux(packet)
        except BaseException:
            writer.container.close()
            writer.partial.unlink(missing_ok=True)
            raise
        writer.close()
        return writer.duration
    finally:
        holder.close()
