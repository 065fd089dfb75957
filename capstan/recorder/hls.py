"""HLS recording of one stream, assembled from pipeline parts.

    video: frames → Scale (stored size, aspect kept) → VideoEncoder (H.264) ┐
                                                                         ├→ HlsSink → Uploader
    audio: frames → AudioConverter → AudioFramer (1024) → AudioEncoder (AAC) ┘

Every timestamp comes from the frame's capture time through one :class:`CaptureClock`, never from
counting frames, so a gap in the input (an anchor stops publishing) stays a gap. Audio is a sample
clock: a run continues while capture times are not later than the samples by more than
:data:`AUDIO_GAP_SECONDS`, and a later start begins a new run (a hole in the timestamps); a capture
time that steps back (receive-time jitter) never costs samples.

Single-stream recording uses one writer per track (:class:`HlsTrackWriter`), each anchor's video
at its own size and frame rate unless the encoding asks for them; mixed-stream recording uses one
writer with both tracks and a fixed canvas size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from capstan.media.audio import AudioFramer
from capstan.media.pipeline.encoding import AudioEncoder, AudioEncoding, VideoEncoder, VideoEncoding
from capstan.media.pipeline.hls import FirstSegment, HlsOutput, HlsSink, SegmentInfo, SegmentNaming, StreamNames
from capstan.media.pipeline.processing import AudioConverter, Scale, even
from capstan.media.timeline import TS_HZ, CaptureClock
from capstan.worker.metrics import DROPPED, RECEIVED

__all__ = ["FirstSegment", "HlsOutput", "HlsTrackWriter", "HlsWriter", "SegmentInfo", "StreamNames"]

AUDIO_GAP_SECONDS = 0.1
# With a frame-rate cap, a picture this close (in periods) after the last kept one is dropped.
MIN_PERIOD_FRACTION = 0.75


class HlsWriter:
    def __init__(self, names: SegmentNaming, output: HlsOutput, *, video: VideoEncoding | None = None,
                 audio: AudioEncoding | None = None,
                 on_first_segment: Callable[[FirstSegment], None] | None = None,
                 on_disk: Callable[[str | None], None] | None = None) -> None:
        if video is None and audio is None:
            raise ValueError("a writer needs a video or an audio track")
        self.names, self.output = names, output
        self.video_encoding, self.audio_encoding = video, audio
        self.clock = CaptureClock()
        self.sink = HlsSink(names, output, self.clock, on_first_segment=on_first_segment, on_disk=on_disk)
        self.closed = False
        self._scale: Scale | None = None
        self._video: VideoEncoder | None = None
        self._last_video_ticks: int | None = None
        self._cut_forced_for: int | None = -1  # the boundary already forced (None: the first picture)
        if video is not None:
            self.sink.frame_ticks = round(TS_HZ / video.fps_hint)
            if video.size is not None:
                self._open_video(video.size)  # known now: a mixed writer's segments need both tracks at once
        self._audio: AudioEncoder | None = None
        if audio is not None:
            self._audio = AudioEncoder(audio)
            self.sink.templates["audio"] = self._audio.stream
            self._convert = AudioConverter(audio.sample_rate, audio.layout)
            self._framer = AudioFramer(audio.frame_size, audio.channels, fill_gaps=False, trim_overlaps=False,
                                       tolerance=round(AUDIO_GAP_SECONDS * audio.sample_rate))
            # contiguous input frames are converted and framed together (10 ms frames one by one cost
            # more in Python than the encoding): a run of them, its position and its length in samples
            self._run: list[av.AudioFrame] = []
            self._run_start = self._run_samples = 0
            self._run_limit = AudioEncoder.BATCH_FRAMES * audio.frame_size

    @property
    def work_dir(self) -> Path:
        return self.output.work_dir

    @property
    def segments(self) -> list[SegmentInfo]:
        return self.sink.segments

    @property
    def start_time(self) -> float | None:
        """Capture time of the first frame (TRTC start-rec-time)."""
        return self.clock.start

    @property
    def track_type(self) -> str:
        return self.sink.track_type

    @property
    def playlist_key(self) -> str:
        return self.sink.playlist_key

    @property
    def stored_size(self) -> tuple[int, int] | None:
        return self.sink.video_size

    def write(self, frame: av.VideoFrame | av.AudioFrame, capture_time: float | None = None) -> None:
        if isinstance(frame, av.VideoFrame):
            self.write_video(frame, capture_time)
        else:
            self.write_audio(frame, capture_time)

    def write_video(self, frame: av.VideoFrame, capture_time: float | None = None) -> None:
        """Encode one picture taken at ``capture_time`` (Unix seconds; default: the frame's time)."""
        encoding = self.video_encoding
        if encoding is None or self.closed:
            raise RuntimeError("this writer has no open video track")
        RECEIVED["video"].inc()
        ticks = self.clock.ticks(_capture_time(frame, capture_time))
        last = self._last_video_ticks
        if ticks is None or (last is not None and ticks <= last):
            DROPPED["video"].inc()
            return  # before the start, or not after the previous picture: nothing sensible to show
        if last is not None and encoding.max_fps and ticks - last < MIN_PERIOD_FRACTION * TS_HZ / encoding.max_fps:
            DROPPED["video"].inc()
            return  # faster than the frame rate the task asks for
        if last is not None and not encoding.max_fps and ticks - last < TS_HZ // 2:
            # at the source's own rate, a picture lasts as long as the source's pictures do
            self.sink.frame_ticks = round(0.9 * self.sink.frame_ticks + 0.1 * (ticks - last))
        self._last_video_ticks = ticks
        if self._video is None:
            self._open_video(even((frame.width, frame.height)))
        assert self._scale is not None and self._video is not None
        boundary = self.sink.next_cut()
        force = boundary is None or ticks >= boundary
        keyframe = force and self._cut_forced_for != boundary
        if keyframe:
            self._cut_forced_for = boundary
        for packet in self._video.encode(self._scale(frame), ticks, keyframe=keyframe):
            self.sink.mux(packet, "video")

    def write_audio(self, frame: av.AudioFrame, capture_time: float | None = None) -> None:
        """Encode samples whose first one was captured at ``capture_time`` (Unix seconds)."""
        if self._audio is None or self.closed:
            raise RuntimeError("this writer has no open audio track")
        RECEIVED["audio"].inc()
        ticks = self.clock.ticks(_capture_time(frame, capture_time))
        if ticks is None:
            DROPPED["audio"].inc()
            return
        rate = self._convert.sample_rate
        position = self.clock.rescale(ticks, rate)
        if self._run and position > self._run_start + self._run_samples + self._framer.tolerance:
            self._frame_run()  # a hole: what came before is one run
        if not self._run:
            self._run_start = position
        self._run.append(frame)
        self._run_samples += frame.samples if frame.sample_rate == rate else round(frame.samples * rate
                                                                                      / frame.sample_rate)
        if self._run_samples >= self._run_limit:
            self._frame_run()

    def write_samples(self, samples: np.ndarray, capture_time: float) -> None:
        """Encode float samples (channels x n, at the encoder's rate and layout) whose first one was
        captured at ``capture_time``: a mixer's block, framed as it is, without a frame around it."""
        if self._audio is None or self.closed:
            raise RuntimeError("this writer has no open audio track")
        RECEIVED["audio"].inc()
        ticks = self.clock.ticks(capture_time)
        if ticks is None:
            DROPPED["audio"].inc()
            return
        self._frame_run()  # frames written before come first
        for chunk in self._framer.place(self.clock.rescale(ticks, self._convert.sample_rate), samples):
            for packet in self._audio.encode(chunk):
                self.sink.mux(packet, "audio")

    def _frame_run(self) -> None:
        assert self._audio is not None
        run, self._run, self._run_samples = self._run, [], 0
        if run:
            for chunk in self._framer.place(self._run_start, self._convert.run(run)):
                for packet in self._audio.encode(chunk):
                    self.sink.mux(packet, "audio")

    def close(self) -> list[SegmentInfo]:
        """Finish the open segment, write the final playlist (``#EXT-X-ENDLIST``), hand both over."""
        if self.closed:
            return self.segments
        self.closed = True
        if self._audio is not None:
            self._frame_run()
            for chunk in self._framer.flush(pad=True):
                for packet in self._audio.encode(chunk):
                    self.sink.mux(packet, "audio")
            for packet in self._audio.flush():
                self.sink.mux(packet, "audio")
        if self._video is not None and self._last_video_ticks is not None:
            for packet in self._video.flush():
                self.sink.mux(packet, "video")
        segments = self.sink.close()
        for encoder in (self._video, self._audio):
            if encoder is not None:
                encoder.close()
        return segments

    def render_playlist(self, *, ended: bool) -> str:
        return self.sink.render_playlist(ended=ended)

    def _open_video(self, size: tuple[int, int]) -> None:
        assert self.video_encoding is not None
        self._scale = Scale(size)
        self._video = VideoEncoder(self.video_encoding, self._scale.size)
        self.sink.templates["video"] = self._video.stream
        self.sink.video_size = self._scale.size


class HlsTrackWriter(HlsWriter):
    """One track (audio or video) of one anchor's stream: the single-stream recording unit."""

    def __init__(self, names: StreamNames, output: HlsOutput, encoding: VideoEncoding | AudioEncoding, *,
                 on_first_segment: Callable[[FirstSegment], None] | None = None,
                 on_disk: Callable[[str | None], None] | None = None) -> None:
        if isinstance(encoding, VideoEncoding):
            super().__init__(names, output, video=encoding, on_first_segment=on_first_segment, on_disk=on_disk)
        else:
            super().__init__(names, output, audio=encoding, on_first_segment=on_first_segment, on_disk=on_disk)


def _capture_time(frame: av.VideoFrame | av.AudioFrame, capture_time: float | None) -> float:
    if capture_time is not None:
        return float(capture_time)
    if frame.time is None:
        raise ValueError("frame has no timestamp and no capture_time was given")
    return float(frame.time)
