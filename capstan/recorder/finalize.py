"""After recording: MP4 per stream and MP3 per user, made from the recorded HLS segments.

- **MP4** (TRTC ``hls+mp4``): the video segments of one user and media id, muxed with that
  user's audio when the media id is ``main`` (TRTC merges audio with the main stream), into
  ``..._<mediaid>_<index>.mp4``. H.264 and AAC are copied from TS into MP4, never re-encoded.
  A new index starts before the file would pass ``max_bytes`` or ``max_seconds``, at a video
  keyframe (``2 GiB`` / ``24 h`` by default; both configurable).
- **MP3** (the single-stream function's mode 00): one file per user from the audio segments,
  decoded and encoded with libmp3lame; MP3 has no timestamps, so holes are filled with silence
  and the file keeps wall-clock time. Named like the audio playlist with ``.mp3``.

An assembly of pipeline parts: :class:`~capstan.media.pipeline.sources.SegmentSource` places the
segments on the wall clock (:mod:`capstan.media.timeline`), :mod:`capstan.media.cuts` plans the
numbered files, :class:`~capstan.media.pipeline.files.Mp4Copy` and
:func:`~capstan.media.pipeline.files.open_mp3` write them. A hole in the recording stays a hole in
the MP4's timestamps (the picture before it is held). Segments of failover attempts (``ha<n>_``)
are merged into the same stream; overlapping media is dropped.

Files go to the :class:`~capstan.storage.uploader.Uploader` like the segments did.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from capstan.media import naming
from capstan.media.cuts import MP4_MAX_BYTES, MP4_MAX_SECONDS, CutLimits, plan_cuts, starts_next_file
from capstan.media.naming import FileKind, MediaId, RecordingName, TrackType
from capstan.media.pipeline.encoding import AudioEncoding
from capstan.media.pipeline.files import Mp4Copy, open_mp3
from capstan.media.pipeline.processing import AudioConverter
from capstan.media.pipeline.sources import OPEN_TIMEOUT_SECONDS, PlacedPacket, SegmentSource
from capstan.storage.uploader import Uploader

log = logging.getLogger(__name__)

MP4_CONTENT_TYPE = "video/mp4"
MP3_CONTENT_TYPE = "audio/mpeg"


@dataclass(frozen=True)
class FileRecord:
    file_name: str
    key: str
    user_id: str | None
    track_type: str  # audio, video or audio_video
    media_id: str | None
    size: int
    duration: float
    begin_timestamp_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"fileName": self.file_name, "userId": self.user_id, "trackType": self.track_type,
                "mediaId": self.media_id, "size": self.size, "duration": round(self.duration, 3),
                "beginTimeStamp": self.begin_timestamp_ms}


@dataclass(frozen=True)
class SegmentFile:
    path: Path
    name: RecordingName

    @property
    def start(self) -> float:
        assert self.name.start is not None
        return naming.unix_ms(self.name.start) / 1000

    @property
    def ha(self) -> int:
        return self.name.ha


@dataclass
class StreamGroup:
    """The segments of one output stream: a user's media id (single) or the room (mixed)."""

    sdkappid: int
    room_id: int | str
    user_id: str | None
    media_id: MediaId | None
    video: list[SegmentFile] = field(default_factory=list)
    audio: list[SegmentFile] = field(default_factory=list)


def group_segments(paths: Iterable[str | os.PathLike[str]]) -> list[StreamGroup]:
    """Sort TS files into output streams; files that are not recording segments are skipped."""
    singles: dict[tuple[str, MediaId], StreamGroup] = {}
    audio_by_user: dict[str, list[SegmentFile]] = {}
    mixed: dict[tuple[int, int | str], StreamGroup] = {}
    for raw in paths:
        path = Path(raw)
        try:
            name = naming.parse_name(path.name)
        except ValueError:
            continue
        if name.kind is not FileKind.SEGMENT:
            continue
        segment = SegmentFile(path, name)
        if not name.single_stream:
            group = mixed.setdefault((name.sdkappid, name.room_id),
                                     StreamGroup(name.sdkappid, name.room_id, None, None))
            group.video.append(segment)  # a mixed TS carries both tracks
            continue
        assert name.user_id is not None and name.media_id is not None
        if name.track is TrackType.AUDIO:
            audio_by_user.setdefault(name.user_id, []).append(segment)
            singles.setdefault((name.user_id, MediaId.MAIN),
                               StreamGroup(name.sdkappid, name.room_id, name.user_id, MediaId.MAIN))
        else:
            group = singles.setdefault((name.user_id, name.media_id),
                                       StreamGroup(name.sdkappid, name.room_id, name.user_id, name.media_id))
            group.video.append(segment)
    for (user, media), group in singles.items():
        if media is MediaId.MAIN:
            group.audio = audio_by_user.get(user, [])
    groups = [*mixed.values(), *singles.values()]
    for group in groups:
        group.video.sort(key=lambda s: (s.start, s.name.ha))
        group.audio.sort(key=lambda s: (s.start, s.name.ha))
    return groups


