"""LiveKit room backend: the `livekit` Python SDK (rtc) for joining and publishing, `livekit-api`
(RoomService) for room control.

How the port maps onto LiveKit:

- **Joining.** ``auto_subscribe=False``; the recorder's token (minted by the operator, see
  capstan/rooms/tokens.py) is hidden and subscribe-only, so anchors never see it. Tracks of
  participants already in the room are reported first, then ``track_published`` /
  ``track_unpublished`` / ``participant_disconnected`` as they come.
- **Tracks.** The camera and its microphone are ``main``, a screen share and its audio ``aux``
  (TRTC's substream). The track id is the publication's sid.
- **Subscribing.** ``set_subscribed(True)``, then one ``VideoStream`` (I420) or ``AudioStream``
  (48 kHz mono) per track, fanned out to the subscribers' queues as PyAV frames.
- **Frame times.** Video: the frame's ``timestamp_us`` mapped to wall clock by the least delayed
  frame (capstan/rooms/fanout.py). Audio: the sample count, re-anchored when the sender paused.
- **Leaving.** LiveKit's ``DisconnectReason`` -> :class:`LeaveReason` (see ``LEAVE_REASONS``): removed
  by RoomService -> removed (302 LeaveCode 1), room deleted -> room_closed (2), the server
  removing us or closing the room on its own -> 3 / 4, another participant joining with our
  identity -> replaced (101). The SDK's own reconnects (``reconnecting``/``reconnected``) are not a
  leave; a connection that is lost and does not come back raises :class:`LiveKitConnectionLost`
  from ``events()``, so the attempt fails over.
- **Publishing.** ``VideoSource``/``AudioSource`` for raw frames; ``EncodedVideoSource`` with
  ``video_encoder=ENCODER_BACKEND_PRE_ENCODED`` (H.264, no simulcast) for pre-encoded access
  units, whose keyframe requests are handed to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import numpy as np
from livekit import api, rtc

from capstan.rooms.base import (
    LeaveReason,
    Left,
    MediaId,
    RemoteTrack,
    RoomConnectionLost,
    RoomEvent,
    TimedFrame,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
)
from capstan.rooms.fanout import FrameSink, TrackFrames, WallClock

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0  # signal connection + first ICE/DTLS
REQUEST_TIMEOUT = 10.0  # one RoomService call
SUBSCRIBE_TIMEOUT = 15.0  # set_subscribed -> track_subscribed
AUDIO_RATE = 48000
# Pictures the SDK's native side may hold for us while our event loop is busy (an encode holding
# the GIL, a loaded node): its default queue is shallow, so a stall longer than one frame interval
# dropped pictures ("native video stream queue overflow"). Half a second at 30 fps; bounded, so a
# subscriber that falls behind for good still drops instead of growing without limit.
VIDEO_QUEUE_FRAMES = 15
AUDIO_MAX_LAG = 1.0  # an audio frame this late re-anchors the sample clock (the sender paused)

_DR = rtc.DisconnectReason
# Everything else (signal closed, timeouts, media or join failure) is a lost connection: fail over.
LEAVE_REASONS: dict[int, LeaveReason] = {
    _DR.CLIENT_INITIATED: LeaveReason.normal,
    _DR.PARTICIPANT_REMOVED: LeaveReason.removed,
    _DR.ROOM_DELETED: LeaveReason.room_closed,
    _DR.STATE_MISMATCH: LeaveReason.server_removed,
    _DR.MIGRATION: LeaveReason.server_removed,
    _DR.SERVER_SHUTDOWN: LeaveReason.server_closed,
    _DR.ROOM_CLOSED: LeaveReason.server_closed,
    _DR.DUPLICATE_IDENTITY: LeaveReason.replaced,
}

_SOURCES = {
    rtc.TrackSource.SOURCE_CAMERA: MediaId.MAIN, rtc.TrackSource.SOURCE_MICROPHONE: MediaId.MAIN,
    rtc.TrackSource.SOURCE_SCREENSHARE: MediaId.AUX, rtc.TrackSource.SOURCE_SCREENSHARE_AUDIO: MediaId.AUX,
}



class BufferedVideoStream(rtc.VideoStream):
    """``rtc.VideoStream`` asking the native side for a queue of VIDEO_QUEUE_FRAMES pictures.

    The SDK does not expose the request's ``queue_size_frames`` (its AudioStream sets it, its
    VideoStream leaves the shallow default), so the stream request is built here; with an SDK
    whose request has no such field the default stays."""

    def _create_owned_stream(self) -> Any:
        from livekit.rtc._ffi_client import FfiClient
        from livekit.rtc._proto import ffi_pb2, video_frame_pb2

        track = self._track
        if track is None:
            return super()._create_owned_stream()
        req = ffi_pb2.FfiRequest()
        new_stream = req.new_video_stream
        new_stream.track_handle = track._ffi_handle.handle
        new_stream.type = video_frame_pb2.VideoStreamType.VIDEO_STREAM_NATIVE
        if self._format is not None:
            new_stream.format = self._format
        new_stream.normalize_stride = True
        if "queue_size_frames" in new_stream.DESCRIPTOR.fields_by_name:
            new_stream.queue_size_frames = VIDEO_QUEUE_FRAMES
        return FfiClient.instance.request(req).new_video_stream.stream

class LiveKitConnectionLost(RoomConnectionLost):
    """The connection to the LiveKit server was lost and the SDK could not get it back."""


def http_url(url: str) -> str:
    """RoomService speaks HTTP on the same host and port as the signalling WebSocket."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def remote_track(participant: Any, publication: Any) -> RemoteTrack | None:
    kind = {rtc.TrackKind.KIND_AUDIO: TrackKind.AUDIO, rtc.TrackKind.KIND_VIDEO: TrackKind.VIDEO}.get(
        publication.kind)
    if kind is None:
        return None
    return RemoteTrack(participant.identity, _SOURCES.get(publication.source, MediaId.MAIN), kind, publication.sid)


