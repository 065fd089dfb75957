"""After recording: MP4 per stream and MP3 per user, made from the recorded HLS segments.

- **MP4** (TRTC ``hls+mp4``): the video segments of one user and media id, muxed with that
  user's audio when the media id is ``main`` (TRTC merges audio with the main stream), into
  ``..._<mediaid>_<index>.mp4``. H.264 and AAC are copied from TS into MP4, never re-encoded.
  A new index starts before the file would pass ``max_bytes`` or ``max_seconds``, at a video
  keyframe (``2 GiB`` / ``24 h`` by default; both configurable).
- **MP3** (the single-stream function's mode 00): one file per user from the audio segments,
  decoded and encoded with libmp3lame; MP3 has no timestamps, so holes are filled with silence
  and the file keeps wall-clock time. Named like the audio playlist with ``.mp3``.

Placement: a segment's ``<utc>`` is the wall time of its first packet; a packet lands at
``utc + (pts - first pts)``. Segments that continue the previous one's timeline (as a single
writer produces them) keep its exact timestamps, so rounding the name to milliseconds never
adds jitter. A hole in the recording stays a hole in the MP4's timestamps (the picture before it
is held). Segments of failover attempts (``ha<n>_``) are merged into the same stream; overlapping
media is dropped.

Files go to the :class:`~capstan.storage.uploader.Uploader` like the segments did.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from capstan.media import naming
from capstan.media.naming import FileKind, MediaId, RecordingName, TrackType
from capstan.storage.uploader import Uploader

log = logging.getLogger(__name__)

MP4_MAX_BYTES = 2 * 1024**3
MP4_MAX_SECONDS = 24 * 3600
MP4_CONTENT_TYPE = "video/mp4"
MP3_CONTENT_TYPE = "audio/mpeg"
MP3_FRAME = 1152
# A segment whose first packet is within this of where the previous segment's timeline puts it
# continues that timeline (exact PTS); otherwise it is placed by its <utc> name.
CONTINUITY_SECONDS = 0.05
# Estimated MP4 index (moov) cost, used to keep a file below max_bytes.
MOOV_FIXED_BYTES = 4096
MOOV_BYTES_PER_PACKET = 12
AUDIO_JITTER_SECONDS = 0.005
# At an MP4 cut, audio this close before the keyframe goes to the next file (one AAC frame at
# 16 kHz: the priming frame of a run that starts at the keyframe).
AUDIO_LEAD_SECONDS = 0.07
OPEN_TIMEOUT_SECONDS = 30.0


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


# --- packets on one output timeline ----------------------------------------------------------


@dataclass
class _Pkt:
    kind: str
    dts: int  # output timeline, in the source stream's time base
    pts: int
    duration: int
    size: int
    keyframe: bool
    packet: Any  # av.Packet (None in the planning pass)

    def seconds(self, tb: Fraction) -> float:
        return float(self.dts * tb)


def _segment_origin(container: Any) -> float | None:
    """Time of the segment's first packet (any track): the moment its ``<utc>`` name stands for."""
    firsts = [float(st.start_time * st.time_base) for st in container.streams
              if st.start_time is not None and st.time_base is not None]
    return min(firsts) if firsts else None


def _track_packets(
    segments: list[SegmentFile], kind: str, begin: float, tb: Fraction, *, keep: bool,
) -> Iterator[_Pkt]:
    """Packets of one track across its segments, on the output timeline (0 = ``begin``)."""
    offset: int | None = None
    last_dts: int | None = None
    held: _Pkt | None = None
    steps: list[int] = []
    for number, segment in enumerate(segments):
        following = segments[number + 1] if number + 1 < len(segments) else None
        # A later failover attempt takes over where its first segment starts (on a keyframe).
        handover = None
        if following is not None and following.name.ha != segment.name.ha:
            handover = round((following.start - begin) / tb)
        with av.open(str(segment.path), timeout=OPEN_TIMEOUT_SECONDS) as container:
            streams = container.streams.video if kind == "video" else container.streams.audio
            origin = _segment_origin(container)
            if not streams or origin is None:
                continue
            stream = streams[0]
            if stream.time_base != tb:
                raise ValueError(f"{segment.path.name}: time base {stream.time_base}, expected {tb}")
            placed = round((segment.start - begin) / tb) - round(origin / tb)  # offset this name implies
            if offset is None or abs(placed - offset) > CONTINUITY_SECONDS / tb:
                offset = placed  # a new timeline (first segment, new writer, failover attempt)
            need_keyframe = False
            for packet in container.demux(stream):
                if packet.dts is None or packet.pts is None or packet.size == 0:
                    continue
                dts = packet.dts + offset
                if handover is not None and dts >= handover:
                    break
                if last_dts is not None and dts <= last_dts:
                    need_keyframe = kind == "video"  # overlaps media already placed
                    continue
                if need_keyframe and not packet.is_keyframe:
                    continue  # would reference pictures that were dropped
                need_keyframe = False
                if held is not None:
                    step = dts - held.dts
                    if kind == "video" or held.duration <= 0:
                        typical = _median(steps)
                        held.duration = step if not steps or step <= 3 * typical else typical
                    steps.append(step)
                    del steps[:-50]
                    yield held
                held = _Pkt(kind, dts, packet.pts + offset, packet.duration or 0, packet.size,
                            bool(packet.is_keyframe), packet if keep else None)
                last_dts = dts
    if held is not None:
        if held.duration <= 0 or kind == "video":
            held.duration = _median(steps) if steps else round(Fraction(1, 15) / tb)
        yield held


