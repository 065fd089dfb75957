"""What the operator will sign and announce from a worker's outbox (`status.events`).

A worker decodes untrusted media, so it is treated as possibly compromised: it may write any
status it likes (status is one subresource), but the operator signs an event with the tenant's
callback key only when the event is a type the task's kind emits and its payload has exactly the
seed's shape (seed 002 for 301–312, the single-stream function's result body for type 0), with
the task's own identity in it (a result's RecordFile URLs point into the task's own storage and
prefix). Anything else is refused, never signed. Pure: no I/O.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from capstan.api import KindInfo
from capstan.api.common import TaskEvent
from capstan.api.streampush import PushEvent
from capstan.media import naming
from capstan.storage.client import parse_endpoint

RESULT_EVENT = 0
Text = Annotated[str, Field(max_length=4096)]  # room for storage error messages; bounds a status blob
Status012 = Literal[0, 1, 2]
TrackTypeValue = Literal["audio", "video", "audio_video"]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StatusPayload(_Payload):  # 301, 303, 305, 306, 312
    Status: Status012


class RecorderStop(_Payload):  # 302
    LeaveCode: Literal[0, 1, 2, 3, 4, 99, 100, 101]


class FileInfo(_Payload):  # 304
    FileList: Text


class FileSlice(_Payload):  # 307
    FileName: Text
    UserId: Text
    TrackType: TrackTypeValue
    BeginTimeStamp: int


class UploadError(_Payload):  # 308
    Code: Text
    Message: Text


class ImageDownloadError(_Payload):  # 309
    Url: Text


class Mp4Stop(_Payload):  # 310
    Status: Status012
    FileList: list[Text] = Field(max_length=10000)


class TencentVod(_Payload):
    UserId: Text | None = None
    TrackType: TrackTypeValue | None = None
    MediaId: Literal["main", "aux"] | None = None
    FileId: Text | None = None
    VideoUrl: Text | None = None
    CacheFile: Text | None = None


class VodCommit(_Payload):  # 311
    Status: Status012
    Errmsg: Text | None = None
    TencentVod: TencentVod


class ResultFile(_Payload):
    UserId: Text | None
    RecordFile: Text
    Status: Literal[0, 1]
    Message: Text


class RecordingResult(_Payload):  # 0: the single-stream function's result body (seeds 000/001)
    SdkAppId: Text
    RoomId: Text
    StrRoomId: Text
    UserId: Text
    TaskId: Text
    Files: list[ResultFile] = Field(max_length=10000)


class PushStart(_Payload):  # 401
    Mode: Literal["vod", "live"]
    PositionMs: int = Field(ge=0)
    DurationMs: int | None = Field(None, ge=0)


class PushResume(_Payload):  # 402
    PositionMs: int = Field(ge=0)
    From: Literal["status", "redis"]
    Attempt: int = Field(ge=1)


class PushStop(_Payload):  # 403
    Status: Status012
    PositionMs: int = Field(ge=0)
    Reason: Text


class WebVideo(_Payload):
    Filename: Text
    FileSize: int = Field(ge=0)
    FileDuration: int | float = Field(ge=0)
    FileURL: Text


class WebResultBody(_Payload):
    ErrorCode: Text | None = None
    ErrorMessage: Text | None = None
    Videos: list[WebVideo] = Field(default_factory=list, max_length=100)


class WebRecordingResult(_Payload):  # 0: seed 003's Describe body, posted when the recording is done
    TaskID: Text
    Status: Literal["finished", "canceled", "failed"]
    CreateTime: int | None = None
    StartTime: int | None = None
    CancelTime: int | None = None
    StopTime: int | None = None
    FinishTime: int | None = None
    Result: WebResultBody


SHAPES: dict[str, dict[int, type[_Payload]]] = {
    "cloudrecordings": {301: StatusPayload, 302: RecorderStop, 303: StatusPayload, 304: FileInfo,
                        305: StatusPayload, 306: StatusPayload, 307: FileSlice, 308: UploadError,
                        309: ImageDownloadError, 310: Mp4Stop, 311: VodCommit, 312: StatusPayload,
                        RESULT_EVENT: RecordingResult},
    "streampushes": {PushEvent.start: PushStart, PushEvent.resume: PushResume, PushEvent.stop: PushStop},
    "webrecordings": {RESULT_EVENT: WebRecordingResult},
}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "payload"
    return f"{where}: {err['msg']}"


def _result_identity(spec: dict[str, Any], status: dict[str, Any], result: RecordingResult) -> str | None:
    """A result body must speak of this task and only name files under this task's prefix."""
    room = spec.get("room") or {}
    expected = {"SdkAppId": str(room.get("sdkAppId", "")), "RoomId": str(room.get("roomId") or ""),
                "StrRoomId": room.get("strRoomId") or "", "UserId": spec.get("recorderUserId", ""),
                "TaskId": status.get("taskId", "")}
    for field, value in expected.items():
        if getattr(result, field) != value:
            return f"{field} is not this task's"
    prefix = naming.object_key("", prefix=(spec.get("output") or {}).get("prefix"), task_id=status.get("taskId"))
    for f in result.Files:
        key = _record_file_key(spec.get("storage") or {}, f.RecordFile)
        if key is None or not key.startswith(prefix) or ".." in key.split("/"):
            return f"Files: {f.RecordFile!r} is not under the task's prefix {prefix!r}"
    return None


