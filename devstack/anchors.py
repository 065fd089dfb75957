"""Synthetic anchors for tests, the demo and benchmarks: a participant that publishes a solid
colour and a sine tone (and, on demand, a screen share of another colour) into a room of any
backend, through the room port's publishing (capstan.rooms.base.Publisher).

CPU stays low: small frames (320x180@15 by default), one precomputed picture, a solid colour that
the encoders compress to almost nothing.

    anchor = await SyntheticAnchor(server, "room-1", "alice", color=(200, 40, 120), tone_hz=440).start()
    ...
    await anchor.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from capstan.media.naming import MediaId

if TYPE_CHECKING:
    from devstack.rooms import RoomServer

log = logging.getLogger(__name__)

AUDIO_RATE = 48000
AUDIO_PTIME = 0.02  # 20 ms frames, as Opus sends them


class Paced:
    """Tick n is due at start + n * period (wall clock), so a slow loop catches up."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.start: float | None = None
        self.n = -1

    async def next(self) -> tuple[int, float]:
        if self.start is None:
            self.start = time.time()
        self.n += 1
        due = self.start + self.n * self.period
        wait = due - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        return self.n, due


def solid_frame(color: tuple[int, int, int], width: int, height: int) -> av.VideoFrame:
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[:, :] = color
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def tone_frame(tone_hz: float, n: int, amplitude: float = 0.3) -> av.AudioFrame:
    samples = int(AUDIO_RATE * AUDIO_PTIME)
    t = (np.arange(samples) + n * samples) / AUDIO_RATE
    pcm = (np.sin(2 * np.pi * tone_hz * t) * amplitude * 32767).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = AUDIO_RATE
    return frame


class SyntheticAnchor:
    """An anchor publishing a solid colour and a tone until stopped; :meth:`share_screen` adds an
    ``aux`` video (at start on backends that cannot add tracks live)."""

    def __init__(self, server: RoomServer, room: str, user_id: str, *, color: tuple[int, int, int] = (200, 40, 120),
                 tone_hz: float | None = 440.0, aux_color: tuple[int, int, int] | None = None,
                 size: tuple[int, int] = (320, 180), fps: float = 15.0, video: bool = True) -> None:
        self.server, self.room, self.user_id = server, room, user_id
        self.color, self.tone_hz, self.aux_color = color, tone_hz, aux_color
        self.size, self.fps, self.video = size, fps, video
        self.publisher: Any = None
        self.tasks: list[asyncio.Task[None]] = []
        self.aux: tuple[Any, asyncio.Task[None]] | None = None
        self.camera: av.VideoFrame | None = None  # the main picture now sent (switch_camera changes it)

    def switch_camera(self, size: tuple[int, int], color: tuple[int, int, int]) -> None:
        """From the next frame on, send a picture of another size (a camera switching 720p to 360p
        under congestion): the same track, its resolution changing mid-stream."""
        self.camera = solid_frame(color, *size)

    async def start(self, timeout: float = 20.0) -> SyntheticAnchor:
        """Join, publish, and return once the room server has the tracks."""
        try:
            await asyncio.wait_for(self._start(), timeout)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self) -> None:
        self.publisher = pub = await self.server.publisher(self.room, self.user_id)
        width, height = self.size
        if self.video:
            out = await pub.add_video(MediaId.MAIN, width, height)
            self.camera = solid_frame(self.color, width, height)
            self.tasks.append(asyncio.create_task(self._send_video(out, None)))
        if self.tone_hz is not None:
            audio = await pub.add_audio(MediaId.MAIN, AUDIO_RATE, 1)
            self.tasks.append(asyncio.create_task(self._send_audio(audio, self.tone_hz)))
        if self.aux_color is not None:
            await self._add_aux(self.aux_color)
        await pub.start()

    async def _add_aux(self, color: tuple[int, int, int]) -> None:
        width, height = self.size
        out = await self.publisher.add_video(MediaId.AUX, width, height)
        self.aux = (out, asyncio.create_task(self._send_video(out, solid_frame(color, width, height))))

    async def share_screen(self, color: tuple[int, int, int]) -> None:
        """Start a screen share (``aux``) of one colour."""
        if not self.publisher.adds_tracks_live:
            raise NotImplementedError(f"{self.server.name}: a screen share is given at start (aux_color)")
        await self._add_aux(color)

    async def stop_screen_share(self) -> None:
        if self.aux is not None:
            out, task = self.aux
            self.aux = None
            task.cancel()
            await self.publisher.remove(out)

    async def _send_video(self, out: Any, picture: av.VideoFrame | None) -> None:
        """Paced frames of `picture` (None: the camera's current picture)."""
        pace = Paced(1.0 / self.fps)
        while True:
            _, due = await pace.next()
            out.write(picture or self.camera, due)

    async def _send_audio(self, out: Any, tone_hz: float) -> None:
        pace = Paced(AUDIO_PTIME)
        while True:
            n, _ = await pace.next()
            await out.write(tone_frame(tone_hz, n))

    async def stop(self) -> None:
        """Leave the room (others see the tracks unpublished) and close everything. Idempotent."""
        tasks = self.tasks + ([self.aux[1]] if self.aux else [])
        self.tasks, self.aux = [], None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.leave()
            self.publisher = None

    async def __aenter__(self) -> SyntheticAnchor:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