# --- MP4 -------------------------------------------------------------------------------------


def _interleaved(group: StreamGroup, begin: float, tbs: dict[str, Fraction], *, keep: bool) -> Iterator[PlacedPacket]:
    sources: list[Iterator[PlacedPacket]] = []
    if group.user_id is None:  # mixed: both tracks live in the same files
        for kind in ("video", "audio"):
            if group.video and kind in tbs:
                sources.append(SegmentSource(group.video, kind, begin=begin).packets(tbs[kind], keep=keep))
    else:
        if group.video:
            sources.append(SegmentSource(group.video, "video", begin=begin).packets(tbs["video"], keep=keep))
        if group.audio:
            sources.append(SegmentSource(group.audio, "audio", begin=begin).packets(tbs["audio"], keep=keep))
    keyed = (((float(p.dts * tbs[p.kind]), i, p) for p in src) for i, src in enumerate(sources))
    for _, _, p in heapq.merge(*keyed, key=lambda item: (item[0], item[1])):
        yield p


def _templates(group: StreamGroup) -> dict[str, Any]:
    """Open one segment per track to learn codecs and time bases (kept open for templates)."""
    found: dict[str, Any] = {}
    for kind, segments in (("video", group.video), ("audio", group.audio if group.user_id else group.video)):
        if not segments:
            continue
        container = av.open(str(segments[0].path), timeout=OPEN_TIMEOUT_SECONDS)
        streams = container.streams.video if kind == "video" else container.streams.audio
        if streams:
            found[kind] = (container, streams[0])
        else:
            container.close()
    return found


def write_mp4s(group: StreamGroup, out_dir: Path, limits: CutLimits | None = None) -> list[tuple[Path, FileRecord]]:
    """The group's MP4s: packets copied, a new index at each planned cut."""
    limits = limits or CutLimits()
    templates = _templates(group)
    try:
        if not templates:
            return []
        streams = {kind: stream for kind, (_, stream) in templates.items()}
        tbs = {kind: stream.time_base for kind, stream in streams.items()}
        begin = min(s[0].start for s in (group.video, group.audio) if s)
        cut_kind = "video" if "video" in templates else "audio"
        cuts = iter(plan_cuts(_interleaved(group, begin, tbs, keep=False), tbs, limits, cut_kind))
        track_type = "audio_video" if len(templates) == 2 else next(iter(templates))
        results: list[tuple[Path, FileRecord]] = []
        index, writer = 0, None
        upcoming = next(cuts, None)
        for p in _interleaved(group, begin, tbs, keep=True):
            if writer is not None and upcoming is not None and starts_next_file(
                    p, float(p.dts * tbs[p.kind]), upcoming, cut_kind):
                results.append(_closed(group, writer, begin, track_type))
                writer, upcoming = None, next(cuts, None)
            if writer is None:
                index += 1
                writer = Mp4Copy(out_dir / _mp4_name(group, index), streams)
            writer.mux(p)
        if writer is not None:
            results.append(_closed(group, writer, begin, track_type))
        return results
    finally:
        for container, _ in templates.values():
            container.close()


def _mp4_name(group: StreamGroup, index: int) -> str:
    if group.user_id is None:
        return naming.mixed_mp4_name(group.sdkappid, group.room_id, index)
    return naming.single_mp4_name(group.sdkappid, group.room_id, group.user_id, group.media_id or MediaId.MAIN, index)


def _closed(group: StreamGroup, writer: Mp4Copy, begin: float, track_type: str) -> tuple[Path, FileRecord]:
    writer.close()
    record = FileRecord(
        file_name=writer.path.name, key="", user_id=group.user_id, track_type=track_type,
        media_id=str(group.media_id or MediaId.MAIN) if group.user_id is not None else None,
        size=writer.path.stat().st_size, duration=writer.duration,
        begin_timestamp_ms=round((begin + (writer.first or 0.0)) * 1000))
    return writer.path, record


# --- MP3 -------------------------------------------------------------------------------------