def to_av_video(frame: Any) -> av.VideoFrame:
    """An SDK I420 frame as a PyAV yuv420p frame (one copy)."""
    width, height = frame.width, frame.height
    data = np.frombuffer(frame.data, dtype=np.uint8)
    if width % 2 == 0 and height % 2 == 0:
        return av.VideoFrame.from_ndarray(data.reshape(height * 3 // 2, width), format="yuv420p")
    out = av.VideoFrame(width, height, "yuv420p")
    cw, ch = (width + 1) // 2, (height + 1) // 2
    offset = 0
    for plane, (w, h) in zip(out.planes, ((width, height), (cw, ch), (cw, ch)), strict=True):
        rows = data[offset:offset + w * h].reshape(h, w)
        offset += w * h
        view = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(h, plane.line_size)  # type: ignore[call-overload]
        view[:, :w] = rows
    return out


def to_av_audio(frame: Any) -> av.AudioFrame:
    pcm = np.frombuffer(frame.data, dtype=np.int16).reshape(1, -1)
    layout = "mono" if frame.num_channels == 1 else "stereo"
    out = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
    out.sample_rate = frame.sample_rate
    return out


class _TrackPump:
    """One subscribed track: its SDK stream, fanned out to the subscribers' sinks."""

    def __init__(self, conn: LiveKitConnection, track: RemoteTrack, publication: Any) -> None:
        self.conn, self.track, self.publication = conn, track, publication
        self.sinks: list[FrameSink] = []
        self.task: asyncio.Task[None] | None = None
        self.subscribed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def end(self, error: BaseException | None = None) -> None:
        for sink in self.sinks:
            sink.end(error)
        self.sinks.clear()
        if self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        stream: Any = None
        try:
            self.publication.set_subscribed(True)
            remote = await asyncio.wait_for(asyncio.shield(self.subscribed), SUBSCRIBE_TIMEOUT)
            if self.track.kind is TrackKind.VIDEO:
                stream = BufferedVideoStream(remote, format=rtc.VideoBufferType.I420)
                await self._video(stream)
            else:
                stream = rtc.AudioStream(remote, sample_rate=AUDIO_RATE, num_channels=1)
                await self._audio(stream)
            self.end()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the iterators
            log.warning("subscription to %s failed: %s", self.track.track_id, exc)
            self.end(exc)
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stream.aclose(), REQUEST_TIMEOUT)

    def _put(self, frame: Any, at: float) -> None:
        timed = TimedFrame(frame, at)
        for sink in self.sinks:
            sink.put(timed)

    async def _video(self, stream: Any) -> None:
        clock = WallClock()
        async for event in stream:
            if self.sinks:
                self._put(to_av_video(event.frame), clock.time(event.timestamp_us / 1e6, time.time()))

    async def _audio(self, stream: Any) -> None:
        clock = WallClock(max_lag=AUDIO_MAX_LAG)
        samples = 0
        async for event in stream:
            frame = event.frame
            at = clock.time(samples / frame.sample_rate, time.time())
            samples += frame.samples_per_channel
            if self.sinks:
                self._put(to_av_audio(frame), at)


class LiveKitConnection:
    """A joined LiveKit room (implements capstan.rooms.base.RoomConnection)."""

    def __init__(self, room: Any, identity: str) -> None:
        self.room, self.identity = room, identity
        self.published: dict[str, tuple[RemoteTrack, Any]] = {}  # sid -> (track, publication)
        self.pumps: dict[str, _TrackPump] = {}
        self._events: asyncio.Queue[RoomEvent | LiveKitConnectionLost] = asyncio.Queue()
        self.left: LeaveReason | None = None
        self._leaving = False
        room.on("track_published", self._on_published)
        room.on("track_unpublished", self._on_unpublished)
        room.on("participant_disconnected", self._on_participant_gone)
        room.on("track_subscribed", self._on_subscribed)
        room.on("track_unsubscribed", lambda track, publication, participant: self._end_pump(publication.sid))
        room.on("disconnected", self._on_disconnected)
        room.on("reconnecting", lambda: log.info("room %s: connection interrupted, the SDK reconnects", room.name))
        room.on("reconnected", lambda: log.info("room %s: reconnected", room.name))

    def start(self) -> None:
        """Report the tracks of everybody already in the room."""
        for participant in self.room.remote_participants.values():
            for publication in participant.track_publications.values():
                self._on_published(publication, participant)

    # --- room events -----------------------------------------------------------------------

    def _on_published(self, publication: Any, participant: Any) -> None:
        track = remote_track(participant, publication)
        if track is None or publication.sid in self.published or participant.identity == self.identity:
            return
        self.published[publication.sid] = (track, publication)
        self._events.put_nowait(TrackPublished(track))

    def _on_unpublished(self, publication: Any, participant: Any) -> None:
        entry = self.published.pop(publication.sid, None)
        if entry is not None:
            self._end_pump(publication.sid)
            self._events.put_nowait(TrackUnpublished(entry[0]))

    def _on_participant_gone(self, participant: Any) -> None:
        for sid, (track, _pub) in list(self.published.items()):
            if track.user_id == participant.identity:
                self._on_unpublished(self.published[sid][1], participant)

    def _on_subscribed(self, remote: Any, publication: Any, participant: Any) -> None:
        pump = self.pumps.get(publication.sid)
        if pump is not None and not pump.subscribed.done():
            pump.subscribed.set_result(remote)

    def _on_disconnected(self, reason: int) -> None:
        for sid in list(self.pumps):
            self._end_pump(sid)
        if self.left is not None:
            return
        leave = LEAVE_REASONS.get(reason)
        if leave is None and not self._leaving:
            name = rtc.DisconnectReason.Name(reason) if reason in rtc.DisconnectReason.values() else reason  # type: ignore[arg-type]
            self._events.put_nowait(LiveKitConnectionLost(f"connection to the LiveKit room lost ({name})"))
            self.left = LeaveReason.timeout
            return
        self.left = leave or LeaveReason.normal
        self._events.put_nowait(Left(self.left))

    async def events(self) -> AsyncIterator[RoomEvent]:
        while True:
            event = await self._events.get()
            if isinstance(event, LiveKitConnectionLost):
                raise event
            yield event
            if isinstance(event, Left):
                return

    # --- subscriptions ---------------------------------------------------------------------

    def subscribe(self, track: RemoteTrack) -> AsyncIterator[TimedFrame]:
        sink = FrameSink(track)
        frames = TrackFrames(sink)
        entry = self.published.get(track.track_id)
        if self.left is not None:
            sink.end()
        elif entry is None:
            sink.end(RuntimeError(f"track {track.track_id} is not published in room {self.room.name!r}"))
        else:
            pump = self.pumps.get(track.track_id)
            if pump is None:
                pump = self.pumps[track.track_id] = _TrackPump(self, track, entry[1])
                pump.task = asyncio.create_task(pump.run())
            pump.sinks.append(sink)
        return frames

    def _end_pump(self, sid: str) -> None:
        pump = self.pumps.pop(sid, None)
        if pump is not None:
            pump.end()

    async def unsubscribe(self, track: RemoteTrack) -> None:
        pump = self.pumps.pop(track.track_id, None)
        if pump is None:
            return
        pump.end()
        with contextlib.suppress(Exception):
            pump.publication.set_subscribed(False)

    async def leave(self) -> None:
        if self._leaving:
            return
        self._leaving = True
        for sid in list(self.pumps):
            self._end_pump(sid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), REQUEST_TIMEOUT)
        if self.left is None:
            self.left = LeaveReason.normal
            self._events.put_nowait(Left(LeaveReason.normal))


