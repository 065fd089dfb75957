"""StreamPush: a media file (vod) or an RTMP live stream put into a room as a user (seed 004)."""

from __future__ import annotations

from enum import IntEnum, StrEnum

from pydantic import ConfigDict, Field

from capstan.api.common import (
    IMMUTABLE,
    STOP_IS_FINAL,
    USER_ID_PATTERN,
    CallbackSpec,
    CamelModel,
    RoomSpec,
    SecretKeyRef,
    TaskStatus,
    cel,
    validations,
)


class PushMode(StrEnum):
    vod = "vod"
    live = "live"


class PushEvent(IntEnum):
    """Callback event types of a push (EventGroupId 3, after the recorder's 301–312; seed 004 names none)."""

    start = 401  # pushing began: {Mode, PositionMs, DurationMs}
    resume = 402  # pushing continues from saved progress: {PositionMs, From: status|redis, Attempt}
    stop = 403  # pushing ended: {Status: 0 source ended | 1 stopped | 2 failed, PositionMs, Reason}


class PushStopStatus(IntEnum):
    ended = 0
    stopped = 1
    failed = 2


class StreamPushSpec(CamelModel):
    """Desired push. `resume` continues a vod file from the last saved position."""

    video_src: str = Field(alias="videoSrc", pattern=r"^(https?|rtmp)://\S+$", max_length=4096,
                           description="Source: an http(s) media file URL (vod) or an rtmp:// live URL (live).",
                           json_schema_extra=IMMUTABLE)
    mode: PushMode = Field(PushMode.vod, description="vod: a recorded file (default); live: an RTMP stream.",
                           json_schema_extra=IMMUTABLE)
    room: RoomSpec = Field(description="The room to push into.", json_schema_extra=IMMUTABLE)
    user_id: str = Field(alias="userId", pattern=USER_ID_PATTERN,
                         description="Identity the stream is published as; unique in the room.")
    user_token_secret_ref: SecretKeyRef | None = Field(
        None, alias="userTokenSecretRef",
        description="A ready access token for userId (TRTC UserSig); by default the operator mints one.")
    resume: bool = Field(False, description="Continue from the last saved position of this videoSrc "
                                            "(status.progress, and Redis when redisSecretRef is given).")
    redis_secret_ref: SecretKeyRef | None = Field(
        None, alias="redisSecretRef",
        description="Secret key holding a redis:// URL; progress is then also kept in Redis (seed's Redis=true).")
    loop: bool = Field(False, description="Start the file again when it ends (vod).")
    live_reconnect_seconds: int = Field(
        30, alias="liveReconnectSeconds", ge=0, le=3600,
        description="How long a dropped live source is reconnected (with backoff) before the push fails.")
    callback: CallbackSpec | None = Field(None, description=CallbackSpec.__doc__)
    stop: bool = Field(False, description="Set true to stop pushing.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("self.mode != 'live' || self.videoSrc.startsWith('rtmp://')",
            "videoSrc must be an rtmp:// URL when mode is live", field_path=".videoSrc"),
        cel("self.mode != 'vod' || !self.videoSrc.startsWith('rtmp://')",
            "videoSrc must be an http(s) file URL when mode is vod", field_path=".videoSrc"),
        cel("self.mode == 'vod' || !self.loop", "loop is only for mode vod", field_path=".loop"),
        STOP_IS_FINAL,
    ))


class PushProgress(CamelModel):
    """Where the push is in its source, saved every second while pushing."""

    position_seconds: float = Field(0, alias="positionSeconds",
                                    description="Position in the source (vod) or seconds pushed (live).")
    duration_seconds: float | None = Field(None, alias="durationSeconds",
                                           description="Duration of the source file, when known.")
    updated_at: str | None = Field(None, alias="updatedAt", description="When the position was saved.")


class StreamPushStatus(TaskStatus):
    """Observed state of a StreamPush."""

    progress: PushProgress | None = Field(None, description=PushProgress.__doc__)


class StreamPush(CamelModel):
    """A file or live stream pushed into a room as a publishing user."""

    api_version: str = Field("capstan.dev/v1alpha1", alias="apiVersion")
    kind: str = "StreamPush"
    metadata: dict = Field(default_factory=dict)
    spec: StreamPushSpec
    status: StreamPushStatus | None = None
