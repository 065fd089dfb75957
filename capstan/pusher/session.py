"""One push: a source into a room as `userId`, paced in real time, with progress saved and resumed.

The session is backend-agnostic: it asks the publisher whether it takes encoded H.264
(:attr:`Publisher.accepts_encoded_h264`) and passes H.264 without B-frames through as it is;
anything else is decoded and handed over as pictures for the backend to encode. Keyframe
requests of new subscribers are answered by the source's next keyframe (no re-encode), so a
viewer joining mid-GOP waits at most one GOP of the source.

Ends: the file ends (403 Status 0, phase finished), stop/deletion (403 Status 1), the source
fails (403 Status 2, status.result, exit code 3 so the operator fails the task without failover).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from capstan.api.common import Phase
from capstan.api.streampush import PushEvent, PushMode, PushStopStatus, StreamPushSpec
from capstan.media.naming import MediaId
from capstan.net.urlpolicy import Resolver, UrlPolicy
from capstan.operator.phases import EXIT_TASK_REFUSED
from capstan.pusher import progress as progressing
from capstan.pusher.progress import ProgressRecord, RedisProgress, StartPlan
from capstan.pusher.pump import AUDIO_FRAME, AUDIO_RATE, Ended, Item, Reader
from capstan.pusher.source import SourceError, SourceInfo, describe, open_container, probe
from capstan.rooms.base import AudioOutput, Publisher, RoomBackend, VideoOutput
from capstan.worker import metrics
from capstan.worker.base import Worker, now

log = logging.getLogger("capstan.pusher")

PROGRESS_SECONDS = float(os.environ.get("CAPSTAN_PUSH_PROGRESS_SECONDS", "1"))
JOIN_TIMEOUT = 45.0
# Bench and tests: decode and re-encode even where pass-through would do.
FORCE_REENCODE = os.environ.get("CAPSTAN_PUSH_REENCODE") == "1"
VIDEO_THREAD = os.environ.get("CAPSTAN_PUSH_VIDEO_THREAD") == "1"  # see PushSession's pacing (off: sync first)
FEEDBACK_SECONDS = 0.2  # how often the paced video thread asks the publisher for keyframe requests


@dataclass
class Outcome:
    status: PushStopStatus
    reason: str


class PushSession:
    def __init__(self, worker: Worker, spec: StreamPushSpec, backend: RoomBackend, *, room_url: str,
                 room_name: str, room_token: str, policy: UrlPolicy, redis_url: str | None = None,
                 status_position: float | None = None, resolve: Resolver | None = None) -> None:
        self.worker, self.spec, self.backend = worker, spec, backend
        self.room_url, self.room_name, self.room_token = room_url, room_name, room_token
        self.policy, self.resolve = policy, resolve
        self.redis = RedisProgress(redis_url, spec.video_src) if redis_url else None
        self.status_position = status_position
        self.live = spec.mode == PushMode.live
        self.info = SourceInfo()
        self.position = 0.0
        self.keyframe_requests = 0
        self.publisher: Publisher | None = None

    # --- the steps ---------------------------------------------------------------------------

    async def run(self) -> int:
        src = describe(self.spec.video_src)
        try:
            container, self.info = await asyncio.to_thread(self._open_and_probe)
        except SourceError as exc:
            message = str(exc) if str(exc).startswith("spec.videoSrc") else f"spec.videoSrc {src}: {exc}"
            return await self._refused(message)
        plan = await asyncio.to_thread(self._plan)
        if self.info.duration and plan.position >= self.info.duration - 0.5:
            plan = StartPlan()  # the saved push had reached the end: this one starts again
        self.position = plan.position
        try:
            publisher = await asyncio.wait_for(
                self.backend.publish(self.room_url, self.room_name, self.spec.user_id, self.room_token), JOIN_TIMEOUT)
        except Exception:
            container.close()
            raise
        self.publisher = publisher
        pass_through = self.info.passes_through(publisher.accepts_encoded_h264) and not FORCE_REENCODE
        try:
            outcome = await self._push(publisher, container, plan, pass_through)
        finally:
            await publisher.leave()
        return await self._end(outcome)

    def _open_and_probe(self) -> tuple[Any, SourceInfo]:
        container = self._open()
        try:
            return container, probe(container, look_ahead=not self.live)
        except SourceError:
            container.close()
            raise

    def _open(self) -> Any:
        return open_container(self.spec.video_src, self.policy, live=self.live, resolve=self.resolve)

    def _plan(self) -> StartPlan:
        record = None
        if self.redis is not None and not self.live:
            try:
                record = self.redis.load()
            except Exception as exc:  # noqa: BLE001 - Redis down: push from status or the start, and say so
                log.warning("Redis progress not read: %s", exc)
                self.worker.report(message=f"Redis progress not read ({type(exc).__name__}); not resuming from it")
        return progressing.plan_start(live=self.live, attempt=self.worker.ctx.attempt, resume=self.spec.resume,
                                      status_position=self.status_position, redis_record=record)

    async def _push(self, publisher: Publisher, container: Any, plan: StartPlan, pass_through: bool) -> Outcome:
        info = self.info
        video: VideoOutput | None = None
        audio: AudioOutput | None = None
        if info.size is not None:
            video = await publisher.add_video(MediaId.MAIN, *info.size, encoded_h264=pass_through)
        if info.has_audio:
            audio = await publisher.add_audio(MediaId.MAIN, AUDIO_RATE, info.audio_channels or 1)
        await publisher.start()

        loop = asyncio.get_running_loop()
        queues: dict[str, asyncio.Queue[Item | Ended]] = {"video": asyncio.Queue(), "audio": asyncio.Queue()}
        ended: asyncio.Future[Ended] = loop.create_future()
        # A video output that may be written from any (single) thread gets its own pacing thread:
        # the reader hands it the pictures directly and it sleeps to each one's due time, so the
        # event loop never wakes for a picture (LiveKit: a synchronous FFI call per picture).
        # Off unless CAPSTAN_PUSH_VIDEO_THREAD=1: with pictures paced apart from the sound, a loaded
        # event loop let the sound fall 0.48 s behind the pictures (a CI run); on one loop both lag alike.
        direct: queue.SimpleQueue[Item | Ended] | None = (
            queue.SimpleQueue() if VIDEO_THREAD and video is not None and getattr(video, "thread_safe", False)
            else None)
        halted = threading.Event()

        def put(item: Item | Ended) -> None:
            if direct is not None and (isinstance(item, Ended) or item.kind == "video"):
                if isinstance(item, Item):
                    metrics.RECEIVED[item.kind].inc()
                direct.put(item)
                if isinstance(item, Item):
                    return

            def deliver() -> None:
                if isinstance(item, Ended):
                    if not ended.done():
                        ended.set_result(item)
                    for q in queues.values():
                        q.put_nowait(item)
                else:
                    metrics.RECEIVED[item.kind].inc()
                    queues[item.kind].put_nowait(item)
            loop.call_soon_threadsafe(deliver)

        reader = Reader(container, info, pass_through=pass_through, live=self.live, loop=self.spec.loop,
                        start=plan.position, reopen=self._open,
                        reconnect_seconds=float(self.spec.live_reconnect_seconds),
                        audio_frame=getattr(audio, "frame_samples", AUDIO_FRAME),
                        on_note=lambda m: self.worker.report(message=m))
        thread = threading.Thread(target=reader.run, args=(put,), name="push-reader", daemon=True)
        thread.start()
        senders: list[asyncio.Future[Any]] = []
        video_thread: threading.Thread | None = None
        if video is not None and direct is not None:
            video_done: asyncio.Future[None] = loop.create_future()

            def video_ended() -> None:
                if not video_done.done():
                    video_done.set_result(None)

            def send_video() -> None:
                try:
                    self._send_video_paced(direct, video, pass_through, halted)
                finally:
                    loop.call_soon_threadsafe(video_ended)
            video_thread = threading.Thread(target=send_video, name="push-video", daemon=True)
            video_thread.start()
            senders.append(video_done)
        elif video is not None:
            senders.append(asyncio.create_task(self._send_video(queues["video"], video, pass_through)))
        if audio is not None:
            senders.append(asyncio.create_task(self._send_audio(queues["audio"], audio, video is None)))
        what = (f"{'pass-through H.264' if pass_through else 're-encoded video'} {info.size[0]}x{info.size[1]}"
                if info.size else "no video") + (", audio" if info.has_audio else ", no audio")
        await self._started(plan, what)
        saver = asyncio.create_task(self._save_progress_every(PROGRESS_SECONDS))
        stopper = asyncio.create_task(self._wait_stop())
        sending: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*senders))
        try:
            done, _ = await asyncio.wait([stopper, sending], return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.halt()
            halted.set()
            for task in (*senders, saver, stopper):
                task.cancel()
            await asyncio.gather(*senders, saver, stopper, return_exceptions=True)
            await asyncio.to_thread(thread.join, 15)
            if video_thread is not None:
                await asyncio.to_thread(video_thread.join, 5)
        if stopper in done:
            return Outcome(PushStopStatus.stopped, self.worker.stop_reason or "stopped")
        end = ended.result() if ended.done() else Ended("the push ended without its source ending")
        if end.error is not None:
            return Outcome(PushStopStatus.failed, f"spec.videoSrc {describe(self.spec.video_src)}: {end.error}")
        return Outcome(PushStopStatus.ended, "the source ended")

    async def _send_video(self, queue: asyncio.Queue[Item | Ended], out: VideoOutput, encoded: bool) -> None:
        while True:
            item = await queue.get()
            if isinstance(item, Ended):
                return
            await _until(item.due)
            if encoded:
                out.write_encoded(item.payload, keyframe=item.keyframe, time=item.due)
                if out.keyframe_requested():
                    self.keyframe_requests += 1  # answered by the source's next keyframe
            else:
                out.write(item.payload, item.due)
            self.position = item.position
            _sent("video", item, position=True)

    def _send_video_paced(self, items: queue.SimpleQueue[Item | Ended], out: VideoOutput, encoded: bool,
                          halted: threading.Event) -> None:
        """The video sender on its own thread (outputs with ``thread_safe``): waits for each picture's
        due time with one sleep, writes it, and asks for keyframe requests a few times a second
        (they are answered by the source's next keyframe whenever they came)."""
        next_feedback = 0.0
        while not halted.is_set():
            try:
                item = items.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, Ended):
                return
            wait = item.due - time.time()
            if wait > 0 and halted.wait(wait):
                return
            if encoded:
                out.write_encoded(item.payload, keyframe=item.keyframe, time=item.due)
                if item.due >= next_feedback:
                    next_feedback = item.due + FEEDBACK_SECONDS
                    if out.keyframe_requested():
                        self.keyframe_requests += 1
            else:
                out.write(item.payload, item.due)
            self.position = item.position
            _sent("video", item, position=True)

    async def _send_audio(self, queue: asyncio.Queue[Item | Ended], out: AudioOutput, tracks_position: bool) -> None:
        while True:
            item = await queue.get()
            if isinstance(item, Ended):
                return
            await _until(item.due - out.latency)  # the backend's queue delays it: written that much ahead
            await out.write(item.payload)
            if tracks_position:
                self.position = item.position
            _sent("audio", item, position=tracks_position)

    async def _wait_stop(self) -> None:
        while not self.worker.stop_event.is_set():
            await asyncio.sleep(0.2)

    async def _save_progress_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await asyncio.to_thread(self._save_progress)

    def _save_progress(self) -> None:
        self.worker.report(progress=progressing.status_progress(self.position, self.info.duration))
        if self.redis is not None and not self.live:
            try:
                self.redis.save(ProgressRecord(self.position, self.info.duration, self.worker.ctx.task_id,
                                               time.time()))
            except Exception as exc:  # noqa: BLE001 - status.progress still has it
                log.warning("Redis progress not saved: %s", exc)

    async def _started(self, plan: StartPlan, what: str) -> None:
        attempt = self.worker.ctx.attempt
        from_where = f" from {plan.position:.1f} s ({plan.origin})" if plan.origin else ""
        message = (f"attempt {attempt}: pushing {describe(self.spec.video_src)} as {self.spec.user_id} "
                   f"({what}){from_where}")
        await asyncio.to_thread(self.worker.report, phase=Phase.pushing.value, startTime=now(),
                                workerPod=self.worker.ctx.pod_name, message=message,
                                progress=progressing.status_progress(plan.position, self.info.duration))
        if attempt == 1:
            await asyncio.to_thread(self.worker.emit, PushEvent.start.value, {
                "Mode": str(self.spec.mode), "PositionMs": int(plan.position * 1000),
                "DurationMs": int(self.info.duration * 1000) if self.info.duration else None})
        if plan.origin or attempt > 1:
            await asyncio.to_thread(self.worker.emit, PushEvent.resume.value, {
                "PositionMs": int(plan.position * 1000), "From": plan.origin or "status", "Attempt": attempt})
        log.info("%s", message)

    async def _end(self, outcome: Outcome) -> int:
        await asyncio.to_thread(self._save_progress)
        if outcome.status is PushStopStatus.ended and self.redis is not None:
            try:
                await asyncio.to_thread(self.redis.clear)
            except Exception as exc:  # noqa: BLE001
                log.warning("Redis progress not cleared: %s", exc)
        await asyncio.to_thread(self.worker.emit, PushEvent.stop.value, {
            "Status": outcome.status.value, "PositionMs": int(self.position * 1000), "Reason": outcome.reason[:1000]})
        if outcome.status is PushStopStatus.failed:
            await asyncio.to_thread(self.worker.report, result={"errorCode": "SourceFailed",
                                                                 "errorMessage": outcome.reason},
                                    message=outcome.reason, stopTime=now())
            return EXIT_TASK_REFUSED
        await asyncio.to_thread(self.worker.report, stopTime=now(),
                                message=f"{outcome.reason} at {self.position:.1f} s"
                                        f" ({self.keyframe_requests} keyframe requests answered by the source)")
        return 0

    async def _refused(self, message: str) -> int:
        await asyncio.to_thread(self.worker.report, result={"errorCode": "InvalidVideoSrc", "errorMessage": message},
                                message=message)
        return EXIT_TASK_REFUSED

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()


def _sent(track: str, item: Item, position: bool) -> None:
    metrics.SENT[track].inc()
    metrics.DRIFT[track].set(time.time() - item.due)
    if position:
        metrics.PUSH_POSITION.set(item.position)


async def _until(due: float) -> None:
    wait = due - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