# --- publishing --------------------------------------------------------------------------------


class _VideoOutput:
    # capture_frame (raw and encoded) is one synchronous FFI request: a caller may write from a
    # thread of its own (one at a time), off the event loop.
    thread_safe = True

    def __init__(self, source: Any, track: Any, width: int, height: int, encoded: bool) -> None:
        self.source, self.track, self.encoded = source, track, encoded
        self.width, self.height = width, height
        self.sid: str | None = None
        self._picture: bytearray | None = None

    def write(self, frame: av.VideoFrame, time: float) -> None:
        """The picture's planes copied once into a buffer reused from frame to frame (the SDK
        copies it again before capture_frame returns, so it is free as soon as this returns)."""
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        width, height = frame.width, frame.height
        cw, ch = (width + 1) // 2, (height + 1) // 2
        size = width * height + 2 * cw * ch
        if self._picture is None or len(self._picture) != size:
            self._picture = bytearray(size)
        offset = 0
        for plane, (w, h) in zip(frame.planes, ((width, height), (cw, ch), (cw, ch)), strict=True):
            src = np.frombuffer(memoryview(plane), dtype=np.uint8,  # type: ignore[call-overload]
                                count=h * plane.line_size).reshape(h, plane.line_size)
            dst = np.frombuffer(self._picture, dtype=np.uint8, count=w * h, offset=offset).reshape(h, w)
            np.copyto(dst, src[:, :w])
            offset += w * h
        self.source.capture_frame(rtc.VideoFrame(width, height, rtc.VideoBufferType.I420, self._picture),
                                  timestamp_us=int(time * 1e6))

    def write_encoded(self, data: bytes, *, keyframe: bool, time: float) -> bool:
        frame = rtc.EncodedVideoFrame(
            data=data, width=self.width, height=self.height, codec=rtc.VideoCodec.H264,
            frame_type=rtc.EncodedFrameType.ENCODED_FRAME_KEY if keyframe else rtc.EncodedFrameType.ENCODED_FRAME_DELTA,
            timestamp_us=int(time * 1e6))
        accepted: bool = self.source.capture_frame(frame)
        return accepted

    def keyframe_requested(self) -> bool:
        return bool(self.encoded and self.source.take_feedback().keyframe_requested)