def _median(values: list[int]) -> int:
    return int(np.median(values)) if values else 0


def _first_wall(segments: list[SegmentFile]) -> float | None:
    return segments[0].start if segments else None


# --- MP4 -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cut:
    at: float  # output seconds of the keyframe that starts the next file
    earliest: float  # other-track packets from here on already belong to the next file


def _plan_cuts(packets: Iterator[_Pkt], tbs: dict[str, Fraction], max_bytes: int, max_seconds: float,
               cut_kind: str) -> list[_Cut]:
    """Where new MP4 files start (not counting the first): ``cut_kind`` keyframes chosen so each
    file stays within ``max_bytes`` (estimated, index included) and ``max_seconds``."""
    cuts: list[_Cut] = []
    file_start: float | None = None
    file_bytes = 0
    candidate: tuple[_Cut, int] | None = None  # a possible cut and the file's bytes before it
    overflow = False
    previous = float("-inf")  # time of the last cut_kind packet
    for p in packets:
        t = float(p.dts * tbs[p.kind])
        end = float((p.dts + p.duration) * tbs[p.kind])
        is_candidate = p.kind == cut_kind and (p.keyframe or cut_kind == "audio")
        if is_candidate:
            # audio just before a keyframe (e.g. the AAC priming of a run that starts there) goes
            # with it, unless a picture lies in between
            cut = _Cut(t, max(previous + 1e-6, t - AUDIO_LEAD_SECONDS) if cut_kind == "video" else t)
        if file_start is None:
            file_start, file_bytes = t, MOOV_FIXED_BYTES
        elif is_candidate and overflow:
            cuts.append(cut)
            file_start, file_bytes, candidate, overflow = t, MOOV_FIXED_BYTES, None, False
        if is_candidate and t > file_start:
            candidate = (cut, file_bytes)
        if p.kind == cut_kind:
            previous = t
        file_bytes += p.size + MOOV_BYTES_PER_PACKET
        if overflow or (file_bytes <= max_bytes and end - file_start <= max_seconds):
            continue
        if candidate is not None:
            chosen, before = candidate
            cuts.append(chosen)
            file_start, file_bytes, candidate = chosen.at, MOOV_FIXED_BYTES + file_bytes - before, None
            overflow = file_bytes > max_bytes or end - file_start > max_seconds
        else:
            overflow = True  # one GOP is larger than the limit: cut at the next keyframe
    return cuts


def _interleaved(group: StreamGroup, begin: float, tbs: dict[str, Fraction], *, keep: bool) -> Iterator[_Pkt]:
    sources: list[Iterator[_Pkt]] = []
    if group.user_id is None:  # mixed: both tracks live in the same files
        if group.video:
            for kind in ("video", "audio"):
                if kind in tbs:
                    sources.append(_track_packets(group.video, kind, begin, tbs[kind], keep=keep))
    else:
        if group.video:
            sources.append(_track_packets(group.video, "video", begin, tbs["video"], keep=keep))
        if group.audio:
            sources.append(_track_packets(group.audio, "audio", begin, tbs["audio"], keep=keep))
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


