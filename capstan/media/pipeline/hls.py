"""The HLS sink: encoded packets in, TRTC-named MPEG-TS segments and TRTC playlists out, to the uploader.

Segments are cut at about ``segment_seconds`` (video on keyframes: the assembly forces an IDR
picture at each boundary, :meth:`HlsSink.next_cut`). When a segment closes it is handed to the
:class:`~capstan.storage.uploader.Uploader`, then the rewritten playlist (after the segment, so
the bucket never lists a missing file); a crash therefore loses at most the open segment
(DESIGN §6). Each segment is a fresh TS container fed with the encoders' packets; timestamps
continue across segments, as in any HLS recorder. ``#EXT-X-TRTC-VIDEO-METADATA`` gives the
stored picture size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av

from capstan.media import naming, playlist
from capstan.media.naming import MediaId, TrackType
from capstan.media.timeline import TS_HZ, CaptureClock
from capstan.storage.uploader import Uploader

SEGMENT_CONTENT_TYPE = "video/mp2t"
PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
# Let the TS muxer pack several AAC frames into one PES (max_delay; without it every 21 ms frame
# costs its own PES and TS packets, ~2.5x the size) but keep our timestamps as they are (copyts).
TS_OPTIONS = {"max_delay": "500000", "mpegts_copyts": "1"}


@dataclass(frozen=True)
class StreamNames:
    """How one written stream is named (all spelling comes from :mod:`capstan.media.naming`)."""

    sdkappid: int
    room_id: int | str
    user_id: str | None = None  # None: the mixed stream
    media_id: MediaId = MediaId.MAIN
    track: TrackType | None = None  # None: audio and video in one TS (mixed stream)
    ha: int = 0

    @classmethod
    def single(cls, sdkappid: int, room_id: int | str, user_id: str, media_id: MediaId | str,
               track: TrackType | str, *, ha: int = 0) -> StreamNames:
        return cls(sdkappid, room_id, user_id, MediaId(media_id), TrackType(track), ha)

    @classmethod
    def mixed(cls, sdkappid: int, room_id: int | str, *, ha: int = 0) -> StreamNames:
        return cls(sdkappid, room_id, ha=ha)

    @property
    def playlist(self) -> str:
        if self.user_id is None:
            return naming.mixed_playlist_name(self.sdkappid, self.room_id, ha=self.ha)
        assert self.track is not None
        return naming.single_playlist_name(self.sdkappid, self.room_id, self.user_id, self.media_id, self.track,
                                           ha=self.ha)

    def segment(self, start: datetime) -> str:
        if self.user_id is None:
            return naming.mixed_segment_name(self.sdkappid, self.room_id, start, ha=self.ha)
        assert self.track is not None
        return naming.single_segment_name(self.sdkappid, self.room_id, self.user_id, self.media_id, self.track,
                                          start, ha=self.ha)


@dataclass(frozen=True)
class HlsOutput:
    """Where one stream's segments go: a local directory, then (optionally) the uploader."""

    work_dir: Path
    uploader: Uploader | None = None
    segment_seconds: float = 10.0
    key_prefix: str | None = None
    task_id: str | None = None
    keep_segments: bool = False  # keep a local copy (tests, benchmarks) besides the uploaded one

    def key(self, name: str) -> str:
        return naming.object_key(name, prefix=self.key_prefix, task_id=self.task_id)


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    key: str
    start: float  # wall clock, Unix seconds
    duration: float
    size: int
    local_path: str | None  # kept copy (keep_segments=True or no uploader), else None once handed over


@dataclass(frozen=True)
class FirstSegment:
    """What the recorder needs for events 307 (FileName/UserId/TrackType/BeginTimeStamp) and 304."""

    playlist_name: str
    playlist_key: str
    segment: SegmentInfo
    user_id: str | None
    track_type: str  # audio, video or audio_video
    begin_timestamp_ms: int


@dataclass
class _Segment:
    name: str
    path: Path
    container: Any
    streams: dict[str, Any]
    start_ticks: int  # 1/90000, TS timeline
    end_ticks: int = 0
    video_last: int | None = None


