"""Publishing into a Janus VideoRoom (capstan.rooms.base.Publisher): one publisher handle and one
aiortc PeerConnection carrying every track, each described ``main`` or ``aux`` so subscribers can
tell a camera from a screen share. Frames are handed over by the caller, who paces them; aiortc
encodes them (VP8 / Opus). Janus takes no pre-encoded H.264 from us here, and tracks are published
together by :meth:`JanusPublisher.start` (no renegotiation later)."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from typing import Any

import av

from capstan.rooms.base import MediaId
from capstan.rooms.janus import (
    JanusError,
    JanusHandle,
    JanusSession,
    new_peer_connection,
    set_local_description,
    wait_connected,
)

VIDEO_CLOCK = 90000
QUEUE = 8  # frames waiting for aiortc; beyond that the oldest go (a publisher never lags behind)


def _queued_track(kind: str) -> Any:
    from aiortc import MediaStreamTrack

    class QueuedTrack(MediaStreamTrack):  # type: ignore[misc]
        """An aiortc track whose frames come from a queue the publisher fills."""

        def __init__(self) -> None:
            super().__init__()
            self.kind = kind
            self.queue: asyncio.Queue[Any] = asyncio.Queue()

        def put(self, frame: Any) -> None:
            if self.queue.qsize() >= QUEUE:
                self.queue.get_nowait()
            self.queue.put_nowait(frame)

        async def recv(self) -> Any:
            return await self.queue.get()

    return QueuedTrack()


class _VideoOutput:
    def __init__(self, media: MediaId) -> None:
        self.media, self.track = media, _queued_track("video")
        self.start: float | None = None
        self.time_base = fractions.Fraction(1, VIDEO_CLOCK)

    def write(self, frame: av.VideoFrame, time: float) -> None:
        if self.start is None:
            self.start = time
        frame.pts = int((time - self.start) * VIDEO_CLOCK)
        frame.time_base = self.time_base
        self.track.put(frame)

    def write_encoded(self, data: bytes, *, keyframe: bool, time: float) -> bool:
        raise NotImplementedError("Janus publishing takes raw frames (accepts_encoded_h264 is False)")

    def keyframe_requested(self) -> bool:
        return False


class _AudioOutput:
    latency = 0.0  # aiortc sends a frame as soon as it is written

    def __init__(self, media: MediaId, sample_rate: int) -> None:
        self.media, self.track = media, _queued_track("audio")
        self.samples = 0
        self.time_base = fractions.Fraction(1, sample_rate)

    async def write(self, frame: av.AudioFrame) -> None:
        frame.pts = self.samples
        frame.time_base = self.time_base
        self.samples += frame.samples
        self.track.put(frame)


class JanusPublisher:
    """A VideoRoom publisher participant."""

    accepts_encoded_h264 = False
    adds_tracks_live = False

    def __init__(self, session: JanusSession, handle: JanusHandle, host_address: str | None) -> None:
        self.session, self.handle, self.host_address = session, handle, host_address
        self.outputs: list[_VideoOutput | _AudioOutput] = []
        self.pc: Any = None

    async def add_video(self, media: MediaId, width: int, height: int, *, encoded_h264: bool = False) -> _VideoOutput:
        if encoded_h264 or self.pc is not None:
            raise NotImplementedError("Janus publishing: raw video tracks, all added before start()")
        output = _VideoOutput(media)
        self.outputs.append(output)
        return output

    async def add_audio(self, media: MediaId, sample_rate: int = 48000, channels: int = 1) -> _AudioOutput:
        if self.pc is not None:
            raise NotImplementedError("Janus publishing: all tracks are added before start()")
        output = _AudioOutput(media, sample_rate)
        self.outputs.append(output)
        return output

    async def remove(self, output: Any) -> None:
        """Stop sending a track's frames (Janus keeps the stream until the publisher leaves)."""
        output.track.stop()

    async def start(self) -> None:
        from aiortc import RTCSessionDescription

        self.pc = pc = new_peer_connection()
        transceivers = [(pc.addTransceiver(o.track, "sendonly"), o.media.value) for o in self.outputs]
        offer = await pc.createOffer()
        await set_local_description(pc, offer, self.host_address)
        body = {"request": "publish", "descriptions": [{"mid": t.mid, "description": d} for t, d in transceivers]}
        data, jsep = await self.handle.message(body, {"sdp": pc.localDescription.sdp,
                                                      "type": pc.localDescription.type})
        if jsep is None:
            raise JanusError(0, f"no answer to publish: {data}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
        await wait_connected(pc)

    async def leave(self) -> None:
        """Leave the room (others see the tracks unpublished) and close everything. Idempotent."""
        if self.session.lost is None:
            with contextlib.suppress(Exception):
                await self.handle.message({"request": "leave"}, timeout=5.0)
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), 10)
            self.pc = None
        await self.session.destroy()