class _AudioOutput:
    """A published audio track: ``AudioSource`` sends 10 ms every 10 ms of its native clock from its
    queue. The pusher keeps that queue in step with its pictures itself
    (capstan/pusher/pacing.py): it writes 100 ms blocks ``cushion`` ahead of the time each must
    leave, ``lead`` before its due time, with :meth:`send` — one synchronous FFI request, callable
    off the event loop."""

    # A sample that leaves `lead` before its due time reaches a subscriber with the picture due at
    # the same time (the audio path is that much longer: Opus framing, the subscriber's jitter buffer).
    lead = 0.035
    cushion = 0.25  # sound kept in the source's queue: a writer stall shorter than this is harmless
    thread_safe = True
    # send() never waits for the queue to drain (the request completes at once while the queue holds
    # at most its size; the schedule keeps it at cushion + one block + silence up to cushion) and the
    # next capture would be refused if one were still waiting: so the queue is far larger than that.
    queue_ms = 1000
    latency = lead + cushion  # write() (the loop's own pacing) writes this far ahead

    def __init__(self, source: Any, track: Any) -> None:
        self.source, self.track = source, track
        # Samples per block: 100 ms (the source takes any multiple of 10 ms): a fifth of the FFI
        # requests and completion events of 20 ms blocks.
        self.frame_samples: int = source.sample_rate // 10
        self.sid: str | None = None

    def _pcm(self, frame: av.AudioFrame) -> np.ndarray:
        if frame.format.name != "s16" or frame.sample_rate != self.source.sample_rate:
            frame = av.AudioResampler(format="s16", layout="mono" if self.source.num_channels == 1 else "stereo",
                                      rate=self.source.sample_rate).resample(frame)[0]
        count = frame.samples * self.source.num_channels
        return np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16, count=count)  # type: ignore[call-overload]

    def send(self, frame: av.AudioFrame, silence: int = 0, skip: int = 0) -> None:
        """`silence` samples of silence, then `frame` less its first `skip` samples, into the source's
        queue with one FFI request (it copies the samples before it returns; its completion event is
        not waited for)."""
        from livekit.rtc._ffi_client import FfiClient
        from livekit.rtc._proto import ffi_pb2

        channels = self.source.num_channels
        pcm = self._pcm(frame)[skip * channels:]
        if silence:
            pcm = np.concatenate((np.zeros(silence * channels, dtype=np.int16), pcm))
        handle = self.source._ffi_handle
        if not len(pcm) or handle.disposed:
            return
        req = ffi_pb2.FfiRequest()
        capture = req.capture_audio_frame
        capture.source_handle = handle.handle
        capture.buffer.data_ptr = pcm.ctypes.data
        capture.buffer.sample_rate = self.source.sample_rate
        capture.buffer.num_channels = channels
        capture.buffer.samples_per_channel = len(pcm) // channels
        FfiClient.instance.request(req)

    async def write(self, frame: av.AudioFrame) -> None:
        pcm = self._pcm(frame)
        samples = len(pcm) // self.source.num_channels
        await self.source.capture_frame(rtc.AudioFrame(pcm.tobytes(), self.source.sample_rate,
                                                       self.source.num_channels, samples))


