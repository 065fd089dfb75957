"""The Capstan API: pydantic models of every kind, the single source of truth for the CRDs."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from capstan.api.cloudrecording import CloudRecordingSpec, CloudRecordingStatus
from capstan.api.common import API_VERSION, GROUP, VERSION
from capstan.api.streampush import StreamPushSpec, StreamPushStatus
from capstan.api.webrecording import WebRecordingSpec, WebRecordingStatus


@dataclass(frozen=True)
class KindInfo:
    """Everything the CRD generator and the operator need to know about one kind."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    worker: str  # the worker entrypoint (capstan.worker.<worker>)
    mode_path: str  # JSONPath of the column `kubectl get` shows as MODE
    extra_columns: tuple[dict, ...] = field(default=())
    room_identity_field: str = "recorderUserId"  # the spec field naming the worker's identity in the room

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


CLOUD_RECORDING = KindInfo(
    kind="CloudRecording", plural="cloudrecordings", short_names=("crec",),
    spec_model=CloudRecordingSpec, status_model=CloudRecordingStatus,
    description="A recording of a real-time room (single-stream or mixed) to S3-compatible storage, "
                "as TRTC on-cloud recording does.",
    worker="recorder", mode_path=".spec.recordMode",
)
WEB_RECORDING = KindInfo(
    kind="WebRecording", plural="webrecordings", short_names=("wrec",),
    spec_model=WebRecordingSpec, status_model=WebRecordingStatus,
    description="A panoramic recording of a web page rendered by headless Chromium.",
    worker="panorama", mode_path=".spec.output.muxer",
)
STREAM_PUSH = KindInfo(
    kind="StreamPush", plural="streampushes", short_names=("spush",),
    spec_model=StreamPushSpec, status_model=StreamPushStatus,
    description="A media file (vod) or RTMP live stream published into a room as a user.",
    worker="pusher", mode_path=".spec.mode", room_identity_field="userId",
)
KINDS: tuple[KindInfo, ...] = (CLOUD_RECORDING, WEB_RECORDING, STREAM_PUSH)
KINDS_BY_PLURAL = {k.plural: k for k in KINDS}

__all__ = ["API_VERSION", "GROUP", "VERSION", "KINDS", "KINDS_BY_PLURAL", "KindInfo",
           "CLOUD_RECORDING", "WEB_RECORDING", "STREAM_PUSH"]
