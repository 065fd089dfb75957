"""The HLS sink: encoded packets in, TRTC-named MPEG-TS segments and TRTC playlists out, to the uploader.

Segments are cut at about ``segment_seconds`` (video on keyframes: the assembly forces an IDR
picture at each boundary, :meth:`HlsSink.next_cut`). When a segment closes it is handed to the
:class:`~capstan.storage.uploader.Uploader`, then the rewritten playlist (after the segment, so
the bucket never lists a missing file); a crash therefore loses at most the open segment
(DESIGN §6). Each segment is a fresh TS container fed with the encoders' packets; timestamps
continue across segments, as in any HLS recorder. ``#EXT-X-TRTC-VIDEO-METADATA`` gives the
stored picture size.

A full local disk (ENOSPC) does not end the stream: the open segment is given up (it cannot be
written), packets are dropped, and every :data:`DISK_RETRY_SECONDS` a new segment is tried at the
next cut point; ``on_disk`` tells the worker when the disk is full and when it writes again. What
was closed before is with the uploader already.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

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
DISK_RETRY_SECONDS = 2.0
EMPTY_TS_BYTES = 2 * 188  # PAT and PMT, no PES
# A segment of a few packets (a stop just after a cut) is padded with null packets to this size:
# FFmpeg's format probe (ffprobe, players opening one segment) scores MPEG-TS too low below about
# twenty packets and took a 10-packet segment for MPEG-PS, failing with "End of file" (seen in CI).
MIN_TS_BYTES = 22 * 188
NULL_TS_PACKET = b"\x47\x1f\xff\x10" + b"\xff" * 184  # PID 0x1FFF: every demuxer skips it
log = logging.getLogger(__name__)


class SegmentNaming(Protocol):
    """What a sink needs to name its files; :class:`StreamNames` spells TRTC's names, a web recording its own."""

    @property
    def playlist(self) -> str: ...

    @property
    def user_id(self) -> str | None: ...

    def segment(self, start: datetime) -> str: ...


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
class HlsEncryption:
    """HLS AES-128 (RFC 8216 4.3.2.4): each closed segment is encrypted whole with AES-128-CBC and
    PKCS#7 padding, its IV the segment's media sequence number; players fetch the key from ``key_uri``."""

    key: bytes = field(repr=False)
    key_uri: str

    def __post_init__(self) -> None:
        if len(self.key) != 16:
            raise ValueError("an AES-128 key has 16 bytes (32 hex characters)")

    @classmethod
    def from_hex(cls, key_hex: str, key_uri: str) -> HlsEncryption:
        try:
            key = bytes.fromhex(key_hex.strip())
        except ValueError:
            raise ValueError("the key is not hexadecimal (32 hex characters)") from None
        return cls(key, key_uri)

    def encrypt(self, data: bytes, sequence: int) -> bytes:
        from cryptography.hazmat.primitives import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        padder = padding.PKCS7(128).padder()
        padded = padder.update(data) + padder.finalize()
        encryptor = Cipher(algorithms.AES(self.key), modes.CBC(sequence.to_bytes(16, "big"))).encryptor()
        return encryptor.update(padded) + encryptor.finalize()

    def seal(self, path: Path, sequence: int) -> None:
        """Encrypt the segment file in place (through a temporary file, so it is never half-written)."""
        tmp = path.with_name(path.name + ".enc")
        tmp.write_bytes(self.encrypt(path.read_bytes(), sequence))
        os.replace(tmp, path)