class LiveKitPublisher:
    """A visible participant that publishes (implements capstan.rooms.base.Publisher)."""

    accepts_encoded_h264 = True
    adds_tracks_live = True

    def __init__(self, room: Any) -> None:
        self.room = room
        self.pending: list[tuple[Any, Any]] = []  # (output, options) until start()
        self.started = False

    async def _publish(self, output: Any, options: Any) -> None:
        if not self.started:
            self.pending.append((output, options))
            return
        publication = await asyncio.wait_for(self.room.local_participant.publish_track(output.track, options),
                                             CONNECT_TIMEOUT)
        output.sid = publication.sid

    async def add_video(self, media: MediaId, width: int, height: int, *, encoded_h264: bool = False) -> Any:
        source_kind = rtc.TrackSource.SOURCE_SCREENSHARE if media is MediaId.AUX else rtc.TrackSource.SOURCE_CAMERA
        options = rtc.TrackPublishOptions(source=source_kind, simulcast=False)
        if encoded_h264:
            source: Any = rtc.EncodedVideoSource(width, height)
            options.video_codec = rtc.VideoCodec.H264
            options.video_encoder = rtc.VideoEncoderBackend.ENCODER_BACKEND_PRE_ENCODED
        else:
            source = rtc.VideoSource(width, height, is_screencast=media is MediaId.AUX)
        track = rtc.LocalVideoTrack.create_video_track(f"{media.value}-video", source)
        output = _VideoOutput(source, track, width, height, encoded_h264)
        await self._publish(output, options)
        return output

    async def add_audio(self, media: MediaId, sample_rate: int = AUDIO_RATE, channels: int = 1) -> Any:
        source_kind = (rtc.TrackSource.SOURCE_SCREENSHARE_AUDIO if media is MediaId.AUX
                       else rtc.TrackSource.SOURCE_MICROPHONE)
        source = rtc.AudioSource(sample_rate, channels, queue_size_ms=_AudioOutput.queue_ms)
        track = rtc.LocalAudioTrack.create_audio_track(f"{media.value}-audio", source)
        output = _AudioOutput(source, track)
        await self._publish(output, rtc.TrackPublishOptions(source=source_kind))
        return output

    async def remove(self, output: Any) -> None:
        if output.sid is not None:
            await asyncio.wait_for(self.room.local_participant.unpublish_track(output.sid), REQUEST_TIMEOUT)
            output.sid = None

    async def start(self) -> None:
        self.started = True
        pending, self.pending = self.pending, []
        for output, options in pending:
            await self._publish(output, options)

    async def leave(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), REQUEST_TIMEOUT)