class HlsSink:
    def __init__(self, names: StreamNames, output: HlsOutput, clock: CaptureClock, *,
                 on_first_segment: Callable[[FirstSegment], None] | None = None) -> None:
        self.names, self.output, self.clock = names, output, clock
        output.work_dir.mkdir(parents=True, exist_ok=True)
        self.on_first_segment = on_first_segment
        self.segment_ticks = round(output.segment_seconds * TS_HZ)
        self.templates: dict[str, Any] = {}  # kind -> encoder stream the segments copy
        self.video_size: tuple[int, int] | None = None
        self.frame_ticks = round(TS_HZ / 15)  # a picture's duration, for the end of the last one
        self.segments: list[SegmentInfo] = []
        self._segment: _Segment | None = None

    @property
    def driver(self) -> str:
        """The track whose packets cut segments (video on keyframes when there is video)."""
        return "video" if "video" in self.templates else "audio"

    @property
    def track_type(self) -> str:
        return "audio_video" if len(self.templates) == 2 else next(iter(self.templates), "audio")

    @property
    def playlist_key(self) -> str:
        return self.output.key(self.names.playlist)

    def next_cut(self) -> int | None:
        """Ticks at which the open segment should end; None when none is open (the next picture starts one)."""
        return None if self._segment is None else self._segment.start_ticks + self.segment_ticks

    def mux(self, packet: av.Packet, kind: str) -> None:
        tb = packet.time_base
        if packet.pts is None or tb is None:
            return
        scale_num, scale_den = tb.numerator * TS_HZ, tb.denominator  # integers: no Fraction per packet
        start = (packet.pts * scale_num + scale_den // 2) // scale_den
        duration = ((packet.duration or 0) * scale_num + scale_den // 2) // scale_den
        segment = self._segment
        if segment is None:
            segment = self._open(start)
        elif kind == self.driver and start >= segment.start_ticks + self.segment_ticks and (
                kind == "audio" or packet.is_keyframe):
            self._close(start)
            segment = self._open(start)
        packet.stream = segment.streams[kind]
        segment.container.mux(packet)
        if kind == "video":
            segment.video_last = start
            segment.end_ticks = max(segment.end_ticks, start + self.frame_ticks)
        else:
            segment.end_ticks = max(segment.end_ticks, start + duration)

    def close(self) -> list[SegmentInfo]:
        """Finish the open segment and write the final playlist (``#EXT-X-ENDLIST``)."""
        if self._segment is not None:
            self._close(None)
        if self.segments:
            self._publish_playlist(ended=True)
        return self.segments

    def render_playlist(self, *, ended: bool) -> str:
        assert self.clock.start is not None
        size = self.video_size
        return playlist.render(playlist.Playlist(
            entries=[playlist.PlaylistEntry(s.duration, s.name) for s in self.segments],
            start_rec_time_ms=round(self.clock.start * 1000),
            width=size[0] if size else None, height=size[1] if size else None, ended=ended))

    def _open(self, start_ticks: int) -> _Segment:
        name = self.names.segment(datetime.fromtimestamp(self.clock.wall(start_ticks), UTC))
        path = self.output.work_dir / name
        container = av.open(str(path) + ".part", "w", format="mpegts", options=TS_OPTIONS)
        streams = {kind: container.add_stream_from_template(s) for kind, s in self.templates.items()}
        self._segment = _Segment(name, path, container, streams, start_ticks)
        return self._segment

    def _close(self, next_start: int | None) -> None:
        segment = self._segment
        assert segment is not None
        self._segment = None
        segment.container.close()
        if segment.end_ticks <= segment.start_ticks:  # no packet reached it (a stop right at a cut)
            Path(str(segment.path) + ".part").unlink(missing_ok=True)
            return
        os.replace(str(segment.path) + ".part", segment.path)
        end, last = segment.end_ticks, segment.video_last
        if next_start is not None and last is not None and next_start - last < 2 * self.frame_ticks:
            end = next_start  # contiguous video: the last picture lasts until the next segment starts
        out = self.output
        info = SegmentInfo(
            name=segment.name, key=out.key(segment.name), start=self.clock.wall(segment.start_ticks),
            duration=max(0.0, (end - segment.start_ticks) / TS_HZ), size=segment.path.stat().st_size,
            local_path=str(segment.path) if out.keep_segments or out.uploader is None else None)
        if out.uploader is not None:
            handed = segment.path
            if out.keep_segments:  # the uploader deletes what it is given: give it a second link
                handed = out.uploader.spool_dir / f"{segment.name}.upload"
                os.link(segment.path, handed)
            out.uploader.put(handed, info.key, SEGMENT_CONTENT_TYPE)
        self.segments.append(info)
        self._publish_playlist(ended=False)
        if len(self.segments) == 1 and self.on_first_segment is not None:
            assert self.clock.start is not None
            self.on_first_segment(FirstSegment(
                playlist_name=self.names.playlist, playlist_key=self.playlist_key, segment=info,
                user_id=self.names.user_id, track_type=self.track_type,
                begin_timestamp_ms=round(self.clock.start * 1000)))

    def _publish_playlist(self, *, ended: bool) -> None:
        text = self.render_playlist(ended=ended).encode()
        local = self.output.work_dir / self.names.playlist
        tmp = local.with_name(local.name + ".tmp")
        tmp.write_bytes(text)
        os.replace(tmp, local)
        if self.output.uploader is not None:
            self.output.uploader.put_bytes(text, self.playlist_key, PLAYLIST_CONTENT_TYPE)