def write_mp4s(
    group: StreamGroup, out_dir: Path, *, max_bytes: int = MP4_MAX_BYTES, max_seconds: float = MP4_MAX_SECONDS,
) -> list[tuple[Path, FileRecord]]:
    templates = _templates(group)
    try:
        if not templates:
            return []
        tbs = {kind: stream.time_base for kind, (_, stream) in templates.items()}
        starts = [s for s in (_first_wall(group.video), _first_wall(group.audio)) if s is not None]
        begin = min(starts)
        cut_kind = "video" if "video" in templates else "audio"
        cuts = _plan_cuts(_interleaved(group, begin, tbs, keep=False), tbs, max_bytes, max_seconds, cut_kind)
        track_type = "audio_video" if len(templates) == 2 else next(iter(templates))
        results: list[tuple[Path, FileRecord]] = []
        writer: _Mp4 | None = None
        pending_cuts = iter(cuts)
        upcoming = next(pending_cuts, None)
        for p in _interleaved(group, begin, tbs, keep=True):
            if writer is None:
                writer = _Mp4(group, 1, out_dir, templates, begin, track_type)
            elif upcoming is not None and _starts_next_file(p, float(p.dts * tbs[p.kind]), upcoming, cut_kind):
                results.append(writer.close())
                writer = _Mp4(group, writer.index + 1, out_dir, templates, begin, track_type)
                upcoming = next(pending_cuts, None)
            writer.mux(p)
        if writer is not None:
            results.append(writer.close())
        return results
    finally:
        for container, _ in templates.values():
            container.close()


def _starts_next_file(p: _Pkt, t: float, cut: _Cut, cut_kind: str) -> bool:
    if p.kind == cut_kind:
        return t >= cut.at - 1e-9 and (p.keyframe or cut_kind == "audio")
    return t >= cut.earliest


class _Mp4:
    def __init__(self, group: StreamGroup, index: int, out_dir: Path, templates: dict[str, Any], begin: float,
                 track_type: str) -> None:
        media = group.media_id or MediaId.MAIN
        if group.user_id is None:
            self.name = naming.mixed_mp4_name(group.sdkappid, group.room_id, index)
        else:
            self.name = naming.single_mp4_name(group.sdkappid, group.room_id, group.user_id, media, index)
        self.group, self.index, self.begin, self.track_type = group, index, begin, track_type
        self.path = out_dir / self.name
        self.partial = out_dir / f"{self.name}.part"
        self.container = av.open(str(self.partial), "w", format="mp4")
        self.streams = {kind: self.container.add_stream_from_template(stream, opaque=False)
                        for kind, (_, stream) in templates.items()}
        self.tbs = {kind: stream.time_base for kind, (_, stream) in templates.items()}
        self.origin: dict[str, int] = {}  # first dts of the file in each track's time base
        self.first: float | None = None
        self.end = 0.0

    def mux(self, p: _Pkt) -> None:
        tb = self.tbs[p.kind]
        if self.first is None:
            self.first = float(p.dts * tb)
        origin = round(self.first / tb)
        packet = p.packet
        packet.stream = self.streams[p.kind]
        packet.time_base = tb
        packet.dts, packet.pts, packet.duration = p.dts - origin, p.pts - origin, p.duration
        self.end = max(self.end, float((p.dts + p.duration) * tb))
        self.container.mux(packet)

    def close(self) -> tuple[Path, FileRecord]:
        self.container.close()
        os.replace(self.partial, self.path)
        first = self.first or 0.0
        record = FileRecord(
            file_name=self.name, key="", user_id=self.group.user_id, track_type=self.track_type,
            media_id=str(self.group.media_id or MediaId.MAIN) if self.group.user_id is not None else None,
            size=self.path.stat().st_size, duration=self.end - first,
            begin_timestamp_ms=round((self.begin + first) * 1000))
        return self.path, record


# --- MP3 -------------------------------------------------------------------------------------


def mp3_name(group: StreamGroup) -> str:
    if group.user_id is None:
        return naming.mixed_playlist_name(group.sdkappid, group.room_id).removesuffix(".m3u8") + ".mp3"
    playlist = naming.single_playlist_name(group.sdkappid, group.room_id, group.user_id, MediaId.MAIN,
                                           TrackType.AUDIO)
    return playlist.removesuffix(".m3u8") + ".mp3"


