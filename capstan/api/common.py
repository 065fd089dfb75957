"""Types shared by every Capstan kind: room, storage, callback, secret refs and status.

These pydantic models are the single source of truth for the CRD schemas (see crdgen.py):
field descriptions become `kubectl explain` text, and `cel()` rules become
`x-kubernetes-validations` that the API server itself enforces.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GROUP = "capstan.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# TRTC/S3-compatible identifiers: what a user id or string room id may contain.
USER_ID_PATTERN = r"^[A-Za-z0-9_\-@.]{1,64}$"
STR_ROOM_ID_PATTERN = r"^[A-Za-z0-9 !#$%&()+\-:;<=.>?@\[\]^_{}|~,]{1,64}$"
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# A task id chosen before the resource exists (the TRTC gateway answers CreateCloudRecording with it):
# the operator adopts this annotation's value as status.taskId when it is a well-formed id.
TASK_ID_ANNOTATION = "capstan.dev/task-id"
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{7,63}$"


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One CEL validation rule, in the shape `x-kubernetes-validations` wants."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """json_schema_extra carrying CEL rules for a model or a field."""
    return {"x-kubernetes-validations": list(rules)}


IMMUTABLE = validations(cel("self == oldSelf", "is immutable once the task is created"))
STOP_IS_FINAL = cel("!has(oldSelf.stop) || !oldSelf.stop || self.stop", "stop cannot be undone once set",
                    field_path=".stop")


class CamelModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True)


class SecretRef(CamelModel):
    """A Secret in the resource's namespace. Credentials are only ever given this way."""

    name: str = Field(description="Name of the Secret in the same namespace.", pattern=K8S_NAME_PATTERN,
                      max_length=253)


class SecretKeyRef(SecretRef):
    """One key of a Secret in the resource's namespace."""

    key: str = Field(description="Key inside the Secret.", min_length=1, max_length=253)


class RoomBackend(StrEnum):
    livekit = "livekit"
    janus = "janus"


class RoomSpec(CamelModel):
    """The real-time room: TRTC's SdkAppId + RoomId/StrRoomId, mapped onto a LiveKit room."""

    backend: RoomBackend | None = Field(
        None, description="Room server kind: `livekit` or `janus` (Janus VideoRoom). Defaults to the operator's "
                          "default room backend (chart value defaults.room.backend, `livekit` unless set) when "
                          "omitted.")
    url: str | None = Field(
        None, pattern=r"^(wss?|https?)://\S+$", max_length=2048,
        description="Room server URL the worker connects to, e.g. ws://livekit.example:7880. Defaults to the "
                    "operator's default room URL (chart value defaults.room.url) when omitted; then backend, if "
                    "given, must be the default's. Without a default the task fails (InvalidParameter).")
    sdk_app_id: int = Field(alias="sdkAppId", ge=1, le=4294967295,
                            description="Application id (TRTC SdkAppId); the first part of every file name "
                                        "and the SdkAppId header of callbacks.")
    room_id: int | None = Field(None, alias="roomId", ge=1, le=4294967295,
                                description="Integer room id. Either roomId or strRoomId must be set; "
                                            "if both are, roomId is used (as in TRTC).")
    str_room_id: str | None = Field(None, alias="strRoomId", pattern=STR_ROOM_ID_PATTERN, max_length=64,
                                    description="String room id (TRTC StrRoomId); Base64-encoded in file names.")
    credentials_secret_ref: SecretRef | None = Field(
        None, alias="credentialsSecretRef",
        description="Secret with the room server's credentials. livekit: keys `apiKey` and `apiSecret`, from "
                    "which the operator mints the worker's access token; janus: optional key `roomPin`. Defaults "
                    "to the operator's default room Secret (chart value defaults.room.credentialsSecret: a Secret "
                    "of that name in this task's namespace, labelled capstan.dev/use) when omitted, if the task "
                    "uses the default room URL; otherwise required.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("has(self.roomId) || has(self.strRoomId)", "room.roomId or room.strRoomId must be set",
            reason="FieldValueRequired"),
    ))

    @property
    def name(self) -> str:
        """The LiveKit room name: RoomId wins over StrRoomId, as in TRTC."""
        return str(self.room_id) if self.room_id is not None else str(self.str_room_id)


