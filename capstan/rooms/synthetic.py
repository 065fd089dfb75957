"""A synthetic anchor: publishes a solid-colour video and a sine tone into a Janus VideoRoom.

Used by tests, the demo and benchmarks. The anchor joins as publisher ``user_id`` and publishes a
``main`` stream (video in `color`, audio as a `tone_hz` sine) and, if `aux_color` is given, an
``aux`` video (a screen share) in the same PeerConnection, until :meth:`SyntheticAnchor.stop`.

CPU stays low: small frames (320x180@15 by default), one precomputed YUV picture, and a solid
colour that VP8 compresses to almost nothing.

    async with SyntheticAnchor(url, "room-1", "alice", color=(200, 40, 120), tone_hz=440):
        ...  # alice is publishing
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from typing import Any

import av
import numpy as np

from capstan.rooms.janus import (
    JanusError,
    JanusHandle,
    JanusSession,
    host_address_from_env,
    new_peer_connection,
    set_local_description,
    wait_connected,
)

log = logging.getLogger(__name__)

AUDIO_RATE = 48000
AUDIO_PTIME = 0.02  # 20 ms frames, as Opus sends them
VIDEO_CLOCK = 90000


def _track_base() -> type:
    from aiortc import MediaStreamTrack

    return MediaStreamTrack


class _Paced:
    """Frame n is due at start + n * period (wall clock), so a slow loop catches up."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.start: float | None = None
        self.n = -1

    async def next(self) -> int:
        if self.start is None:
            self.start = time.time()
        self.n += 1
        wait = self.start + self.n * self.period - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        return self.n


def solid_video_track(color: tuple[int, int, int], width: int, height: int, fps: float) -> Any:
    """An aiortc video track of one colour (RGB)."""
    base = _track_base()
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[:, :] = color
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
    time_base = fractions.Fraction(1, VIDEO_CLOCK)
    step = VIDEO_CLOCK / fps

    class SolidVideo(base):  # type: ignore[misc, valid-type]
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.pace = _Paced(1.0 / fps)

        async def recv(self) -> av.VideoFrame:
            n = await self.pace.next()
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = int(n * step)
            frame.time_base = time_base
            return frame

    return SolidVideo()


def tone_audio_track(tone_hz: float, amplitude: float = 0.3) -> Any:
    """An aiortc audio track: a sine of `tone_hz`, 48 kHz mono s16, 20 ms frames."""
    base = _track_base()
    samples = int(AUDIO_RATE * AUDIO_PTIME)
    time_base = fractions.Fraction(1, AUDIO_RATE)
    scale = amplitude * 32767

    class Tone(base):  # type: ignore[misc, valid-type]
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.pace = _Paced(AUDIO_PTIME)

        async def recv(self) -> av.AudioFrame:
            n = await self.pace.next()
            t = (np.arange(samples) + n * samples) / AUDIO_RATE
            pcm = (np.sin(2 * np.pi * tone_hz * t) * scale).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = AUDIO_RATE
            frame.pts = n * samples
            frame.time_base = time_base
            return frame

    return Tone()


class SyntheticAnchor:
    """An anchor publishing a solid colour and a tone into a Janus VideoRoom until stopped."""

    def __init__(self, url: str, room: str, user_id: str, *, color: tuple[int, int, int] = (200, 40, 120),
                 tone_hz: float | None = 440.0, aux_color: tuple[int, int, int] | None = None,
                 size: tuple[int, int] = (320, 180), fps: float = 15.0, host_address: str | None = None) -> None:
        self.url, self.room, self.user_id = url, room, user_id
        self.color, self.tone_hz, self.aux_color = color, tone_hz, aux_color
        self.size, self.fps = size, fps
        self.host_address = host_address or host_address_from_env()
        self.session: JanusSession | None = None
        self.handle: JanusHandle | None = None
        self.pc: Any = None

    async def start(self, timeout: float = 15.0) -> SyntheticAnchor:
        """Join, publish, and return once Janus has the feed (its PeerConnection is connected)."""
        try:
            await asyncio.wait_for(self._start(), timeout)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self) -> None:
        from aiortc import RTCSessionDescription

        self.session = await JanusSession.create(self.url)
        self.handle = handle = await self.session.attach()
        data, _ = await handle.message({"request": "join", "ptype": "publisher", "room": self.room,
                                        "id": self.user_id, "display": self.user_id})
        if data.get("videoroom") != "joined":
            raise JanusError(0, f"unexpected answer to join: {data}")
        self.pc = pc = new_peer_connection()
        width, height = self.size
        descriptions: list[tuple[Any, str]] = [
            (pc.addTransceiver(solid_video_track(self.color, width, height, self.fps), "sendonly"), "main")]
        if self.tone_hz is not None:
            descriptions.append((pc.addTransceiver(tone_audio_track(self.tone_hz), "sendonly"), "main"))
        if self.aux_color is not None:
            aux = solid_video_track(self.aux_color, width, height, self.fps)
            descriptions.append((pc.addTransceiver(aux, "sendonly"), "aux"))
        offer = await pc.createOffer()
        await set_local_description(pc, offer, self.host_address)
        body = {"request": "publish",
                "descriptions": [{"mid": t.mid, "description": d} for t, d in descriptions]}
        data, jsep = await handle.message(body, {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})
        if jsep is None:
            raise JanusError(0, f"no answer to publish: {data}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
        await wait_connected(pc)

    async def stop(self) -> None:
        """Leave the room (others see the tracks unpublished) and close everything. Idempotent."""
        if self.handle is not None and self.session is not None and self.session.lost is None:
            with contextlib.suppress(Exception):
                await self.handle.message({"request": "leave"}, timeout=5.0)
        self.handle = None
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), 10)
            self.pc = None
        if self.session is not None:
            await self.session.destroy()
            self.session = None

    async def __aenter__(self) -> SyntheticAnchor:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