def write_mp3(group: StreamGroup, out_dir: Path, *, bitrate: int = 64000) -> tuple[Path, FileRecord] | None:
    segments = group.audio if group.user_id is not None else group.video
    if not segments:
        return None
    name = mp3_name(group)
    path, partial = out_dir / name, out_dir / f"{name}.part"
    begin = segments[0].start
    with av.open(str(segments[0].path), timeout=OPEN_TIMEOUT_SECONDS) as probe:
        if not probe.streams.audio:
            return None
        source = probe.streams.audio[0].codec_context
        rate, layout = source.sample_rate, source.layout.name
    channels = 1 if layout == "mono" else 2
    layout = "mono" if channels == 1 else "stereo"
    written = 0
    try:
        with av.open(str(partial), "w", format="mp3") as container:
            stream = container.add_stream("libmp3lame", rate=rate)
            stream.layout, stream.bit_rate = layout, bitrate
            pending = np.zeros((channels, 0), np.float32)

            def emit(block: np.ndarray) -> None:
                nonlocal written
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = rate, written, Fraction(1, rate)
                container.mux(stream.encode(frame))
                written += block.shape[1]

            def push(samples: np.ndarray) -> None:
                nonlocal pending
                pending = np.concatenate([pending, samples], axis=1) if pending.shape[1] else samples
                whole = pending.shape[1] // MP3_FRAME * MP3_FRAME
                for offset in range(0, whole, MP3_FRAME):
                    emit(pending[:, offset:offset + MP3_FRAME])
                pending = pending[:, whole:]

            tolerance = round(AUDIO_JITTER_SECONDS * rate)
            for position, samples in _placed_audio(segments, begin, rate, layout):
                cursor = written + pending.shape[1]
                if position > cursor + tolerance:
                    gap = position - cursor
                    while gap > 0:  # silence in bounded blocks, whatever the hole's length
                        chunk = min(gap, rate * 10)
                        push(np.zeros((channels, chunk), np.float32))
                        gap -= chunk
                elif position < cursor - tolerance:
                    samples = samples[:, cursor - position:]
                if samples.shape[1]:
                    push(samples)
            if pending.shape[1]:
                emit(pending)
            container.mux(stream.encode(None))
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
    record = FileRecord(file_name=name, key="", user_id=group.user_id, track_type="audio",
                        media_id=str(MediaId.MAIN) if group.user_id is not None else None,
                        size=path.stat().st_size, duration=written / rate,
                        begin_timestamp_ms=round(begin * 1000))
    return path, record


def _placed_audio(
    segments: list[SegmentFile], begin: float, rate: int, layout: str,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decoded audio as (sample position after ``begin``, fltp samples), segment timelines joined
    like the MP4 path joins them."""
    resampler = None
    offset: float | None = None
    for segment in segments:
        with av.open(str(segment.path), timeout=OPEN_TIMEOUT_SECONDS) as container:
            origin = _segment_origin(container)
            if not container.streams.audio or origin is None:
                continue
            placed = segment.start - begin - origin
            if offset is None or abs(placed - offset) > CONTINUITY_SECONDS:
                offset = placed
            for frame in container.decode(container.streams.audio[0]):
                if frame.time is None:
                    continue
                position = round((frame.time + offset) * rate)
                if frame.format.name != "fltp" or frame.layout.name != layout or frame.sample_rate != rate:
                    if resampler is None:
                        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
                    frame.pts = None
                    outs = [f.to_ndarray() for f in resampler.resample(frame)]
                    if not outs:
                        continue
                    yield position, np.concatenate(outs, axis=1)
                else:
                    yield position, frame.to_ndarray()


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
) -> list[FileRecord]:
    """Make the MP4s and/or MP3s of every stream in ``segment_paths`` and hand them to ``uploader``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[FileRecord] = []
    for group in group_segments(p for p in segment_paths if _readable(p)):
        made: list[tuple[Path, FileRecord]] = []
        try:
            if mp4:
                made += write_mp4s(group, out, max_bytes=mp4_max_bytes, max_seconds=mp4_max_seconds)
            if mp3 and (group.user_id is None or group.media_id is MediaId.MAIN):
                result = write_mp3(group, out, bitrate=mp3_bitrate)
                if result is not None:
                    made.append(result)
        except (av.FFmpegError, ValueError, OSError) as exc:  # one stream's damage must not cost the others
            log.error("no MP4/MP3 for %s/%s: %s", group.user_id, group.media_id, exc)
            continue
        for path, record in made:
            key = naming.object_key(record.file_name, prefix=key_prefix, task_id=task_id)
            record = FileRecord(**{**record.__dict__, "key": key})
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