class StorageSpec(CamelModel):
    """S3-compatible storage that receives the files (TRTC CloudStorage / CosConfig)."""

    endpoint: str = Field(description="S3 endpoint as host:port (or a URL); e.g. minio.storage:9000.",
                          min_length=1, max_length=2048)
    bucket: str = Field(description="Bucket name (3–63 lowercase letters, digits, dots, hyphens).",
                        pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
    region: str = Field("us-east-1", description="Bucket region.", max_length=64)
    secure: bool = Field(True, description="Use TLS (https) to reach the endpoint.")
    credentials_secret_ref: SecretRef = Field(
        alias="credentialsSecretRef",
        description="Secret with keys `accessKey` and `secretKey` for the bucket.")
    public_base_url: str | None = Field(
        None, alias="publicBaseUrl", pattern=r"^https?://\S+$", max_length=2048,
        description="Base URL where the bucket's objects are public (a CDN, a public bucket): result and "
                    "status URLs are <publicBaseUrl>/<object key>. Unset: presigned GET URLs valid 7 days.")


STORAGE_DEFAULT = ("Defaults to the operator's default storage (chart value defaults.storage; its credentials "
                   "Secret is one of that name in this task's namespace, labelled capstan.dev/use) when omitted. "
                   "Without a default the task fails (InvalidParameter).")


class CallbackSpec(CamelModel):
    """Where task events are POSTed, signed with HMAC-SHA256 (header `Sign`)."""

    url: str = Field(description="HTTP(S) URL that receives the events.", pattern=r"^https?://\S+$",
                     max_length=2048)
    signing_key_secret_ref: SecretKeyRef | None = Field(
        None, alias="signingKeySecretRef",
        description="Secret key holding the callback key; the `Sign` header is "
                    "Base64(HMAC-SHA256(key, body)). Without it callbacks are sent unsigned.")


class Phase(StrEnum):
    """The seeds' task states, in the order a task passes them."""

    normal = "normal"
    idle = "idle"
    recording = "recording"
    pushing = "pushing"
    paused = "paused"
    transcode = "transcode"
    upload = "upload"
    callback = "callback"
    finished = "finished"
    canceled = "canceled"
    failed = "failed"


class Condition(CamelModel):
    """A Kubernetes-style condition (Queued, Admitted, WorkerReady, Stopped, Failed…)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: str = Field(description="Condition type.")
    status: str = Field(description="True, False or Unknown.")
    reason: str | None = Field(None, description="One-word CamelCase reason.")
    message: str | None = Field(None, description="Human-readable detail.")
    last_transition_time: str | None = Field(None, alias="lastTransitionTime",
                                             description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, alias="observedGeneration",
                                            description="The spec generation this condition describes.")


class FileRecord(CamelModel):
    """One output file (TRTC StorageFile)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    file_name: str = Field(alias="fileName", description="Object key of the file in the bucket.")
    user_id: str | None = Field(None, alias="userId", description="Anchor whose stream the file holds.")
    track_type: str | None = Field(None, alias="trackType", description="audio, video or audio_video.")
    media_id: str | None = Field(None, alias="mediaId", description="main (camera) or aux (screen share).")
    url: str | None = Field(None, description="URL of the object.")
    size: int | None = Field(None, description="Size in bytes, once known.")
    duration: float | None = Field(None, description="Duration in seconds, once known.")
    begin_time_stamp: int | None = Field(None, alias="beginTimeStamp",
                                         description="Unix ms when recording of this stream began.")
    status: str | None = Field(None, description="uploaded, pending or failed.")


class TaskResult(CamelModel):
    """Outcome of a finished task; errorCode/errorMessage only when something went wrong."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    error_code: str | None = Field(None, alias="errorCode", description="Error code.")
    error_message: str | None = Field(None, alias="errorMessage", description="Error message.")


# Delivered events kept in status.events (the rest are pruned; status.callbacks keeps the counts), so
# a long recording's status stays far below etcd's 1.5 MiB object limit.
KEEP_DELIVERED_EVENTS = 20


def prune_events(events: list[dict[str, Any]], delivered_seq: int,
                 keep: int = KEEP_DELIVERED_EVENTS) -> list[dict[str, Any]]:
    """The outbox without the delivered events but the last `keep` (the highest seq always stays, so
    the sequence continues); every event still to deliver is kept."""
    done = [e for e in events if int(e.get("seq", 0)) <= delivered_seq]
    return done[-max(keep, 1):] + [e for e in events if int(e.get("seq", 0)) > delivered_seq]


class TaskEvent(CamelModel):
    """One event of the task's outbox (TRTC callback events 301–312 and the kinds' result bodies).

    The worker appends events here (its status is the only place it may write); the operator
    delivers them in order, at least once, and records how far it got in `callbacks`. Keeping the
    outbox in the resource makes delivery survive worker and operator restarts.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    seq: int = Field(ge=1, description="1-based position in the outbox; delivery follows it.")
    type: int = Field(description="Event type, e.g. 301 recorder start … 312; 0 for a result body.")
    ts: int = Field(description="Unix ms when the event happened.")
    payload: dict[str, Any] = Field(default_factory=dict, description="Event payload as the seed shows it.",
                                    json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class CallbackStatus(CamelModel):
    """Delivery state of the callbacks of this task."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    delivered_seq: int = Field(0, alias="deliveredSeq",
                               description="Events up to this seq are done (delivered or given up).")
    delivered: int = Field(0, description="Events delivered (HTTP 200).")
    failed: int = Field(0, description="Events given up after all tries.")
    attempts: int = Field(0, description="Tries of the event now being delivered.")
    first_attempt_at: str | None = Field(None, alias="firstAttemptAt",
                                         description="When the event now being delivered was first tried.")
    next_attempt_at: str | None = Field(None, alias="nextAttemptAt", description="When the next try is due.")
    last_error: str | None = Field(None, alias="lastError", description="Last delivery error.")
    failing_since: str | None = Field(None, alias="failingSince",
                                      description="Since when no try has been delivered: one give-up deadline "
                                                  "per task, so N events to a dead receiver wait once, not N times.")


class TaskStatus(CamelModel):
    """Observed state of a task, written only by the operator and the task's own worker."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    phase: Phase | None = Field(None, description="Where the task is: normal (queued or starting), idle, "
                                                  "recording/pushing, paused, transcode, upload, callback, "
                                                  "finished, canceled or failed.")
    task_id: str | None = Field(None, alias="taskId", description="Stable id of the task (TRTC TaskId).")
    room: str | None = Field(None, description="Room name the task works in (for `kubectl get`).")
    observed_generation: int | None = Field(None, alias="observedGeneration",
                                            description="The spec generation the status reflects.")
    conditions: list[Condition] = Field(default_factory=list, description="Kubernetes-style conditions.")
    attempt: int | None = Field(None, description="Current worker attempt, from 1; attempt n>1 writes ha<n-1>_ files.")
    failovers: int | None = Field(None, description="How many times a failed worker was replaced.")
    worker_pod: str | None = Field(None, alias="workerPod", description="Name of the current worker Pod.")
    create_time: str | None = Field(None, alias="createTime", description="When the task was accepted.")
    start_time: str | None = Field(None, alias="startTime", description="When recording/pushing started.")
    pause_time: str | None = Field(None, alias="pauseTime", description="When the task was last paused.")
    cancel_time: str | None = Field(None, alias="cancelTime", description="When a stop was requested.")
    stop_time: str | None = Field(None, alias="stopTime", description="When the worker stopped.")
    finish_time: str | None = Field(None, alias="finishTime", description="When everything was done.")
    message: str | None = Field(None, description="Latest human-readable progress.")
    files: list[FileRecord] = Field(default_factory=list, description="Files written so far.")
    result: TaskResult | None = Field(None, description="Result (errors) of the task.")
    events: list[TaskEvent] = Field(default_factory=list, description=TaskEvent.__doc__)
    callbacks: CallbackStatus | None = Field(None, description="Callback delivery state.")