@dataclass(frozen=True)
class HlsOutput:
    """Where one stream's segments go: a local directory, then (optionally) the uploader."""

    work_dir: Path
    uploader: Uploader | None = None
    segment_seconds: float = 10.0
    key_prefix: str | None = None
    task_id: str | None = None
    keep_segments: bool = False  # keep a local copy (tests, benchmarks) besides the uploaded one
    live_playlist: bool = True  # upload the playlist after every segment; False: only the final one
    encryption: HlsEncryption | None = None

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
    def __init__(self, names: SegmentNaming, output: HlsOutput, clock: CaptureClock, *,
                 on_first_segment: Callable[[FirstSegment], None] | None = None,
                 on_disk: Callable[[str | None], None] | None = None) -> None:
        self.names, self.output, self.clock = names, output, clock
        self.on_disk = on_disk  # (why) when the local disk is full, (None) when writing again
        self.disk_full = False  # since a write failed with ENOSPC, until a segment is written again
        self._retry_at: float | None = None  # monotonic: when to try a new segment after ENOSPC
        self.dropped_for_disk = 0  # packets
        output.work_dir.mkdir(parents=True, exist_ok=True)
        self.on_first_segment = on_first_segment
        self.segment_ticks = round(output.segment_seconds * TS_HZ)
        self.templates: dict[str, Any] = {}  # kind -> encoder stream the segments copy
        self.video_size: tuple[int, int] | None = None
        self.frame_ticks = round(TS_HZ / 15)  # a picture's duration, for the end of the last one
        self.segments: list[SegmentInfo] = []
        self.discontinuities: set[int] = set()  # indexes of segments a #EXT-X-DISCONTINUITY precedes
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

    def continue_after(self, earlier: list[playlist.PlaylistEntry]) -> None:
        """Before any segment of this sink: ``earlier`` segments (already stored by a writer that
        died) head its playlist, then a discontinuity; media sequence numbers (and so AES-128 IVs)
        go on after them."""
        if self.segments or not earlier:
            return
        for i, entry in enumerate(earlier):
            if entry.discontinuity:
                self.discontinuities.add(i)
            self.segments.append(SegmentInfo(name=entry.uri, key=self.output.key(entry.uri), start=0.0,
                                             duration=entry.duration, size=0, local_path=None))
        self.discontinuities.add(len(earlier))

    def next_cut(self) -> int | None:
        """Ticks at which the open segment should end; None when none is open (the next picture starts one)."""
        return None if self._segment is None else self._segment.start_ticks + self.segment_ticks

    def mux(self, packet: av.Packet, kind: str) -> None:
        if self._retry_at is not None:
            if time.monotonic() < self._retry_at or not (kind == self.driver and (kind == "audio"
                                                                                  or packet.is_keyframe)):
                self.dropped_for_disk += 1
                return
            self._retry_at = None  # try a new segment from this packet on
        try:
            self._mux(packet, kind)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            self._out_of_space(exc)

    def _out_of_space(self, exc: OSError) -> None:
        """Give up the open segment (it cannot be written) and retry later; the closed ones are safe."""
        segment, self._segment = self._segment, None
        if segment is not None:
            with contextlib.suppress(Exception):
                segment.container.close()
            Path(str(segment.path) + ".part").unlink(missing_ok=True)
        self._retry_at = time.monotonic() + DISK_RETRY_SECONDS
        if not self.disk_full:
            self.disk_full = True
            why = f"local disk full ({exc.strerror}): {self.names.playlist} drops its frames until space is free"
            log.warning("%s", why)
            if self.on_disk is not None:
                self.on_disk(why)

    def _disk_writes_again(self) -> None:
        """A segment reached the disk after it was full."""
        self.disk_full = False
        log.info("%s: writing again after %d packets dropped (disk full)", self.names.playlist, self.dropped_for_disk)
        if self.on_disk is not None:
            self.on_disk(None)

    def _mux(self, packet: av.Packet, kind: str) -> None:
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
            try:
                self._close(None)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                self._out_of_space(exc)
        if self.segments:
            self._publish_playlist(ended=True)
        return self.segments

    def render_playlist(self, *, ended: bool) -> str:
        assert self.clock.start is not None
        size = self.video_size
        encryption = self.output.encryption
        return playlist.render(playlist.Playlist(
            entries=[playlist.PlaylistEntry(s.duration, s.name, i in self.discontinuities)
                     for i, s in enumerate(self.segments)],
            start_rec_time_ms=round(self.clock.start * 1000),
            width=size[0] if size else None, height=size[1] if size else None, ended=ended,
            key_uri=encryption.key_uri if encryption is not None else None))

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
        part = Path(str(segment.path) + ".part")
        if segment.end_ticks <= segment.start_ticks:  # no packet reached it (a stop right at a cut)
            part.unlink(missing_ok=True)
            return
        size = part.stat().st_size
        if size <= EMPTY_TS_BYTES:  # tables only: players and probes fail on it
            log.warning("%s: no media reached the file; segment dropped", segment.name)
            part.unlink()
            return
        if size < MIN_TS_BYTES:
            with part.open("ab") as f:
                f.write(NULL_TS_PACKET * -(-(MIN_TS_BYTES - size) // 188))
        os.replace(part, segment.path)
        if self.disk_full:
            self._disk_writes_again()
        if self.output.encryption is not None:  # media sequence 0 is the first segment
            self.output.encryption.seal(segment.path, len(self.segments))
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
        try:
            tmp.write_bytes(text)
            os.replace(tmp, local)
        except OSError as exc:  # the local copy only; the uploader's goes on
            if exc.errno != errno.ENOSPC:
                raise
            tmp.unlink(missing_ok=True)
            log.warning("%s: local playlist copy not written (disk full)", self.names.playlist)
        if self.output.uploader is not None and (ended or self.output.live_playlist):
            self.output.uploader.put_bytes(text, self.playlist_key, PLAYLIST_CONTENT_TYPE)