def _web_result_identity(spec: dict[str, Any], status: dict[str, Any], result: WebRecordingResult) -> str | None:
    """A web recording's result speaks of this task, and its file URLs point at its own files: on
    its output.domain, or into its own storage under its targetDir (default: the task id)."""
    if result.TaskID != status.get("taskId", ""):
        return "TaskID is not this task's"
    out = spec.get("output") or {}
    folder = "/".join(p for p in str(out.get("targetDir") or status.get("taskId") or "").split("/") if p and p != ".")
    domain = out.get("domain")
    base = (domain if "://" in domain else f"https://{domain}").rstrip("/") + "/" if domain else None
    for video in result.Result.Videos:
        url = video.FileURL
        if base is not None and url.startswith(base):
            key: str | None = urllib.parse.unquote(urllib.parse.urlsplit(url[len(base):]).path)
        else:
            key = _record_file_key(out.get("storage") or {}, url)
        if key is None or not key.startswith(folder + "/") or ".." in key.split("/"):
            return f"Videos: {url!r} is not one of the task's files"
    return None


def _record_file_key(storage: dict[str, Any], record_file: str) -> str | None:
    """The object key a RecordFile names: a key, or a URL of the task's own storage (under its
    ``publicBaseUrl``, or ``<endpoint>/<bucket>/`` as a presigned URL is); None for any other URL."""
    parts = urllib.parse.urlsplit(record_file)
    if not parts.scheme and not parts.netloc:
        return record_file
    base = storage.get("publicBaseUrl")
    if base and record_file.startswith(base.rstrip("/") + "/"):
        rest = record_file[len(base.rstrip("/")) + 1:]
        return urllib.parse.unquote(urllib.parse.urlsplit(rest).path)
    endpoint, _ = parse_endpoint(str(storage.get("endpoint") or "-"))
    bucket_path = f"/{storage.get('bucket')}/"
    if parts.scheme in ("http", "https") and parts.netloc == endpoint and parts.path.startswith(bucket_path):
        return urllib.parse.unquote(parts.path[len(bucket_path):])
    return None


def refusal(info: KindInfo, spec: dict[str, Any], status: dict[str, Any], event: TaskEvent) -> str | None:
    """Why `event` may not be signed or announced, or None when it is well-formed."""
    shapes = SHAPES.get(info.plural, {})
    shape = shapes.get(event.type)
    if shape is None:
        return f"event type {event.type} is not one a {info.kind} emits"
    try:
        payload = shape.model_validate(event.payload)
    except ValidationError as exc:
        return f"event type {event.type} payload does not have the expected shape ({_first_error(exc)})"
    if isinstance(payload, RecordingResult):
        why = _result_identity(spec, status, payload)
        if why:
            return f"event type {event.type} result body refused: {why}"
    if isinstance(payload, WebRecordingResult):
        why = _web_result_identity(spec, status, payload)
        if why:
            return f"event type {event.type} result body refused: {why}"
    return None
