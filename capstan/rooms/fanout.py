"""Pieces every WebRTC room adapter shares: frame queues per subscriber, and the mapping of a
track's media time to wall-clock capture time (so PTS, ``<utc>`` names and BeginTimeStamp are right
whichever backend delivered the frame)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from capstan.rooms.base import RemoteTrack, TimedFrame

log = logging.getLogger(__name__)

CLOCK_DRIFT = 0.0005  # how far the media-to-wall-clock offset may creep up per media second
FRAME_QUEUE = 256  # frames buffered per subscribed track before the oldest are dropped


class WallClock:
    """Maps a track's media time (RTP timestamps, a sample count) to Unix time.

    The offset is the smallest ``receive time - media time`` seen so far (the least delayed frame)
    and may creep up by ``CLOCK_DRIFT`` per media second, so a sender clock slower than ours is
    followed. Gaps in the media timeline stay gaps, and a time is never later than the frame's
    receipt. With `max_lag`, a frame received more than that after its mapped time re-anchors the
    clock: for media times that do not advance while nothing is sent (a sample count), a pause in
    sending is then a gap too.
    """

    def __init__(self, max_lag: float | None = None) -> None:
        self.offset: float | None = None
        self.last_media = 0.0
        self.max_lag = max_lag

    def time(self, media: float | None, now: float) -> float:
        if media is None:
            return now
        if self.offset is None or (self.max_lag is not None and now - (self.offset + media) > self.max_lag):
            self.offset = now - media
        else:
            if media > self.last_media:
                self.offset += CLOCK_DRIFT * (media - self.last_media)
            self.offset = min(self.offset, now - media)
        self.last_media = media
        return self.offset + media


_END = object()


class FrameSink:
    """One subscriber's frame queue for one track; the oldest frames are dropped when it is full."""

    def __init__(self, track: RemoteTrack) -> None:
        self.track = track
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.dropped = 0
        self.closed = False

    def put(self, item: TimedFrame) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= FRAME_QUEUE:
            self.queue.get_nowait()
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 1000 == 0:
                log.warning("%s: consumer too slow, %d frames dropped", self.track.track_id, self.dropped)
        self.queue.put_nowait(item)

    def end(self, error: BaseException | None = None) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(error if error is not None else _END)


class TrackFrames:
    """The AsyncIterator[TimedFrame] returned by a connection's subscribe()."""

    def __init__(self, sink: FrameSink) -> None:
        self.sink = sink

    def __aiter__(self) -> TrackFrames:
        return self

    async def __anext__(self) -> TimedFrame:
        item = await self.sink.queue.get()
        if item is _END:
            self.sink.queue.put_nowait(_END)  # stays ended
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self.sink.queue.put_nowait(_END)
            raise item
        frame: TimedFrame = item
        return frame
