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
import collections
import contextlib
import logging
import math
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
from capstan.pusher import external
from capstan.pusher import progress as progressing
from capstan.pusher.pacing import AudioSchedule
from capstan.pusher.progress import ProgressRecord, RedisProgress, StartPlan
from capstan.pusher.pump import AHEAD_SECONDS, AUDIO_FRAME, AUDIO_RATE, RUN_GAP_SECONDS, Ended, Item, Reader
from capstan.pusher.source import SourceError, SourceInfo, describe, open_container, probe
from capstan.rooms.base import AudioOutput, Publisher, RoomBackend, VideoOutput
from capstan.worker import metrics
from capstan.worker.base import Worker, now

log = logging.getLogger("capstan.pusher")

PROGRESS_SECONDS = float(os.environ.get("CAPSTAN_PUSH_PROGRESS_SECONDS", "1"))
JOIN_TIMEOUT = 45.0
# Bench and tests: decode and re-encode even where pass-through would do.
FORCE_REENCODE = os.environ.get("CAPSTAN_PUSH_REENCODE") == "1"
# One thread paces pictures and sound where the outputs allow it (see PushSession._push); 0: the loop does.
PACING_THREAD = os.environ.get("CAPSTAN_PUSH_VIDEO_THREAD", "1") != "0"
FEEDBACK_SECONDS = 0.2  # how often the video sender asks the publisher for keyframe requests
LIVE_JITTER_SECONDS = 0.2  # a live source's blocks may come this much late without losing sound


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
        external_plane = self._external()
        if external_plane is not None:
            container.close()
            return await self._end(await self._push_external(plan, reencode=external_plane == "re-encode"))
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

    def _external(self) -> str | None:
        """"pass-through" or "re-encode" where the push goes through FFmpeg and capstan-lkpublish
        (capstan/pusher/external.py): LiveKit pass-through unless CAPSTAN_PUSH_DATAPLANE=python or
        either program is missing; LiveKit re-encode with CAPSTAN_PUSH_REENCODE_DATAPLANE=go too."""
        if not getattr(self.backend, "external_h264_publisher", False) or not self.info.has_video:
            return None
        pass_through = self.info.passes_through(True) and not FORCE_REENCODE
        if not pass_through and external.REENCODE_DATAPLANE != "go":
            return None
        usable, why = external.usable()
        if not usable:
            if external.DATAPLANE == "go":
                log.warning("LiveKit push in this process (the Python SDK): %s", why)
            return None
        return "pass-through" if pass_through else "re-encode"

    async def _push_external(self, plan: StartPlan, *, reencode: bool) -> Outcome:
        loop = asyncio.get_running_loop()

        def note(message: str) -> None:
            loop.create_task(asyncio.to_thread(self.worker.report, message=message))

        def at(position: float) -> None:
            self.position = position
            metrics.PUSH_POSITION.set(position)

        push = external.ExternalPush(self.spec.video_src, self.policy, self.resolve, self.info, live=self.live,
                                     loop=self.spec.loop, start=plan.position,
                                     reconnect_seconds=float(self.spec.live_reconnect_seconds),
                                     on_position=at, on_note=note, reencode=reencode)
        result: str | None = "stopped"
        try:
            await asyncio.wait_for(push.join(self.room_url, self.room_token, self.spec.user_id), JOIN_TIMEOUT)
            stop = asyncio.Event()

            async def stopper() -> None:
                await self._wait_stop()
                stop.set()

            info = self.info
            what = (f"{'re-encoded video (libx264)' if reencode else 'pass-through H.264'} "
                    f"{info.size[0]}x{info.size[1]}" if info.size else "no video") + \
                (", audio" if info.has_audio else ", no audio") + "; FFmpeg + capstan-lkpublish"
            await self._started(plan, what)
            tasks = [asyncio.create_task(self._save_progress_every(PROGRESS_SECONDS)), asyncio.create_task(stopper())]
            try:
                result = await push.run(stop)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await push.close(stopped=result is not None)
            self.keyframe_requests = push.keyframe_requests
        if result == "stopped":
            return Outcome(PushStopStatus.stopped, self.worker.stop_reason or "stopped")
        if result is not None:
            return Outcome(PushStopStatus.failed, f"spec.videoSrc {describe(self.spec.video_src)}: {result}")
        return Outcome(PushStopStatus.ended, "the source ended")

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
        outputs: list[Any] = [o for o in (video, audio) if o is not None]
        scheduled = audio is not None and hasattr(audio, "send") and hasattr(audio, "cushion")
        schedule = (AudioSchedule(AUDIO_RATE, getattr(audio, "lead", 0.0), getattr(audio, "cushion", 0.0))
                    if scheduled else None)
        # Where every output may be written from any (single) thread (LiveKit: capture_frame is a
        # synchronous FFI request), one pacing thread sends both tracks: the reader hands it the
        # items directly and it sleeps to each one's time, so the event loop wakes for none of them,
        # and pictures and sound are timed by the same clock — a stalled loop delays neither.
        # CAPSTAN_PUSH_VIDEO_THREAD=0 paces them on the loop instead.
        direct: queue.SimpleQueue[Item | Ended] | None = (
            queue.SimpleQueue() if PACING_THREAD and outputs and all(getattr(o, "thread_safe", False) for o in outputs)
            and (audio is None or scheduled) else None)
        halted = threading.Event()

        def put(item: Item | Ended) -> None:
            if isinstance(item, Item):
                metrics.RECEIVED[item.kind].inc()
            if direct is not None:
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
                    queues[item.kind].put_nowait(item)
            loop.call_soon_threadsafe(deliver)

        audio_ahead = schedule.lead + schedule.cushion if schedule is not None else 0.0
        audio_frame = getattr(audio, "frame_samples", AUDIO_FRAME)
        # A live source is read as it comes: its runs start late enough for a whole block of sound to
        # be read and written a cushion ahead of its time (else every block would be late).
        run_gap = RUN_GAP_SECONDS + (audio_ahead + audio_frame / AUDIO_RATE + LIVE_JITTER_SECONDS
                                     if self.live and schedule is not None else 0.0)
        reader = Reader(container, info, pass_through=pass_through, live=self.live, loop=self.spec.loop,
                        start=plan.position, reopen=self._open,
                        reconnect_seconds=float(self.spec.live_reconnect_seconds),
                        audio_frame=audio_frame, ahead=AHEAD_SECONDS + audio_ahead, run_gap=run_gap,
                        on_note=lambda m: self.worker.report(message=m))
        thread = threading.Thread(target=reader.run, args=(put,), name="push-reader", daemon=True)
        thread.start()
        senders: list[asyncio.Future[Any]] = []
        pacer: threading.Thread | None = None
        if direct is not None:
            paced: asyncio.Future[None] = loop.create_future()

            def pacing_ended() -> None:
                if not paced.done():
                    paced.set_result(None)

            def pace() -> None:
                try:
                    self._pace(direct, video, audio, schedule, pass_through, halted)
                finally:
                    loop.call_soon_threadsafe(pacing_ended)
            pacer = threading.Thread(target=pace, name="push-pacer", daemon=True)
            pacer.start()
            senders.append(paced)
        else:
            if video is not None:
                senders.append(asyncio.create_task(self._send_video(queues["video"], video, pass_through)))
            if audio is not None:
                senders.append(asyncio.create_task(self._send_audio(queues["audio"], audio, schedule,
                                                                    video is None)))
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
            if pacer is not None:
                await asyncio.to_thread(pacer.join, 5)
        if schedule is not None and (schedule.skipped or schedule.padded):
            log.info("audio schedule: %.2f s of late sound dropped, %.2f s of silence put before early sound",
                     schedule.skipped / AUDIO_RATE, schedule.padded / AUDIO_RATE)
        if stopper in done:
            return Outcome(PushStopStatus.stopped, self.worker.stop_reason or "stopped")
        end = ended.result() if ended.done() else Ended("the push ended without its source ending")
        if end.error is not None:
            return Outcome(PushStopStatus.failed, f"spec.videoSrc {describe(self.spec.video_src)}: {end.error}")
        return Outcome(PushStopStatus.ended, "the source ended")

    async def _send_video(self, queue: asyncio.Queue[Item | Ended], out: VideoOutput, encoded: bool) -> None:
        next_feedback = 0.0
        while True:
            item = await queue.get()
            if isinstance(item, Ended):
                return
            await _until(item.due)
            next_feedback = self._write_video(out, item, encoded, next_feedback)

    def _write_video(self, out: VideoOutput, item: Item, encoded: bool, next_feedback: float) -> float:
        """One picture to the room; keyframe requests are asked for a few times a second (they are
        answered by the source's next keyframe whenever they came). The next time to ask."""
        if encoded:
            out.write_encoded(item.payload, keyframe=item.keyframe, time=item.due)
            if item.due >= next_feedback:
                next_feedback = item.due + FEEDBACK_SECONDS
                if out.keyframe_requested():
                    self.keyframe_requests += 1
        else:
            out.write(item.payload, item.due)
        self.position = item.position
        _sent("video", item, item.due, position=True)
        return next_feedback

    def _write_audio(self, out: Any, schedule: AudioSchedule, item: Item, tracks_position: bool) -> None:
        at = schedule.write_at(item.due)
        silence, skip = schedule.place(item.due, item.payload.samples, time.time())
        out.send(item.payload, silence, skip)
        if tracks_position:
            self.position = item.position
        _sent("audio", item, at, position=tracks_position)

    def _pace(self, items: queue.SimpleQueue[Item | Ended], video: VideoOutput | None, audio: Any,
              schedule: AudioSchedule | None, encoded: bool, halted: threading.Event) -> None:
        """Both tracks on one thread: sleeps until the next picture's due time or the next block of
        sound's write time, whichever comes first, and takes what the reader handed over meanwhile
        (it reads ahead, so nothing waits on it; the thread wakes once per item sent)."""
        pictures: collections.deque[Item] = collections.deque()
        sounds: collections.deque[Item] = collections.deque()
        ended = False
        next_feedback = 0.0

        def take(got: Item | Ended) -> bool:
            if isinstance(got, Ended):
                return True
            (pictures if got.kind == "video" else sounds).append(got)
            return ended

        while not halted.is_set():
            while True:
                try:
                    ended = take(items.get_nowait())
                except queue.Empty:
                    break
            if not pictures and not sounds:
                if ended:
                    return
                with contextlib.suppress(queue.Empty):
                    ended = take(items.get(timeout=0.2))
                continue
            at_video = pictures[0].due if pictures else math.inf
            at_audio = schedule.write_at(sounds[0].due) if sounds and schedule is not None else math.inf
            wait = min(at_video, at_audio) - time.time()
            if wait > 0:
                halted.wait(min(wait, 0.1))
            elif at_video <= at_audio and video is not None:
                next_feedback = self._write_video(video, pictures.popleft(), encoded, next_feedback)
            elif schedule is not None:
                self._write_audio(audio, schedule, sounds.popleft(), video is None)

    async def _send_audio(self, queue: asyncio.Queue[Item | Ended], out: AudioOutput,
                          schedule: AudioSchedule | None, tracks_position: bool) -> None:
        while True:
            item = await queue.get()
            if isinstance(item, Ended):
                return
            if schedule is not None:
                await _until(schedule.write_at(item.due))
                self._write_audio(out, schedule, item, tracks_position)
                continue
            await _until(item.due - out.latency)  # the backend's queue delays it: written that much ahead
            await out.write(item.payload)
            if tracks_position:
                self.position = item.position
            _sent("audio", item, item.due - out.latency, position=tracks_position)

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


def _sent(track: str, item: Item, planned: float, position: bool) -> None:
    """`planned`: when the item was to be handed to the room (audio is written ahead of its due time)."""
    metrics.SENT[track].inc()
    metrics.DRIFT[track].set(time.time() - planned)
    if position:
        metrics.PUSH_POSITION.set(item.position)


async def _until(due: float) -> None:
    wait = due - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
