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
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capstan.api.cloudrecording import CloudRecordingSpec, StreamType
from capstan.media import naming
from capstan.media.pipeline.encoding import AudioEncoding, VideoEncoding
from capstan.media.pipeline.sources import RoomTrackSource
from capstan.recorder import finalize as finalizing
from capstan.recorder.hls import FirstSegment, HlsOutput, HlsTrackWriter, StreamNames
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
from capstan.storage.uploader import Uploader
from capstan.worker.base import Worker, now

log = logging.getLogger("capstan.recorder")

# TRTC event types (seed 002)
RECORDER_START, RECORDER_STOP, UPLOAD_START, FILE_INFO, UPLOAD_STOP = 301, 302, 303, 304, 305
FAILOVER, FILE_SLICE, UPLOAD_ERROR, MP4_STOP, RESULT = 306, 307, 308, 310, 0
MAX_STREAMS = 25
FINAL_UPLOAD_TIMEOUT = 3600.0  # keep the Pod (and its spool) alive this long for a storage outage


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
    playlists: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> file record
    file_info_sent: bool = False
    last_anchor_seen: float = field(default_factory=time.monotonic)


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

    # --- events to the outbox -------------------------------------------------------------

    def emit(self, event_type: int, payload: dict[str, Any]) -> None:
        self.worker.emit(event_type, payload)

    def _on_first_segment(self, first: FirstSegment) -> None:
        """Writer thread: a stream's first segment and playlist are on their way (307, first 304)."""
        record = {"fileName": first.playlist_key, "userId": first.user_id, "trackType": first.track_type,
                  "mediaId": None, "beginTimeStamp": first.begin_timestamp_ms, "status": "uploaded"}
        self.state.playlists[first.playlist_key] = record
        self.emit(FILE_SLICE, {"FileName": first.playlist_name, "UserId": first.user_id,
                               "TrackType": first.track_type, "BeginTimeStamp": first.begin_timestamp_ms})
        if not self.state.file_info_sent:
            self.state.file_info_sent = True
            self.emit(FILE_INFO, {"FileList": first.playlist_name})
        self.worker.report(files=self._files())

    def on_upload_error(self, code: str, message: str) -> None:
        self.emit(UPLOAD_ERROR, {"Code": code, "Message": message})

    def _files(self, extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        return sorted(self.state.playlists.values(), key=lambda f: f["fileName"]) + (extra or [])

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
        """Record exactly the published tracks the spec wants (also after a live spec change)."""
        want = {t.track_id: t for t in self.state.published.values() if wanted(self.spec, t)}
        for rec in list(self.state.recordings.values()):
            running = rec.task is not None and not rec.task.done()
            if running and rec.track.track_id not in want:
                assert rec.task is not None
                rec.task.cancel()
        for track in want.values():
            existing = self.state.recordings.get(stream_key(track))
            if existing is not None and existing.task is not None and not existing.task.done() \
                    and existing.track == track:
                continue
            if existing is None:
                if len(self.state.recordings) >= MAX_STREAMS * 2:
                    log.warning("not recording %s: limit of %s streams reached", track, MAX_STREAMS)
                    continue
                existing = self._new_recording(track)
                self.state.recordings[stream_key(track)] = existing
            existing.track = track
            existing.task = asyncio.ensure_future(self._record(existing))
        recording = any(r.task is not None and not r.task.done() for r in self.state.recordings.values())
        anchors = sorted({t.user_id for t in want.values()})
        self.worker.report(phase="recording" if recording else "idle", anchors=anchors,
                           message=f"attempt {self.ctx.attempt}: recording {len(want)} tracks of "
                                   f"{len(anchors)} anchors")

    def _new_recording(self, track: RemoteTrack) -> TrackRecording:
        names = StreamNames.single(self.spec.room.sdk_app_id, self.room_id, track.user_id, track.media_id.value,
                                   track.kind.value, ha=self.ctx.attempt - 1)
        encoding = (VideoEncoding.from_spec(self.spec.video) if track.kind is TrackKind.VIDEO
                    else AudioEncoding.from_spec(self.spec.audio))
        output = HlsOutput(self.work / "segments" / f"{track.user_id}-{track.media_id.value}-{track.kind.value}",
                           self.uploader, segment_seconds=self.spec.output.segment_seconds,
                           key_prefix=self.spec.output.prefix, task_id=self.ctx.task_id)
        writer = HlsTrackWriter(names, output, encoding, on_first_segment=self._on_first_segment)
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

    def finish(self, reason: LeaveReason) -> int:
        """Leave event, MP4/MP3, the final upload and the result body. Returns the exit code."""
        self.emit(RECORDER_STOP, {"LeaveCode": LEAVE_CODES[reason]})
        self.worker.report(stopTime=now(), anchors=[])
        formats = {str(f) for f in self.spec.output.formats}
        made: list[dict[str, Any]] = []
        mp4_status = 0
        if formats & {"mp4", "mp3"}:
            self.worker.report(phase="transcode", message="making MP4/MP3 from the stored segments")
            if not self.uploader.flush(timeout=FINAL_UPLOAD_TIMEOUT):
                mp4_status = 2
            try:
                made = [r.to_dict() | {"fileName": r.key, "status": "uploaded"} for r in self._transcode(formats)]
            except Exception as exc:  # noqa: BLE001 - HLS is kept; say what failed
                log.exception("transcode failed")
                mp4_status = 2
                self.worker.report(result={"errorCode": "TranscodeFailed", "errorMessage": str(exc)[:500]})
        self.worker.report(phase="upload", message="uploading the last files")
        stored = self.uploader.flush(timeout=FINAL_UPLOAD_TIMEOUT)
        if formats & {"mp4", "mp3"}:
            self.emit(MP4_STOP, {"Status": mp4_status if stored else 1,
                                 "FileList": [Path(f["fileName"]).name for f in made]})
        self.emit(UPLOAD_STOP, {"Status": 0 if stored else 1})
        files = self._files(made)
        self.worker.report(files=files, message=f"stopped ({reason.value}); {len(files)} files")
        self.emit(RESULT, self._result_body(files, stored))
        return 0 if stored else 1

    def _transcode(self, formats: set[str]) -> list[finalizing.FileRecord]:
        """Download every segment of this task (all attempts) and make the MP4s/MP3s from them."""
        source = self.work / "stored"
        prefix = naming.object_key("", prefix=self.spec.output.prefix, task_id=self.ctx.task_id)
        paths = []
        for obj in self.s3.list_objects(self.bucket, prefix=prefix, recursive=True):
            if obj.object_name.endswith(".ts") and naming.USER_START in obj.object_name:
                local = source / Path(obj.object_name).name
                local.parent.mkdir(parents=True, exist_ok=True)
                self.s3.fget_object(self.bucket, obj.object_name, str(local))
                paths.append(local)
        return finalizing.finalize(
            paths, self.work / "final", uploader=self.uploader, key_prefix=self.spec.output.prefix,
            task_id=self.ctx.task_id, mp4="mp4" in formats, mp3="mp3" in formats,
            mp4_max_bytes=self.spec.output.mp4_max_bytes, mp4_max_seconds=self.spec.output.mp4_max_seconds)

    def _result_body(self, files: list[dict[str, Any]], stored: bool) -> dict[str, Any]:
        """The single-stream function's result (seed 000/001): one entry per file with Status/Message."""
        room = self.spec.room
        return {
            "SdkAppId": str(room.sdk_app_id), "RoomId": str(room.room_id or ""), "StrRoomId": room.str_room_id or "",
            "UserId": self.spec.recorder_user_id, "TaskId": self.ctx.task_id,
            "Files": [{"UserId": f.get("userId"), "RecordFile": f["fileName"], "Status": 1 if stored else 0,
                       "Message": "success" if stored else "write to storage failed"} for f in files],
        }
