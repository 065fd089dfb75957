"""Reading a source into paced items: the pusher's part between the demuxer and the room.

A reader thread demuxes (PyAV blocks), and for each packet makes what the room takes: an Annex B
H.264 access unit (pass-through) or a decoded picture (re-encode), and s16 audio blocks of the
size the publisher asks for (20 ms by default; LiveKit takes 100 ms: fewer captures). Each
item carries the wall-clock time it is due, from one clock per *run* (a stretch of continuous
source time: the start, each loop of a file, each reconnection of a live stream), so audio and
video of a run stay together whatever the demuxer's interleaving. The senders (one pacing thread,
or async tasks on the event loop) wait for that time and hand the item to the room. The reader
keeps at most ``ahead`` seconds (:data:`AHEAD_SECONDS` plus how long before its due time the
publisher's audio is written) ahead of the clock, so memory stays small and a stop is quick.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from av.bitstream import BitStreamFilterContext

from capstan.pusher.source import SourceError, SourceInfo

log = logging.getLogger("capstan.pusher")

AHEAD_SECONDS = 0.5
RUN_GAP_SECONDS = 0.05  # a new run starts this long after the last item of the one before
AUDIO_RATE = 48000
AUDIO_FRAME = 960  # 20 ms, what Opus sends: the default audio block
HOLD_AUDIO_SECONDS = 3.0  # audio read before a run's first picture waits at most this long


@dataclass
class Item:
    kind: str  # "video" | "audio"
    due: float  # wall clock (Unix seconds)
    position: float  # seconds into the source (vod) or pushed so far (live)
    payload: Any  # bytes (an access unit), av.VideoFrame or av.AudioFrame
    keyframe: bool = False


@dataclass(frozen=True)
class Ended:
    """The source ended (``error`` None) or cannot go on (``error`` says why)."""

    error: str | None = None


class RunClock:
    """Due times of one run: its first item is due at ``wall``, the rest at their source distance
    from it. Pure."""

    def __init__(self, first: float, wall: float) -> None:
        self.first, self.wall = first, wall

    def due(self, t: float) -> float:
        return self.wall + (t - self.first)


Put = Callable[[Item | Ended], None]
Opener = Callable[[], Any]  # a fresh demuxer on the source (live reconnection)


class Reader:
    """Demuxes ``container`` into items for ``put``; runs in its own thread until :meth:`halt`."""

    def __init__(self, container: Any, info: SourceInfo, *, pass_through: bool, live: bool, loop: bool,
                 start: float, reopen: Opener, reconnect_seconds: float, audio_frame: int = AUDIO_FRAME,
                 ahead: float = AHEAD_SECONDS, run_gap: float = RUN_GAP_SECONDS,
                 on_note: Callable[[str], None] = lambda _m: None) -> None:
        self.container, self.info = container, info
        self.pass_through, self.live, self.loop = pass_through, live, loop
        self.start, self.reopen, self.reconnect_seconds = start, reopen, reconnect_seconds
        self.on_note, self.audio_frame = on_note, audio_frame
        self.ahead, self.run_gap = ahead, run_gap  # run_gap: a run's first item is due this long after it is read
        self.halted = threading.Event()
        self.last_due = 0.0
        self.live_base = 0.0  # seconds pushed in earlier live runs
        self.reconnects = 0

    def halt(self) -> None:
        self.halted.set()

    def run(self, put: Put) -> None:
        try:
            self._run(put)
        except SourceError as exc:
            put(Ended(str(exc)))
        except Exception as exc:  # noqa: BLE001 - the session reports it as the push's failure
            log.exception("reader failed")
            put(Ended(f"reading the source failed: {exc}"))
        finally:
            self._close()

    def _close(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):  # closing a broken demuxer
                self.container.close()
            self.container = None

    def _run(self, put: Put) -> None:
        seek_to = self.start
        while not self.halted.is_set():
            error = self._one_run(put, seek_to)
            if self.halted.is_set():
                return
            if not self.live:
                if error is not None:
                    raise SourceError(f"reading the source failed at {self.last_position:.1f} s: {error}")
                if not self.loop:
                    put(Ended())
                    return
                seek_to = 0.0  # loop: the file again, from its beginning
                continue
            self._reconnect(error or "the stream ended")
            seek_to = 0.0

    last_position = 0.0

    def _reconnect(self, why: str) -> None:
        """A dropped live stream: try again with backoff until the configured time is up."""
        self._close()
        deadline = time.monotonic() + self.reconnect_seconds
        delay = 0.5
        self.on_note(f"live source dropped ({why}); reconnecting for up to {self.reconnect_seconds:.0f} s")
        while not self.halted.is_set():
            try:
                self.container = self.reopen()
                self.reconnects += 1
                self.on_note(f"live source reconnected (reconnection {self.reconnects})")
                return
            except SourceError as exc:
                last = str(exc)
            if time.monotonic() + delay > deadline:
                raise SourceError(f"the live source dropped ({why}) and did not come back within "
                                  f"{self.reconnect_seconds:.0f} s (last try: {last})")
            self.halted.wait(delay)
            delay = min(delay * 2, 4.0)

    def _one_run(self, put: Put, seek_to: float) -> str | None:
        """Items of one continuous stretch of the source; the read error that ended it, if any."""
        c = self.container
        video = c.streams.video[0] if self.info.has_video and c.streams.video else None
        audio = c.streams.audio[0] if self.info.has_audio and c.streams.audio else None
        origin = max(0.0, float(c.start_time) / av.time_base) if c.start_time is not None else 0.0
        if not self.live:  # a file: its start (after the probe read ahead), a resume, or its next loop
            anchor_stream: Any = video or audio
            c.seek(int((seek_to + origin) / anchor_stream.time_base), stream=anchor_stream, backward=True,
                   any_frame=False)
        bsf = BitStreamFilterContext("h264_mp4toannexb", video) if video is not None and self.pass_through else None
        if video is not None and not self.pass_through:
            video.thread_type = "AUTO"
        resampler = None
        if audio is not None:
            layout = "mono" if self.info.audio_channels == 1 else "stereo"
            resampler = av.AudioResampler(format="s16", layout=layout, rate=AUDIO_RATE,
                                        frame_size=self.audio_frame)
        clock: RunClock | None = None
        held: list[tuple[float, Any]] = []  # audio before the run's first picture
        audio_t: float | None = None  # source time of the next resampled sample
        need_key = True
        live_base = self.live_base
        # A re-encoded resume starts at the saved position exactly; pass-through at the keyframe before it.
        skip_before = seek_to + origin if (seek_to > 0 and not self.pass_through) else None

        def position(t: float) -> float:
            return live_base + (t - clock.first) if self.live and clock is not None else t - origin

        def emit(kind: str, t: float, payload: Any, keyframe: bool = False) -> None:
            nonlocal clock
            if clock is None:
                clock = RunClock(t, max(time.time() + self.run_gap, self.last_due + RUN_GAP_SECONDS))
            item = Item(kind, clock.due(t), position(t), payload, keyframe)
            self._wait_until(item.due - self.ahead)
            put(item)
            self.last_due = max(self.last_due, item.due)
            self.last_position = item.position
            if self.live:
                self.live_base = max(self.live_base, item.position)

        def emit_audio(t: float, frame: Any) -> None:
            if clock is None and video is not None:
                held.append((t, frame))
                if t - held[0][0] <= HOLD_AUDIO_SECONDS:
                    return
                held.clear()  # a picture is long in coming: the audio goes on alone from here
            emit("audio", t, frame)

        streams = [s for s in (video, audio) if s is not None]
        try:
            for packet in c.demux(streams):
                if self.halted.is_set():
                    return None
                if packet.dts is None and packet.pts is None:
                    continue  # a flush packet at the end of a stream
                if packet.stream is video:
                    if bsf is not None:
                        for unit in bsf.filter(packet):
                            key = bool(unit.is_keyframe)
                            if need_key and not key:
                                continue
                            need_key = False
                            ts = unit.pts if unit.pts is not None else unit.dts
                            if ts is None:
                                continue
                            t = float(ts * unit.time_base)
                            first_picture = clock is None
                            emit("video", t, bytes(unit), key)
                            if first_picture:
                                for at, frame in held:
                                    if at >= t:
                                        emit("audio", at, frame)
                                held.clear()
                    else:
                        for frame in packet.decode():
                            if frame.time is None or (skip_before is not None and frame.time < skip_before):
                                continue
                            first_picture = clock is None
                            emit("video", frame.time, frame)
                            if first_picture:
                                for at, held_frame in held:
                                    if at >= frame.time:
                                        emit("audio", at, held_frame)
                                held.clear()
                elif packet.stream is audio and resampler is not None:
                    for frame in packet.decode():
                        if frame.time is None:
                            continue
                        if audio_t is None or abs(frame.time - audio_t) > 0.2:
                            audio_t = frame.time  # a new stretch of sound (start, seek)
                        if skip_before is not None and frame.time < skip_before:
                            audio_t = None
                            continue
                        frame.pts = None
                        for out in resampler.resample(frame):
                            emit_audio(audio_t, out)
                            audio_t += out.samples / AUDIO_RATE
        except (av.FFmpegError, OSError) as exc:
            return str(exc)
        return None

    def _wait_until(self, wall: float) -> None:
        while not self.halted.is_set():
            left = wall - time.time()
            if left <= 0:
                return
            self.halted.wait(min(left, 0.1))
