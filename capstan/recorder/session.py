"""Single-stream recording of a room: the recorder's orchestration, independent of the room backend.

It joins the room (hidden, subscribe-only), records every wanted anchor's audio and video as
separate HLS streams named as seed 002 says, uploads segments as they close, follows
`spec.subscribe` changes live, and ends on stop/deletion, removal from the room, room close or
`maxIdleTime` without a publishing anchor. Afterwards it makes MP4/MP3 files from everything the
task stored (all attempts, so a failover's `ha<n>_` files are included), and reports TRTC events
301–310 through the worker's outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capstan.api.cloudrecording import MAX_STREAMS_PER_ROOM, CloudRecordingSpec, StreamType
from capstan.media import naming
from capstan.media.pipeline.encoding import AudioEncoding, VideoEncoding
from capstan.media.pipeline.sources import RoomTrackSource
from capstan.recorder import finalize as finalizing
from capstan.recorder.hls import FirstSegment, HlsOutput, HlsTrackWriter, StreamNames
from capstan.recorder.ledger import Announcement, FileLedger, KeptFile
from capstan.rooms.base import (
    LEAVE_CODES,
    LeaveReason,
    Left,
    RemoteTrack,
    RoomBackend,
    RoomConnection,
    RoomConnectionLost,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
)
from capstan.storage.client import public_base_url
from capstan.storage.uploader import Uploader
from capstan.worker.base import Worker, now

log = logging.getLogger("capstan.recorder")

# TRTC event types (seed 002)
RECORDER_START, RECORDER_STOP, UPLOAD_START, FILE_INFO, UPLOAD_STOP = 301, 302, 303, 304, 305
FAILOVER, FILE_SLICE, UPLOAD_ERROR, MP4_STOP, RESULT = 306, 307, 308, 310, 0
# The last uploads wait for the storage as long as it takes: the Pod (and its spool) stays until they are
# stored. Deleting the task bounds this (the operator's CAPSTAN_DELETE_UPLOAD_BOUND_SECONDS).
FINAL_UPLOAD_TIMEOUT: float | None = None
# A drained attempt (SIGTERM without stop) keeps this much of its grace period for exiting.
DRAIN_MARGIN_SECONDS = 5.0
EXIT_DRAINED = 4  # not a stop: the operator fails over (any non-zero code does; this one says why)
# After the room, the last files get this long before 305 says "ended with files still waiting" (1).
UPLOAD_GRACE_SECONDS = 30.0
STOP_UPLOAD_WAIT_SECONDS = 5.0
PRESIGNED_URL_SECONDS = 7 * 24 * 3600  # the longest an S3 (SigV4) presigned URL may live
STREAM_LIMIT_CONDITION = "StreamLimitReached"
DISK_FULL_CONDITION = "LocalDiskFull"


@dataclass
class TrackRecording:
    track: RemoteTrack
    writer: HlsTrackWriter
    executor: ThreadPoolExecutor
    task: asyncio.Task[None] | None = None


@dataclass
class RecorderState:
    published: dict[str, RemoteTrack] = field(default_factory=dict)  # track_id -> track
    recordings: dict[tuple[str, str, str], TrackRecording] = field(default_factory=dict)
    last_anchor_seen: float = field(default_factory=time.monotonic)
    left_out: tuple[str, ...] = ()  # streams beyond the limit, as "user/main"


def stream_key(track: RemoteTrack) -> tuple[str, str, str]:
    return (track.user_id, track.media_id.value, track.kind.value)


def wanted(spec: CloudRecordingSpec, track: RemoteTrack) -> bool:
    """Whether `spec` asks to record this track (stream type and subscribe lists)."""
    if track.kind is TrackKind.AUDIO:
        return spec.stream_type != StreamType.video and spec.subscribe.wants_audio(track.user_id)
    return spec.stream_type != StreamType.audio and spec.subscribe.wants_video(track.user_id)


class RecordingSession:
    """One attempt of one CloudRecording task."""

    def __init__(self, worker: Worker, spec: CloudRecordingSpec, backend: RoomBackend, uploader: Uploader, *,
                 room_url: str, room_token: str, s3_client: Any, bucket: str) -> None:
        self.worker, self.spec, self.backend, self.uploader = worker, spec, backend, uploader
        self.room_url, self.room_token = room_url, room_token
        self.s3, self.bucket = s3_client, bucket
        self.ctx = worker.ctx
        self.room_id: int | str = spec.room.room_id if spec.room.room_id is not None else str(spec.room.str_room_id)
        self.state = RecorderState()
        self.work = Path(self.ctx.work_dir) / "recording"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.conn: RoomConnection | None = None
        self.spec_changed = asyncio.Event()
        self.formats = {str(f) for f in spec.output.formats}
        self.ledger = FileLedger(keep_hls="hls" in self.formats)
        self.max_streams = int(os.environ.get("CAPSTAN_MAX_STREAMS", MAX_STREAMS_PER_ROOM))
        self.upload_grace = float(os.environ.get("CAPSTAN_UPLOAD_GRACE_SECONDS", UPLOAD_GRACE_SECONDS))
        self._also_on_stored = uploader.on_stored
        uploader.on_stored = self._on_stored
        # Status writes from the room loop go through one thread, in order: an API brownout (a write
        # is retried for up to a minute) must not stall the loop that feeds every track's frames.
        self._status_writes = ThreadPoolExecutor(1, thread_name_prefix="status")
        self._disk_lock = threading.Lock()
        self._disk_full: dict[str, str] = {}  # playlist -> why, while its disk is full
        # An earlier attempt's files stay in status.files and the result (a failover adds, never replaces).
        self.ledger.earlier([KeptFile.from_status(f) for f in worker.status_at_start.get("files") or []
                             if isinstance(f, dict) and f.get("fileName")])

    def report_soon(self, **status: Any) -> None:
        """`worker.report` off the calling thread (the room loop), after the writes queued before."""
        self._status_writes.submit(self.worker.report, **status)

    def _reports_written(self) -> None:
        """Wait for the queued status writes, so the closing ones follow them."""
        self._status_writes.submit(lambda: None).result()

    # --- events to the outbox -------------------------------------------------------------

    def emit(self, event_type: int, payload: dict[str, Any]) -> None:
        self.worker.emit(event_type, payload)

    def _on_first_segment(self, first: FirstSegment) -> None:
        """Writer thread: a stream's first segment and playlist are on their way to storage."""
        media = naming.parse_name(first.playlist_name).media_id
        kept = KeptFile(first.playlist_key, first.user_id, first.track_type, str(media) if media else None,
                        first.begin_timestamp_ms)
        self._announce(self.ledger.playlist(kept))
        self.worker.report(files=self._files())

    def _on_stored(self, key: str, size: int) -> None:
        """Uploader thread: ``key`` is stored (a stat confirmed it)."""
        if self._also_on_stored is not None:
            self._also_on_stored(key, size)
        announced = self.ledger.stored(key, size)
        if announced:
            self._announce(announced)
            self.worker.report(files=self._files())

    def _announce(self, announcements: list[Announcement]) -> None:
        """A playlist is stored: 307 for it, and 304 when it is the task's first (seed 002)."""
        for a in announcements:
            f = a.file
            self.emit(FILE_SLICE, {"FileName": f.name, "UserId": f.user_id or "", "TrackType": f.track_type,
                                   "BeginTimeStamp": f.begin_timestamp_ms})
            if a.first:
                self.emit(FILE_INFO, {"FileList": f.name})

    def on_upload_error(self, code: str, message: str) -> None:
        self.emit(UPLOAD_ERROR, {"Code": code, "Message": message})

    def _files(self) -> list[dict[str, Any]]:
        """status.files: what the user keeps, each marked uploaded only once it is stored."""
        base = public_base_url(self.spec.storage)
        return [f.to_status(self._public_url(base, f.key) if base and f.stored else None) for f in self.ledger.files()]

    @staticmethod
    def _public_url(base: str, key: str) -> str:
        return f"{base.rstrip('/')}/{urllib.parse.quote(key)}"

    def _record_url(self, key: str) -> str:
        """RecordFile of the result body: under the storage's public base URL, else presigned."""
        base = public_base_url(self.spec.storage)
        if base:
            return self._public_url(base, key)
        try:
            return str(self.s3.presigned_get_object(self.bucket, key,
                                                    expires=datetime.timedelta(seconds=PRESIGNED_URL_SECONDS)))
        except Exception as exc:  # noqa: BLE001 - the file is still there; say where
            log.warning("no presigned URL for %s: %s", key, exc)
            return key

    # --- the recording loop -----------------------------------------------------------------

    async def run(self) -> LeaveReason:
        self.loop = asyncio.get_running_loop()
        self.worker.on_spec_change(self._spec_changed_threadsafe)
        if self.ctx.attempt > 1:
            self.emit(FAILOVER, {"Status": 0})
        try:
            self.conn = await asyncio.wait_for(
                self.backend.join(self.room_url, self.spec.room.name, self.spec.recorder_user_id, self.room_token),
                timeout=30)
        except Exception as exc:
            self.emit(RECORDER_START, {"Status": 1})
            raise RuntimeError(f"could not join room {self.spec.room.name!r} at {self.room_url}: {exc}") from exc
        self.emit(RECORDER_START, {"Status": 0})
        self.emit(UPLOAD_START, {"Status": 0})
        self.worker.report(phase="idle", startTime=now(), message=f"attempt {self.ctx.attempt}: joined the room")
        try:
            reason = await self._follow_room()
        except RoomConnectionLost:
            # this attempt is over (the next one takes over): the robot "quit after timeout"
            self.emit(RECORDER_STOP, {"LeaveCode": LEAVE_CODES[LeaveReason.timeout]})
            raise
        finally:
            await self._stop_all()  # also when the room connection is lost: close and store open segments
        if reason in (LeaveReason.normal, LeaveReason.idle):  # otherwise the server has already let us go
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.leave(), timeout=10)
        return reason

    def _spec_changed_threadsafe(self, spec: dict[str, Any]) -> None:
        try:
            self.spec = CloudRecordingSpec.model_validate(spec)
        except Exception as exc:  # noqa: BLE001 - the API server validated it; keep recording
            log.warning("ignoring a spec change that does not parse: %s", exc)
            return
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.spec_changed.set)

    async def _follow_room(self) -> LeaveReason:
        """Room events and spec changes until we leave; a stop request is noticed within a second."""
        assert self.conn is not None
        events = self.conn.events().__aiter__()
        next_event: asyncio.Future[Any] = asyncio.ensure_future(events.__anext__())
        try:
            while not self.worker.stop_event.is_set():
                changed = asyncio.ensure_future(self.spec_changed.wait())
                done, _ = await asyncio.wait({next_event, changed}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                if not changed.done():
                    changed.cancel()
                if changed in done:
                    self.spec_changed.clear()
                    self._apply_subscriptions()
                if next_event in done:
                    try:
                        event = next_event.result()
                    except StopAsyncIteration:
                        return LeaveReason.room_closed
                    if isinstance(event, Left):
                        self.worker.request_stop(f"left the room: {event.reason.value}")
                        return event.reason
                    self._on_room_event(event)
                    next_event = asyncio.ensure_future(events.__anext__())
                if self._idle_too_long():
                    self.worker.request_stop(f"no anchor published for {self.spec.max_idle_time} s (maxIdleTime)")
                    return LeaveReason.idle
            return LeaveReason.normal
        finally:
            if not next_event.done():
                next_event.cancel()

    def _idle_too_long(self) -> bool:
        if self.state.published:
            self.state.last_anchor_seen = time.monotonic()
            return False
        return time.monotonic() - self.state.last_anchor_seen > self.spec.max_idle_time

    def _on_room_event(self, event: TrackPublished | TrackUnpublished) -> None:
        if isinstance(event, TrackPublished):
            self.state.published[event.track.track_id] = event.track
        else:
            self.state.published.pop(event.track.track_id, None)
        self._apply_subscriptions()

    def _apply_subscriptions(self) -> None:
        """Record exactly the published tracks the spec wants (also after a live spec change), at most
        ``max_streams`` streams at a time: an anchor's main or aux stream (its audio and video) counts
        once, a stream that ended frees its place, and one beyond the limit is reported, first come
        first served (seed 002: up to 25 streams in a room)."""
        want = {t.track_id: t for t in self.state.published.values() if wanted(self.spec, t)}
        for rec in list(self.state.recordings.values()):
            # a track the spec no longer wants stops now; an unpublished one ends by itself once the
            # frames already received are written (under load they may lag seconds behind)
            if _running(rec) and rec.track.track_id not in want and rec.track.track_id in self.state.published:
                assert rec.task is not None
                rec.task.cancel()
        places = {_place(r.track) for r in self.state.recordings.values()
                  if _running(r) and r.track.track_id in want}
        left_out: list[str] = []
        for track in want.values():  # in publishing order
            existing = self.state.recordings.get(stream_key(track))
            if existing is not None and _running(existing) and existing.track == track:
                continue
            if _place(track) not in places and len(places) >= self.max_streams:
                left_out.append("/".join(_place(track)))
                continue
            places.add(_place(track))
            if existing is None:
                existing = self._new_recording(track)
                self.state.recordings[stream_key(track)] = existing
            elif _running(existing):
                assert existing.task is not None
                existing.task.cancel()  # the previous publication's last frames: the new one goes on
            existing.track = track
            existing.task = asyncio.ensure_future(self._record(existing))
        self._report_left_out(tuple(sorted(set(left_out))))
        anchors = sorted({user for user, _ in places})
        message = f"attempt {self.ctx.attempt}: recording {len(places)} streams of {len(anchors)} anchors"
        if self.state.left_out:
            message += f"; not recorded (limit of {self.max_streams} streams): {', '.join(self.state.left_out)}"
        self.report_soon(phase="recording" if places else "idle", anchors=anchors, message=message)

    def _report_left_out(self, left_out: tuple[str, ...]) -> None:
        """Streams beyond the limit: a condition on the resource (and the status message), never silence."""
        if left_out == self.state.left_out:
            return
        self.state.left_out = left_out
        if left_out:
            log.warning("not recording %s: %d streams are recorded already (the limit)", left_out, self.max_streams)
            condition = {"type": STREAM_LIMIT_CONDITION, "status": "True", "reason": "TooManyStreams",
                         "message": f"{len(left_out)} streams beyond the limit of {self.max_streams} are not "
                                    f"recorded: {', '.join(left_out)}"[:1000]}
        else:
            condition = {"type": STREAM_LIMIT_CONDITION, "status": "False", "reason": "WithinLimit",
                         "message": f"every wanted stream is recorded (limit {self.max_streams})"}
        self._status_writes.submit(self._set_condition, condition)

    def _on_disk(self, playlist: str, why: str | None) -> None:
        """Writer thread: a stream's disk is full (why) or written again (None): a condition, never silence."""
        with self._disk_lock:
            if why is None:
                self._disk_full.pop(playlist, None)
            else:
                self._disk_full[playlist] = why
            full = sorted(self._disk_full)
        if full:
            condition = {"type": DISK_FULL_CONDITION, "status": "True", "reason": "NoSpaceLeft",
                         "message": f"local disk full: {len(full)} streams drop their frames until space is "
                                    f"free: {', '.join(full)}"[:1000]}
        else:
            condition = {"type": DISK_FULL_CONDITION, "status": "False", "reason": "SpaceAvailable",
                         "message": "every stream writes again"}
        self._status_writes.submit(self._set_condition, condition)

    def _set_condition(self, condition: dict[str, Any]) -> None:
        """Replace our condition type in status.conditions, keeping the operator's."""
        try:
            current = (self.worker.resource.get().get("status") or {}).get("conditions") or []
        except Exception as exc:  # noqa: BLE001 - reported in the message anyway
            log.warning("could not read the conditions: %s", exc)
            return
        condition = {**condition, "lastTransitionTime": now(), "observedGeneration": self.worker.generation}
        self.worker.report(conditions=[c for c in current if c.get("type") != condition["type"]] + [condition])

    def _new_recording(self, track: RemoteTrack) -> TrackRecording:
        names = StreamNames.single(self.spec.room.sdk_app_id, self.room_id, track.user_id, track.media_id.value,
                                   track.kind.value, ha=self.ctx.attempt - 1)
        encoding = (VideoEncoding.from_spec(self.spec.video) if track.kind is TrackKind.VIDEO
                    else AudioEncoding.from_spec(self.spec.audio))
        output = HlsOutput(self.work / "segments" / f"{track.user_id}-{track.media_id.value}-{track.kind.value}",
                           self.uploader, segment_seconds=self.spec.output.segment_seconds,
                           key_prefix=self.spec.output.prefix, task_id=self.ctx.task_id)
        writer = HlsTrackWriter(names, output, encoding, on_first_segment=self._on_first_segment,
                                on_disk=lambda why: self._on_disk(names.playlist, why))
        return TrackRecording(track, writer, ThreadPoolExecutor(1, thread_name_prefix=f"enc-{track.user_id}"))

    async def _record(self, rec: TrackRecording) -> None:
        """Feed one track's frames to its writer (encoding runs off the event loop, in order)."""
        assert self.conn is not None and self.loop is not None
        source = RoomTrackSource(self.conn, rec.track)
        try:
            async for timed in source:
                await self.loop.run_in_executor(rec.executor, rec.writer.write, timed.frame, timed.time)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await source.close()
            raise
        except Exception as exc:  # noqa: BLE001 - one track failing must not end the others
            log.warning("track %s stopped: %s", rec.track, exc)

    async def _stop_all(self) -> None:
        """Stop feeding and close every writer: the open segments and final playlists go to storage."""
        tasks = [r.task for r in self.state.recordings.values() if r.task is not None and not r.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert self.loop is not None
        for rec in self.state.recordings.values():
            await self.loop.run_in_executor(rec.executor, rec.writer.close)
            rec.executor.shutdown(wait=True)

    # --- after the room ---------------------------------------------------------------------

    def drain(self) -> int:
        """SIGTERM without stop (drain, eviction): the segments are closed (run() did that); store what
        the grace period allows -- the rest stays on the task's spool for the next attempt -- and exit
        non-zero so the operator fails over. No 302: the task goes on."""
        grace = float(os.environ.get("CAPSTAN_STOP_GRACE_SECONDS", "30"))
        self._reports_written()
        self._end_earlier_playlists()
        stored = self.uploader.flush(timeout=max(grace - DRAIN_MARGIN_SECONDS, 1.0))
        waiting = len(self.uploader.pending())
        self.worker.report(files=self._files(), message=f"attempt {self.ctx.attempt} shut down (drain): "
                           + ("everything stored" if stored else f"{waiting} files wait on the spool"))
        log.info("drained: %s", "everything stored" if stored else f"{waiting} files left on the spool")
        return EXIT_DRAINED

    def finish_leftovers(self) -> int:
        """An attempt started after the recording had ended (the last attempt died while storing): no
        room, only the spool the dead attempt left, then 305 Status 2 and the result."""
        self.emit(FAILOVER, {"Status": 0})
        self.worker.report(phase="upload", message=f"attempt {self.ctx.attempt}: storing what the last attempt left")
        self._end_earlier_playlists()
        stored = self.uploader.flush(timeout=FINAL_UPLOAD_TIMEOUT)
        if self.formats & {"mp4", "mp3"}:
            stored = self._make_files(segments_stored=stored)
        if not stored:
            self._note_waiting()
        self.emit(UPLOAD_STOP, {"Status": 2 if stored else 1})
        files = self._files()
        self.worker.report(files=files, message=f"stopped; {len(files)} files")
        self.emit(RESULT, self._result_body())
        return 0 if stored else 1

    def _end_earlier_playlists(self) -> None:
        """An attempt that died never wrote #EXT-X-ENDLIST; its playlists get it now (from the spool's
        newest version when one still waits there, else from the bucket)."""
        if self.ctx.attempt < 2:
            return
        waiting = dict(zip(self.uploader.pending(), self.uploader.pending_files(), strict=False))
        for f in self.ledger.files():
            try:
                if not f.key.endswith(".m3u8") or naming.parse_name(f.name).ha == self.ctx.attempt - 1:
                    continue  # this attempt's own playlists end when their writers close
            except ValueError:
                continue
            try:
                text = Path(waiting[f.key]).read_text() if f.key in waiting else \
                    self.s3.get_object(self.bucket, f.key).read().decode()
            except Exception as exc:  # noqa: BLE001 - not there (yet): nothing to end
                log.info("earlier playlist %s not ended: %s", f.key, exc)
                continue
            if "#EXT-X-ENDLIST" not in text:
                self.uploader.put_bytes((text.rstrip("\n") + "\n#EXT-X-ENDLIST\n").encode(), f.key,
                                        "application/vnd.apple.mpegurl")

    def finish(self, reason: LeaveReason) -> int:
        """Leave event, the last uploads, MP4/MP3 and the result body. Returns the exit code.

        305 follows seed 002: 0 when everything is stored; 1 when the task ended with files still
        waiting (after ``upload_grace``), then 2 once those were stored after all.
        """
        self._reports_written()
        # the segments closed when the room was left are usually stored in a moment: their 307s then
        # come before 302, as the writers' order has it; an outage delays 302 by this much at most
        self.uploader.flush(timeout=min(STOP_UPLOAD_WAIT_SECONDS, self.upload_grace))
        self.emit(RECORDER_STOP, {"LeaveCode": LEAVE_CODES[reason]})
        self.worker.report(stopTime=now(), anchors=[], phase="upload", message="storing the last segments")
        self._end_earlier_playlists()
        stored = self.uploader.flush(timeout=self.upload_grace)
        late = not stored
        if late:
            self._note_waiting()
            self.emit(UPLOAD_STOP, {"Status": 1})
            self.worker.report(files=self._files(), message="storage unreachable: the files wait on local disk")
            stored = self.uploader.flush(timeout=FINAL_UPLOAD_TIMEOUT)
        if self.formats & {"mp4", "mp3"}:
            stored = self._make_files(segments_stored=stored)
        if not stored:
            self._note_waiting()
        if late:
            if stored:
                self.emit(UPLOAD_STOP, {"Status": 2})
        else:
            self.emit(UPLOAD_STOP, {"Status": 0 if stored else 1})
        files = self._files()
        self.worker.report(files=files, message=f"stopped ({reason.value}); {len(files)} files")
        self.emit(RESULT, self._result_body())
        return 0 if stored else 1

    def _make_files(self, *, segments_stored: bool) -> bool:
        """MP4/MP3 from every stored segment, then 310; without HLS in the formats the segments and
        playlists are removed once the MP4s/MP3s are stored. Returns whether everything is stored."""
        self.worker.report(phase="transcode", message="making MP4/MP3 from the stored segments")
        status, made = 0, []
        if segments_stored:
            try:
                made = self._transcode()
            except Exception as exc:  # noqa: BLE001 - the segments are kept; say what failed
                log.exception("transcode failed")
                status = 2
                self.worker.report(result={"errorCode": "TranscodeFailed", "errorMessage": str(exc)[:500]})
            if any(f.error for f in self.ledger.files()):
                status = 2
        else:
            status = 2  # the segments never reached the storage the MP4s are made from
        self.worker.report(phase="upload", message="uploading the MP4/MP3 files")
        stored = self.uploader.flush(timeout=FINAL_UPLOAD_TIMEOUT)
        if status == 0 and not stored:
            status = 1
        self.emit(MP4_STOP, {"Status": status, "FileList": [r.file_name for r in made]})
        if status == 0 and "hls" not in self.formats:
            self._remove_hls()
        return stored

    def _note_waiting(self) -> None:
        code, message = self.uploader.stats.last_error or ("Unknown", "not stored yet")
        self.ledger.waiting(self.uploader.pending(), f"write to storage failed: {code}: {message}"[:500])

    def _task_objects(self) -> list[str]:
        """Object keys of this task's single-stream segments and playlists (all attempts)."""
        prefix = naming.object_key("", prefix=self.spec.output.prefix, task_id=self.ctx.task_id)
        return [o.object_name for o in self.s3.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name.endswith((".ts", ".m3u8")) and naming.USER_START in o.object_name]

    def _transcode(self) -> list[finalizing.FileRecord]:
        """Download every segment of this task (all attempts) and make the MP4s/MP3s from them."""
        source = self.work / "stored"
        paths = []
        for key in self._task_objects():
            if key.endswith(".ts"):
                local = source / Path(key).name
                local.parent.mkdir(parents=True, exist_ok=True)
                self.s3.fget_object(self.bucket, key, str(local))
                paths.append(local)
        return finalizing.finalize(
            paths, self.work / "final", uploader=self.uploader, key_prefix=self.spec.output.prefix,
            task_id=self.ctx.task_id, mp4="mp4" in self.formats, mp3="mp3" in self.formats,
            mp4_max_bytes=self.spec.output.mp4_max_bytes, mp4_max_seconds=self.spec.output.mp4_max_seconds,
            on_made=lambda r: self.ledger.add(KeptFile(r.key, r.user_id, r.track_type, r.media_id,
                                                       r.begin_timestamp_ms, r.size, r.duration)),
            on_failed=lambda key, why: self.ledger.add(KeptFile(
                key, naming.parse_name(key).user_id, "audio" if key.endswith(".mp3") else "audio_video", None, 0,
                error=f"transcoding failed: {why}"[:500])))

    def _remove_hls(self) -> None:
        """``output.formats`` without hls: the segments served as the durable intermediate only."""
        from minio.deleteobjects import DeleteObject

        keys = self._task_objects()
        try:
            errors = list(self.s3.remove_objects(self.bucket, [DeleteObject(k) for k in keys]))
        except Exception as exc:  # noqa: BLE001 - the MP4s are stored; stray segments are not fatal
            log.warning("could not remove the HLS objects: %s", exc)
            return
        for error in errors:
            log.warning("could not remove %s: %s", getattr(error, "name", "?"), error)
        log.info("removed %d HLS objects (output.formats has no hls)", len(keys) - len(errors))

    def _result_body(self) -> dict[str, Any]:
        """The single-stream function's result (seed 000/001): per file a URL, Status (1 stored, 0 not)
        and Message (why not)."""
        room = self.spec.room
        return {
            "SdkAppId": str(room.sdk_app_id), "RoomId": str(room.room_id or ""), "StrRoomId": room.str_room_id or "",
            "UserId": self.spec.recorder_user_id, "TaskId": self.ctx.task_id,
            "Files": [{"UserId": f.user_id or "", "RecordFile": self._record_url(f.key), "Status": 1 if f.stored else 0,
                       "Message": f.result_message()} for f in self.ledger.files()],
        }


def _running(rec: TrackRecording) -> bool:
    return rec.task is not None and not rec.task.done()


def _place(track: RemoteTrack) -> tuple[str, str]:
    """What counts against the stream limit: an anchor's main or aux stream."""
    return (track.user_id, str(track.media_id))
