"""HLS recording of one stream: decoded frames in, TRTC-named MPEG-TS segments and playlists out.

A room SDK hands the recorder decoded frames with wall-clock capture times. :class:`HlsWriter`
encodes them (video: libx264 yuv420p at the VideoSpec's fps/bitrate/GOP and size; audio: AAC at
the AudioSpec's rate/channels/bitrate) and cuts MPEG-TS segments of about ``segment_seconds``
(video on keyframes: the first frame at or past a boundary is forced to be an IDR picture).
When a segment closes it is handed to the :class:`~capstan.storage.uploader.Uploader`, then the
rewritten playlist (after the segment, so the bucket never lists a missing file). A crash
therefore loses at most the open segment (DESIGN §6).

Timing: every timestamp comes from the capture time, never from counting frames, so a gap in
the input (an anchor stops publishing) stays a gap and does not shift later media. Audio is a
sample clock anchored at the capture time of each continuous run; a new run starts when the
capture times jump ahead of the samples by more than :data:`AUDIO_GAP_SECONDS`.

One encoder per track lives for the whole recording (timestamps continue across segments, as
in any HLS recorder); each segment is a fresh TS container fed with the encoders' packets.
Single-stream recording uses one writer per track (:class:`HlsTrackWriter`); mixed-stream
recording uses one writer with both tracks.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from capstan.api.cloudrecording import AudioSpec, VideoSpec
from capstan.media import naming, playlist
from capstan.media.naming import MediaId, TrackType
from capstan.storage.uploader import Uploader

log = logging.getLogger(__name__)

TS_HZ = 90000
# Media timestamps start this far after 0 so the AAC encoder's priming (which precedes the first
# sample) never needs a negative PTS. Wall time of a TS timestamp = start + (pts - offset).
PTS_OFFSET_SECONDS = 1.0
AAC_FRAME = 1024
AUDIO_GAP_SECONDS = 0.1
SEGMENT_CONTENT_TYPE = "video/mp2t"
PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
DEFAULT_PRESET = "veryfast"
# Let the TS muxer pack several AAC frames into one PES (max_delay; without it every 21 ms frame
# costs its own PES and TS packets, ~2.5x the size) but keep our timestamps as they are (copyts).
TS_OPTIONS = {"max_delay": "500000", "mpegts_copyts": "1"}


# --- names -----------------------------------------------------------------------------------


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
class SegmentInfo:
    name: str
    key: str
    start: float  # wall clock, Unix seconds
    duration: float
    size: int
    local_path: str | None  # kept copy (keep_segments=True), else None once handed over


@dataclass(frozen=True)
class FirstSegment:
    """What the recorder needs for events 307 (FileName/UserId/TrackType/BeginTimeStamp) and 304."""

    playlist_name: str
    playlist_key: str
    segment: SegmentInfo
    user_id: str | None
    track_type: str  # audio, video or audio_video
    begin_timestamp_ms: int


# --- the writer ------------------------------------------------------------------------------


@dataclass
class _Segment:
    name: str
    path: Path
    container: Any
    streams: dict[str, Any]
    start_ticks: int  # 1/90000, TS timeline
    end_ticks: int = 0
    video_last: int | None = None


@dataclass
class _AudioClock:
    rate: int
    anchor_time: float | None = None  # capture time of the current run's first sample
    run_input_seconds: float = 0.0
    next_pts: int = 0  # in 1/rate, TS timeline (offset included)
    buffer: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), np.float32))


class HlsWriter:
    def __init__(
        self,
        names: StreamNames,
        work_dir: str | os.PathLike[str],
        uploader: Uploader | None,
        *,
        video: VideoSpec | None = None,
        audio: AudioSpec | None = None,
        segment_seconds: float = 10.0,
        key_prefix: str | None = None,
        task_id: str | None = None,
        keep_segments: bool = False,
        preset: str = DEFAULT_PRESET,
        on_first_segment: Callable[[FirstSegment], None] | None = None,
        on_segment: Callable[[SegmentInfo], None] | None = None,
    ) -> None:
        if video is None and audio is None:
            raise ValueError("a writer needs a video or an audio track")
        self.names = names
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.uploader = uploader
        self.video_spec, self.audio_spec = video, audio
        self.segment_ticks = round(segment_seconds * TS_HZ)
        self.key_prefix, self.task_id = key_prefix, task_id
        self.keep_segments = keep_segments
        self.on_first_segment, self.on_segment = on_first_segment, on_segment
        self.segments: list[SegmentInfo] = []
        self.start_time: float | None = None  # capture time of the first frame (TRTC start-rec-time)
        self.closed = False
        self._segment: _Segment | None = None
        self._offset_ticks = round(PTS_OFFSET_SECONDS * TS_HZ)
        self._cut_forced_for: int | None = -1  # the boundary already forced (None: the first picture)
        self._last_video_ticks: int | None = None
        self._holder = av.open(io.BytesIO(), "w", format="mpegts")
        self._streams: dict[str, Any] = {}
        self._frame_ticks = 0
        if video is not None:
            stream = self._holder.add_stream("libx264", rate=video.fps)
            stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
            ctx = stream.codec_context
            ctx.time_base = Fraction(1, TS_HZ)
            ctx.framerate = Fraction(video.fps, 1)
            ctx.bit_rate = video.bitrate
            ctx.gop_size = max(1, video.gop * video.fps)
            stream.options = {"preset": preset, "bf": "0", "forced-idr": "1"}
            self._streams["video"] = stream
            self._frame_ticks = round(TS_HZ / video.fps)
        if audio is not None:
            sound = self._holder.add_stream("aac", rate=audio.sample_rate)
            sound.layout = "mono" if audio.channels == 1 else "stereo"
            sound.bit_rate = audio.bitrate
            self._streams["audio"] = sound
            self._clock = _AudioClock(audio.sample_rate, buffer=np.zeros((audio.channels, 0), np.float32))
            self._layout = sound.layout.name
            self._resampler: av.AudioResampler | None = None
        self._audio_encoder: Any = None  # the holder's AAC stream is only the segments' template
        self._holder.start_encoding()
        self._driver = "video" if video is not None else "audio"

    # --- public ------------------------------------------------------------------------------

    @property
    def track_type(self) -> str:
        if len(self._streams) == 2:
            return "audio_video"
        return next(iter(self._streams))

    @property
    def playlist_key(self) -> str:
        return naming.object_key(self.names.playlist, prefix=self.key_prefix, task_id=self.task_id)

    def write_video(self, frame: av.VideoFrame, capture_time: float | None = None) -> None:
        """Encode one picture taken at ``capture_time`` (Unix seconds; default: the frame's time)."""
        spec, stream = self.video_spec, self._streams.get("video")
        if spec is None or stream is None or self.closed:
            raise RuntimeError("this writer has no open video track")
        when = _capture_time(frame, capture_time)
        ticks = self._ticks(when)
        if ticks is None or (self._last_video_ticks is not None and ticks <= self._last_video_ticks):
            return  # before the start, or not after the previous picture: nothing sensible to show
        self._last_video_ticks = ticks
        if frame.width != spec.width or frame.height != spec.height or frame.format.name != "yuv420p":
            frame = frame.reformat(width=spec.width, height=spec.height, format="yuv420p")
        frame.pts, frame.time_base = ticks, Fraction(1, TS_HZ)
        boundary = self._next_cut()
        force = self._segment is None or (boundary is not None and ticks >= boundary)
        if force and self._cut_forced_for != boundary:
            frame.pict_type = av.video.frame.PictureType.I
            self._cut_forced_for = boundary
        else:
            frame.pict_type = av.video.frame.PictureType.NONE
        for packet in stream.encode(frame):
            self._route(packet, "video")

    def write_audio(self, frame: av.AudioFrame, capture_time: float | None = None) -> None:
        """Encode samples whose first one was captured at ``capture_time`` (Unix seconds)."""
        spec = self.audio_spec
        if spec is None or self.closed:
            raise RuntimeError("this writer has no open audio track")
        when = _capture_time(frame, capture_time)
        if self._ticks(when) is None:
            return
        clock = self._clock
        expected = None if clock.anchor_time is None else clock.anchor_time + clock.run_input_seconds
        if expected is None or when - expected > AUDIO_GAP_SECONDS:
            self._new_audio_run(when)
        clock.run_input_seconds += frame.samples / frame.sample_rate
        samples = self._convert_audio(frame)
        if samples.shape[1]:
            clock.buffer = np.concatenate([clock.buffer, samples], axis=1) if clock.buffer.shape[1] else samples
        self._drain_audio(pad=False)

    def write(self, frame: av.VideoFrame | av.AudioFrame, capture_time: float | None = None) -> None:
        if isinstance(frame, av.VideoFrame):
            self.write_video(frame, capture_time)
        else:
            self.write_audio(frame, capture_time)

    def close(self) -> list[SegmentInfo]:
        """Finish the open segment, write the final playlist (``#EXT-X-ENDLIST``), hand both over."""
        if self.closed:
            return self.segments
        self.closed = True
        if "audio" in self._streams and self._clock.anchor_time is not None:
            self._drain_audio(pad=True)
            self._flush_audio_encoder()
        if "video" in self._streams and self._last_video_ticks is not None:
            for packet in self._streams["video"].encode(None):
                self._route(packet, "video")
        if self._segment is not None:
            self._close_segment(None)
        if self.segments:
            self._publish_playlist(ended=True)
        self._holder.close()
        return self.segments

    # --- timing ------------------------------------------------------------------------------

    def _ticks(self, when: float) -> int | None:
        if self.start_time is None:
            self.start_time = when
        if when < self.start_time:
            return None
        return round((when - self.start_time) * TS_HZ) + self._offset_ticks

    def _wall(self, ticks: int) -> float:
        assert self.start_time is not None
        return self.start_time + (ticks - self._offset_ticks) / TS_HZ

    def _next_cut(self) -> int | None:
        return None if self._segment is None else self._segment.start_ticks + self.segment_ticks

    # --- audio -------------------------------------------------------------------------------

    def _new_audio_run(self, when: float) -> None:
        clock = self._clock
        if clock.anchor_time is not None:
            self._drain_audio(pad=True)  # finish the previous run; the gap stays a gap
            self._flush_audio_encoder()
        self._audio_encoder = self._new_audio_encoder()
        clock.anchor_time, clock.run_input_seconds = when, 0.0
        ticks = self._ticks(when)
        assert ticks is not None
        clock.next_pts = max(clock.next_pts, round(ticks * clock.rate / TS_HZ))

    def _convert_audio(self, frame: av.AudioFrame) -> np.ndarray:
        spec = self.audio_spec
        assert spec is not None
        if frame.format.name == "fltp" and frame.layout.name == self._layout and frame.sample_rate == spec.sample_rate:
            return frame.to_ndarray()
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=spec.sample_rate)
        frame.pts = None  # our clock places the samples; the resampler must not judge the timestamps
        out = [f.to_ndarray() for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros((spec.channels, 0), np.float32)
        return out[0] if len(out) == 1 else np.concatenate(out, axis=1)

    def _drain_audio(self, *, pad: bool) -> None:
        clock, encoder = self._clock, self._audio_encoder
        assert encoder is not None
        buffer = clock.buffer
        if pad and buffer.shape[1] % AAC_FRAME:
            missing = AAC_FRAME - buffer.shape[1] % AAC_FRAME
            buffer = np.concatenate([buffer, np.zeros((buffer.shape[0], missing), np.float32)], axis=1)
        whole = buffer.shape[1] // AAC_FRAME * AAC_FRAME
        for offset in range(0, whole, AAC_FRAME):
            chunk = np.ascontiguousarray(buffer[:, offset:offset + AAC_FRAME])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self._layout)
            frame.sample_rate, frame.pts, frame.time_base = clock.rate, clock.next_pts, Fraction(1, clock.rate)
            clock.next_pts += AAC_FRAME
            for packet in encoder.encode(frame):
                self._route(packet, "audio")
        clock.buffer = buffer[:, whole:]

    def _flush_audio_encoder(self) -> None:
        if self._audio_encoder is not None:
            for packet in self._audio_encoder.encode(None):
                self._route(packet, "audio")
            self._audio_encoder = None

    def _new_audio_encoder(self) -> Any:
        """One AAC encoder per continuous run: AAC frames overlap (MDCT), so an encoder fed across a
        hole would smear the end of one run into a packet stamped just before the next one."""
        spec = self.audio_spec
        assert spec is not None
        encoder = av.CodecContext.create("aac", "w")
        encoder.sample_rate, encoder.layout, encoder.format = spec.sample_rate, self._layout, "fltp"
        encoder.bit_rate, encoder.time_base = spec.bitrate, Fraction(1, spec.sample_rate)
        return encoder

    # --- segments ----------------------------------------------------------------------------

    def _route(self, packet: av.Packet, kind: str) -> None:
        if packet.pts is None or packet.time_base is None:
            return
        start = round(packet.pts * packet.time_base * TS_HZ)
        duration = round((packet.duration or 0) * packet.time_base * TS_HZ)
        segment = self._segment
        if segment is None:
            segment = self._open_segment(start)
        elif kind == self._driver and start >= segment.start_ticks + self.segment_ticks and (
                kind == "audio" or packet.is_keyframe):
            self._close_segment(start)
            segment = self._open_segment(start)
        packet.stream = segment.streams[kind]
        segment.container.mux(packet)
        if kind == "video":
            segment.video_last = start
            segment.end_ticks = max(segment.end_ticks, start + self._frame_ticks)
        else:
            segment.end_ticks = max(segment.end_ticks, start + duration)

    def _open_segment(self, start_ticks: int) -> _Segment:
        moment = datetime.fromtimestamp(self._wall(start_ticks), UTC)
        name = self.names.segment(moment)
        path = self.work_dir / name
        container = av.open(str(path) + ".part", "w", format="mpegts", options=TS_OPTIONS)
        streams = {kind: container.add_stream_from_template(s) for kind, s in self._streams.items()}
        self._segment = _Segment(name, path, container, streams, start_ticks)
        return self._segment

    def _close_segment(self, next_start: int | None) -> None:
        segment = self._segment
        assert segment is not None
        self._segment = None
        segment.container.close()
        if segment.end_ticks <= segment.start_ticks:  # no packet reached it (a stop right at a cut)
            Path(str(segment.path) + ".part").unlink(missing_ok=True)
            return
        os.replace(str(segment.path) + ".part", segment.path)
        end = segment.end_ticks
        last = segment.video_last
        if next_start is not None and last is not None and next_start - last < 2 * self._frame_ticks:
            end = next_start  # contiguous video: the last picture lasts until the next segment starts
        info = SegmentInfo(
            name=segment.name,
            key=naming.object_key(segment.name, prefix=self.key_prefix, task_id=self.task_id),
            start=self._wall(segment.start_ticks),
            duration=max(0.0, (end - segment.start_ticks) / TS_HZ),
            size=segment.path.stat().st_size,
            local_path=str(segment.path) if self.keep_segments or self.uploader is None else None,
        )
        if self.uploader is not None:
            handed = segment.path
            if self.keep_segments:  # the uploader deletes what it is given: give it a second link
                handed = self.uploader.spool_dir / f"{segment.name}.upload"
                os.link(segment.path, handed)
            self.uploader.put(handed, info.key, SEGMENT_CONTENT_TYPE)
        self.segments.append(info)
        self._publish_playlist(ended=False)
        if self.on_segment is not None:
            self.on_segment(info)
        if len(self.segments) == 1 and self.on_first_segment is not None:
            assert self.start_time is not None
            self.on_first_segment(FirstSegment(
                playlist_name=self.names.playlist, playlist_key=self.playlist_key, segment=info,
                user_id=self.names.user_id, track_type=self.track_type,
                begin_timestamp_ms=round(self.start_time * 1000)))

    def render_playlist(self, *, ended: bool) -> str:
        spec = self.video_spec
        assert self.start_time is not None
        return playlist.render(playlist.Playlist(
            entries=[playlist.PlaylistEntry(s.duration, s.name) for s in self.segments],
            start_rec_time_ms=round(self.start_time * 1000),
            width=spec.width if spec is not None else None,
            height=spec.height if spec is not None else None,
            ended=ended,
        ))

    def _publish_playlist(self, *, ended: bool) -> None:
        text = self.render_playlist(ended=ended).encode()
        local = self.work_dir / self.names.playlist
        tmp = local.with_name(local.name + ".tmp")
        tmp.write_bytes(text)
        os.replace(tmp, local)
        if self.uploader is not None:
            self.uploader.put_bytes(text, self.playlist_key, PLAYLIST_CONTENT_TYPE)


class HlsTrackWriter(HlsWriter):
    """One track (audio or video) of one anchor's stream: the single-stream recording unit."""

    def __init__(
        self, names: StreamNames, work_dir: str | os.PathLike[str], uploader: Uploader | None,
        spec: VideoSpec | AudioSpec, **kwargs: Any,
    ) -> None:
        if isinstance(spec, VideoSpec):
            super().__init__(names, work_dir, uploader, video=spec, **kwargs)
        else:
            super().__init__(names, work_dir, uploader, audio=spec, **kwargs)


def _capture_time(frame: av.VideoFrame | av.AudioFrame, capture_time: float | None) -> float:
    if capture_time is not None:
        return float(capture_time)
    if frame.time is None:
        raise ValueError("frame has no timestamp and no capture_time was given")
    return float(frame.time)
