"""Mixed-stream recording (``recordMode: mix``): every subscribed anchor on one canvas, one sound track.

    room tracks ─ video → latest pictures per feed ┐
                                                   ├→ Compositor (layout, watermarks) → VideoEncoder ┐
                                                   │                                                  ├→ HlsSink
                └ audio → AudioConverter → AudioMixer (one sample clock) → AudioFramer → AAC ────────┘

One :class:`~capstan.recorder.hls.HlsWriter` with both tracks at the canvas size, named as seed 002
names mixed files (``<sdkappid>_<roomid>.m3u8``, ``..._<utc>.ts``, MP4 ``..._<index>.mp4``). A
canvas is made every 1/fps of wall time, stamped :data:`LATENCY_SECONDS` back so that the pictures
and sound captured by then have arrived: each window shows its feed's newest picture captured at
or before that moment. Layout, main user, regions, watermarks and subscriptions are re-read on
every spec change and apply from the next canvas; an anchor that joins or leaves moves the layout
on the next canvas too. Events, callbacks, failover and the files' fate after the room are the
single-stream session's (:class:`~capstan.recorder.session.RecordingSession`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from capstan.api.cloudrecording import CloudRecordingSpec, StreamType
from capstan.media import naming
from capstan.media.layouts import AUX, MAIN, Feed, Region, Window, arrange
from capstan.media.pipeline.compose import AudioMixer, Compositor, Overlay, Picture, parse_colour
from capstan.media.pipeline.encoding import AudioEncoding, VideoEncoding
from capstan.media.pipeline.processing import AudioConverter
from capstan.media.pipeline.sources import RoomTrackSource
from capstan.net import fetch
from capstan.net.urlpolicy import UrlPolicy, Use
from capstan.recorder.hls import HlsOutput, HlsWriter, StreamNames
from capstan.recorder.session import RecordingSession, wanted
from capstan.rooms.base import RemoteTrack, TrackKind

log = logging.getLogger("capstan.recorder.mix")

DOWNLOAD_IMAGE_ERROR = 309
DEFAULT_CANVAS = (1280, 720)  # video.width/height unset
DEFAULT_FPS = 15
LATENCY_SECONDS = 0.3
PICTURES_KEPT = 16  # per feed, newest last: enough for LATENCY_SECONDS at 30 fps and more
IMAGE_TIMEOUT_SECONDS = 10.0
IMAGE_MAX_BYTES = 10 * 1024 * 1024


@dataclass
class _Feeding:
    track: RemoteTrack
    task: asyncio.Task[None]


class MixRecordingSession(RecordingSession):
    """One attempt of one mixed-stream CloudRecording task."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        spec = self.spec
        size = (spec.video.width, spec.video.height) if spec.video.width and spec.video.height else DEFAULT_CANVAS
        self.size = size
        self.fps = spec.video.fps or DEFAULT_FPS
        self.video = spec.stream_type != StreamType.audio
        self.audio = spec.stream_type != StreamType.video
        encoding = VideoEncoding.from_spec(spec.video)
        video = VideoEncoding(bitrate=encoding.bitrate, gop_seconds=encoding.gop_seconds, size=size,
                              max_fps=self.fps) if self.video else None
        self.audio_encoding = AudioEncoding.from_spec(spec.audio)
        names = StreamNames.mixed(spec.room.sdk_app_id, self.room_id, ha=self.ctx.attempt - 1)
        output = HlsOutput(self.work / "segments" / "mix", self.uploader, segment_seconds=spec.output.segment_seconds,
                           key_prefix=spec.output.prefix, task_id=self.ctx.task_id)
        self.writer = HlsWriter(names, output, video=video, audio=self.audio_encoding if self.audio else None,
                                on_first_segment=self._on_first_segment)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mix")
        self.compositor = Compositor(size, reuse=True)  # the encoder copies each canvas
        self.mixer = AudioMixer(self.audio_encoding.channels, tolerance=self.audio_encoding.sample_rate // 10)
        self.pictures: dict[Feed, deque[tuple[float, av.VideoFrame]]] = {}
        self.feedings: dict[str, _Feeding] = {}  # track_id -> its feeding task
        self.windows: list[Window] = []
        self.overlays: list[Overlay] = []
        self._images: dict[tuple[str, int, int, bool], Picture | None] = {}  # (url, w, h, crop) -> picture
        self._fetched: dict[str, bytes] = {}  # url -> the image fetched from it
        self._looks: tuple[Any, ...] | None = None
        self._mixing: asyncio.Task[None] | None = None
        self.policy = UrlPolicy.from_env()
        self.canvases = 0

    # --- what to record and how it looks ------------------------------------------------------

    def _apply_subscriptions(self) -> None:
        """Feed exactly the wanted tracks, then lay out the feeds (after every room event and spec change)."""
        assert self.loop is not None
        if self._mixing is None:
            self._mixing = asyncio.ensure_future(self._mix())
        want = {t.track_id: t for t in self.state.published.values() if wanted(self.spec, t)}
        for track_id, feeding in list(self.feedings.items()):
            if track_id not in want or feeding.task.done():
                feeding.task.cancel()
                del self.feedings[track_id]
                self.mixer.remove(track_id)
                if feeding.track.kind is TrackKind.VIDEO:
                    self.pictures.pop(Feed(feeding.track.user_id, feeding.track.media_id.value), None)
        for track_id, track in want.items():
            if track_id not in self.feedings:
                self.feedings[track_id] = _Feeding(track, asyncio.ensure_future(self._feed(track)))
        self._lay_out()
        self.loop.run_in_executor(None, self._refresh_images)
        anchors = sorted({f.track.user_id for f in self.feedings.values()})
        self.report_soon(phase="recording" if anchors else "idle", anchors=anchors,
                         message=f"attempt {self.ctx.attempt}: mixing {len(anchors)} anchors "
                                 f"({self._layout_mode()} layout)")

    def _layout_mode(self) -> str:
        return str(self.spec.mix_layout.mode) if self.spec.mix_layout is not None else "grid"

    def _feeds(self) -> list[Feed]:
        """Windows wanted, in room-entry order: each anchor's camera (also when it publishes audio only)
        and its screen share."""
        feeds: list[Feed] = []
        for feeding in self.feedings.values():
            track = feeding.track
            media = track.media_id.value
            feed = Feed(track.user_id, media)
            if media == AUX and track.kind is not TrackKind.VIDEO:
                continue  # a screen share's sound: heard, not a window of its own
            if media != AUX:
                feed = Feed(track.user_id, MAIN)
            if feed not in feeds:
                feeds.append(feed)
        return feeds

    def _lay_out(self) -> None:
        layout = self.spec.mix_layout
        if not self.video:
            self.windows = []
            return
        regions = [Region(Feed(r.user_id, r.media_id), r.left, r.top, r.width, r.height, r.z_order, str(r.render_mode))
                   for r in (layout.regions if layout is not None else [])]
        windows = arrange(self._layout_mode(), self.size, self._feeds(),
                          main_user=layout.main_user_id if layout is not None else None, regions=regions)
        if windows != self.windows:
            log.info("layout %s: %d windows", self._layout_mode(), len(windows))
        self.windows = windows

    def _refresh_images(self) -> None:
        """Background and watermarks as the spec has them now (fetched once each; a failure is 309)."""
        layout = self.spec.mix_layout
        colour = parse_colour(layout.background_color if layout is not None else "#000000")
        background_url = layout.background_image_url if layout is not None else None
        placeholder = parse_colour(layout.placeholder_color if layout is not None else "#000000")
        placeholder_url = layout.placeholder_image_url if layout is not None else None
        marks = tuple((m.url, m.left, m.top, m.width, m.height) for m in self.spec.watermarks)
        looks = (colour, background_url, placeholder, placeholder_url, marks)
        if looks == self._looks:
            return
        self._looks = looks
        background = self._image(background_url, self.size, crop=True) if background_url else None
        placeholder_image = self._image_data(placeholder_url) if placeholder_url else None
        overlays = []
        for url, left, top, width, height in marks:
            picture = self._image(url, (width, height), crop=False)
            if picture is not None:
                overlays.append(Overlay(picture, left - left % 2, top - top % 2))
        self.executor.submit(self._set_looks, colour, background, placeholder, placeholder_image,
                             overlays)  # between two canvases

    def _set_looks(self, colour: tuple[int, int, int], background: Picture | None, placeholder: tuple[int, int, int],
                   placeholder_image: bytes | None, overlays: list[Overlay]) -> None:
        self.compositor.set_background(colour, background)
        if (placeholder, placeholder_image) != (self.compositor.placeholder_rgb, self.compositor.placeholder_image):
            self.compositor.set_placeholder(placeholder, placeholder_image)
        self.overlays = overlays

    def _image_data(self, url: str) -> bytes | None:
        """An image's bytes, checked to decode (the placeholder: the compositor scales it to each window)."""
        return self._fetched.get(url) if self._image(url, (16, 16), crop=True) is not None else None

    def _image(self, url: str, size: tuple[int, int], *, crop: bool) -> Picture | None:
        key = (url, size[0], size[1], crop)
        if key in self._images:
            return self._images[key]
        picture: Picture | None = None
        try:
            data = fetch.get(url, policy=self.policy, use=Use.image, timeout=IMAGE_TIMEOUT_SECONDS,
                             max_bytes=IMAGE_MAX_BYTES)
            picture = Picture.from_image(data, size, crop=crop)
            self._fetched[url] = data
        except Exception as exc:  # noqa: BLE001 - refused, unreachable or not an image: 309, go on without it
            log.warning("image %s not used: %s", url, exc)
            self.emit(DOWNLOAD_IMAGE_ERROR, {"Url": url})
        self._images[key] = picture
        return picture

    # --- media in -------------------------------------------------------------------------------

    async def _feed(self, track: RemoteTrack) -> None:
        assert self.conn is not None
        source = RoomTrackSource(self.conn, track)
        feed = Feed(track.user_id, track.media_id.value)
        convert = AudioConverter(self.audio_encoding.sample_rate, self.audio_encoding.layout)
        rate = self.audio_encoding.sample_rate
        try:
            async for timed in source:
                frame = timed.frame
                if isinstance(frame, av.VideoFrame):
                    kept = self.pictures.get(feed)
                    if kept is None:
                        kept = self.pictures[feed] = deque(maxlen=PICTURES_KEPT)
                    kept.append((timed.time, frame))
                else:
                    self.mixer.place(track.track_id, round(timed.time * rate), convert(frame))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await source.close()
            raise
        except Exception as exc:  # noqa: BLE001 - one track failing must not end the mix
            log.warning("track %s stopped: %s", track, exc)

    def _picture_at(self, feed: Feed, moment: float) -> av.VideoFrame | None:
        kept = self.pictures.get(feed)
        if not kept:
            return None
        chosen = kept[0][1]
        for captured, frame in kept:
            if captured > moment:
                break
            chosen = frame
        return chosen

    # --- media out ------------------------------------------------------------------------------

    async def _mix(self) -> None:
        """A canvas (and the sound up to it) every 1/fps of wall time, from the first anchor's media on."""
        assert self.loop is not None
        period = 1 / self.fps
        rate = self.audio_encoding.sample_rate
        next_at: float | None = None
        while True:
            now = time.time()
            if next_at is None:
                if not self.pictures and not self.feedings:
                    await asyncio.sleep(period)
                    continue
                next_at = now
                self.mixer.start(round((now - LATENCY_SECONDS) * rate))
            if now < next_at:
                await asyncio.sleep(next_at - now)
                continue
            moment = next_at - LATENCY_SECONDS
            sound = self.mixer.take(round(moment * rate)) if self.audio else None
            pictures = {w.feed: self._picture_at(w.feed, moment) for w in self.windows}
            await self.loop.run_in_executor(self.executor, self._produce, list(self.windows), pictures, moment, sound)
            next_at += period
            if time.time() - next_at > 1.0:  # fell behind by more than a second: skip, do not rush
                log.warning("mixing fell %.1f s behind: canvases skipped", time.time() - next_at)
                next_at = time.time()

    def _produce(self, windows: list[Window], pictures: dict[Feed, av.VideoFrame | None], moment: float,
                 sound: tuple[int, np.ndarray] | None) -> None:
        """Mix thread: the sound up to ``moment``, then the canvas of ``moment``."""
        if self.writer.closed:
            return
        if sound is not None:
            position, samples = sound
            self.writer.write_samples(samples, position / self.audio_encoding.sample_rate)
        if self.video:
            self.writer.write_video(self.compositor.compose(windows, pictures, self.overlays), moment)
            self.canvases += 1

    async def _stop_all(self) -> None:
        """Stop feeding and mixing, close the writer: the open segment and the final playlist go to storage."""
        tasks = [f.task for f in self.feedings.values()] + ([self._mixing] if self._mixing is not None else [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert self.loop is not None
        await self.loop.run_in_executor(self.executor, self.writer.close)
        self.executor.shutdown(wait=True)

    def _task_objects(self) -> list[str]:
        """Object keys of this task's mixed segments and playlists (all attempts)."""
        prefix = naming.object_key("", prefix=self.spec.output.prefix, task_id=self.ctx.task_id)
        return [o.object_name for o in self.s3.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name.endswith((".ts", ".m3u8")) and naming.USER_START not in o.object_name]


def mix_spec_problem(spec: CloudRecordingSpec) -> str | None:
    """What a mixed recording cannot honour and the API server cannot see (it does not know the
    default canvas): a window or watermark wholly outside the canvas would never be seen."""
    w, h = (spec.video.width, spec.video.height) if spec.video.width and spec.video.height else DEFAULT_CANVAS
    places = [(f"spec.mixLayout.regions[{i}]", r.left, r.top)
              for i, r in enumerate(spec.mix_layout.regions if spec.mix_layout is not None else [])]
    places += [(f"spec.watermarks[{i}]", m.left, m.top) for i, m in enumerate(spec.watermarks)]
    for where, left, top in places:
        if left >= w - 1 or top >= h - 1:
            return f"{where} starts at ({left}, {top}), outside the {w}x{h} canvas"
    return None