def mp3_name(group: StreamGroup) -> str:
    if group.user_id is None:
        return naming.mixed_mp3_name(group.sdkappid, group.room_id)
    return naming.single_mp3_name(group.sdkappid, group.room_id, group.user_id)


def write_mp3(group: StreamGroup, out_dir: Path, *, bitrate: int = 64000) -> tuple[Path, FileRecord] | None:
    """One MP3 of the group's audio on the wall clock (MP3 has no timestamps: holes become silence)."""
    segments = group.audio if group.user_id is not None else group.video
    if not segments:
        return None
    with av.open(str(segments[0].path), timeout=OPEN_TIMEOUT_SECONDS) as probe:
        if not probe.streams.audio:
            return None
        source = probe.streams.audio[0].codec_context
        encoding = AudioEncoding(source.sample_rate, 1 if source.layout.name == "mono" else 2, bitrate)
    name = mp3_name(group)
    path = out_dir / name
    begin = segments[0].start
    with open_mp3(path, encoding) as track:
        convert = AudioConverter(encoding.sample_rate, encoding.layout)
        for seconds, samples in SegmentSource(segments, "audio", begin=begin).audio_runs(convert):
            for _ in track.place(seconds, samples):
                pass
    record = FileRecord(file_name=name, key="", user_id=group.user_id, track_type="audio",
                        media_id=str(MediaId.MAIN) if group.user_id is not None else None,
                        size=path.stat().st_size, duration=track.seconds,
                        begin_timestamp_ms=round(begin * 1000))
    return path, record


# --- everything ------------------------------------------------------------------------------


def finalize(
    segment_paths: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    uploader: Uploader | None = None,
    key_prefix: str | None = None,
    task_id: str | None = None,
    mp4: bool = True,
    mp3: bool = False,
    mp4_max_bytes: int = MP4_MAX_BYTES,
    mp4_max_seconds: float = MP4_MAX_SECONDS,
    mp3_bitrate: int = 64000,
    on_made: Callable[[FileRecord], None] | None = None,
    on_failed: Callable[[str, str], None] | None = None,
) -> list[FileRecord]:
    """Make the MP4s and/or MP3s of every stream in ``segment_paths`` and hand them to ``uploader``.

    ``on_made`` hears of each file before it is handed over (so its storing is never missed);
    ``on_failed`` of each stream that could not be made, by the name its first file would have had.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[FileRecord] = []
    for group in group_segments(p for p in segment_paths if _readable(p)):
        made: list[tuple[Path, FileRecord]] = []
        try:
            if mp4:
                made += write_mp4s(group, out, CutLimits(mp4_max_bytes, mp4_max_seconds))
            if mp3 and (group.user_id is None or group.media_id is MediaId.MAIN):
                result = write_mp3(group, out, bitrate=mp3_bitrate)
                if result is not None:
                    made.append(result)
        except (av.FFmpegError, ValueError, OSError) as exc:  # one stream's damage must not cost the others
            log.error("no MP4/MP3 for %s/%s: %s", group.user_id, group.media_id, exc)
            if on_failed is not None:
                wanted = [_mp4_name(group, 1)] if mp4 else []
                wanted += [mp3_name(group)] if mp3 and (group.user_id is None or group.media_id is MediaId.MAIN) else []
                for name in wanted:
                    on_failed(naming.object_key(name, prefix=key_prefix, task_id=task_id), str(exc))
            continue
        for path, record in made:
            key = naming.object_key(record.file_name, prefix=key_prefix, task_id=task_id)
            record = FileRecord(**{**record.__dict__, "key": key})
            if on_made is not None:
                on_made(record)
            if uploader is not None:
                content = MP3_CONTENT_TYPE if path.suffix == ".mp3" else MP4_CONTENT_TYPE
                uploader.put(path, key, content)
            records.append(record)
    return records


def _readable(path: str | os.PathLike[str]) -> bool:
    """A segment that holds at least one packet (a crash or a stop can leave an empty or cut file)."""
    try:
        with av.open(os.fspath(path), timeout=OPEN_TIMEOUT_SECONDS) as container:
            return any(packet.size for packet in container.demux())
    except (av.FFmpegError, OSError) as exc:
        log.warning("skipping unreadable segment %s: %s", os.fspath(path), exc)
        return False


def finalize_directory(directory: str | os.PathLike[str], out_dir: str | os.PathLike[str], **kwargs: Any
                       ) -> list[FileRecord]:
    return finalize(sorted(Path(directory).rglob("*.ts")), out_dir, **kwargs)