# --- the backend and room control --------------------------------------------------------------


class LiveKitBackend:
    """capstan.rooms.base.RoomBackend for LiveKit."""

    # The pusher may publish pass-through H.264 with capstan-lkpublish (LiveKit's Go SDK) instead of
    # this backend's publish() (capstan/pusher/external.py).
    external_h264_publisher = True

    def __init__(self, **_options: Any) -> None:
        pass

    async def join(self, url: str, room: str, identity: str, token: str, *, hidden: bool = True) -> LiveKitConnection:
        """Join with `token` (its grants decide hidden/subscribe-only); `room` and `identity` are in it."""
        lk_room = rtc.Room()
        conn = LiveKitConnection(lk_room, identity)
        await asyncio.wait_for(
            lk_room.connect(url, token, rtc.RoomOptions(auto_subscribe=False, connect_timeout=CONNECT_TIMEOUT)),
            CONNECT_TIMEOUT * 2)
        conn.start()
        return conn

    async def publish(self, url: str, room: str, identity: str, token: str) -> LiveKitPublisher:
        lk_room = rtc.Room()
        await asyncio.wait_for(
            lk_room.connect(url, token, rtc.RoomOptions(auto_subscribe=False, connect_timeout=CONNECT_TIMEOUT)),
            CONNECT_TIMEOUT * 2)
        return LiveKitPublisher(lk_room)


class LiveKitControl:
    """capstan.rooms.base.RoomControl over LiveKit's RoomService (TRTC RemoveUser / DismissRoom)."""

    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        self.url, self.api_key, self.api_secret = http_url(url), api_key, api_secret
        self._api: Any = None

    def _client(self) -> Any:
        if self._api is None:
            import aiohttp

            self._api = api.LiveKitAPI(self.url, self.api_key, self.api_secret,
                                       timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        return self._api

    async def create_room(self, room: str) -> bool:
        existing = await self._client().room.list_rooms(api.ListRoomsRequest(names=[room]))
        if existing.rooms:
            return False
        await self._client().room.create_room(api.CreateRoomRequest(name=room, empty_timeout=300))
        return True

    async def remove_participant(self, room: str, identity: str) -> None:
        await self._client().room.remove_participant(api.RoomParticipantIdentity(room=room, identity=identity))

    async def close_room(self, room: str) -> None:
        await self._client().room.delete_room(api.DeleteRoomRequest(room=room))

    async def list_participants(self, room: str) -> list[str]:
        answer = await self._client().room.list_participants(api.ListParticipantsRequest(room=room))
        return [p.identity for p in answer.participants]

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None
