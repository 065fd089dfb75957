"""WebRecording: panoramic web-page recording (seed 003: Start / Pause / Resume / Refresh / Stop / Describe)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from capstan.api.common import (
    IMMUTABLE,
    STOP_IS_FINAL,
    STORAGE_DEFAULT,
    CallbackSpec,
    CamelModel,
    SecretKeyRef,
    StorageSpec,
    TaskStatus,
    cel,
    validations,
)


class Muxer(StrEnum):
    mp4 = "mp4"
    hls = "hls"


class WebOutputSpec(CamelModel):
    """Where and how the page recording is written (seed 003 Output.Cos + Output.Video)."""

    storage: StorageSpec | None = Field(None, description=f"{StorageSpec.__doc__} {STORAGE_DEFAULT}")
    target_dir: str | None = Field(None, alias="targetDir", pattern=r"^[A-Za-z0-9_\-./]{1,512}$",
                                   description="Directory in the bucket; the task id by default.")
    target_name: str | None = Field(None, alias="targetName", pattern=r"^[A-Za-z0-9_\-.]{1,255}$",
                                    description="File name; the stop timestamp by default.")
    domain: str | None = Field(None, description="Playback domain used in file URLs; the endpoint by default.")
    muxer: Muxer = Field(Muxer.mp4, description="mp4 (default) or hls.")
    encrypt_key_secret_ref: SecretKeyRef | None = Field(
        None, alias="encryptKeySecretRef",
        description="HLS AES-128 key (32 hex characters) in a Secret; needs muxer hls and authUrl.")
    auth_url: str | None = Field(None, alias="authUrl", pattern=r"^https?://\S+$",
                                 description="URL players fetch the decryption key from.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("!has(self.encryptKeySecretRef) || self.muxer == 'hls'",
            "output.encryptKeySecretRef needs output.muxer hls", field_path=".encryptKeySecretRef"),
        cel("!has(self.encryptKeySecretRef) || has(self.authUrl)",
            "output.authUrl is required when output.encryptKeySecretRef is set", field_path=".authUrl",
            reason="FieldValueRequired"),
    ))


class WebRecordingSpec(CamelModel):
    """Desired page recording. Pause/resume with `paused`, reload with `refreshGeneration`, end with `stop`."""

    record_url: str = Field(alias="recordUrl", pattern=r"^https?://\S+$", max_length=4096,
                            description="Page to record; it must show everything inside width×height.",
                            json_schema_extra=IMMUTABLE)
    manual_start: bool = Field(False, alias="manualStart",
                               description="Wait for the page to call window.startRecord() before recording.")
    manual_start_timeout: int = Field(60, alias="manualStartTimeout", ge=1, le=3600,
                                      description="With manualStart: seconds after the page loaded within which it "
                                                  "must call window.startRecord(), else the task fails.")
    width: int = Field(1280, ge=2, le=2560, multiple_of=2, description="Recording width in pixels (max 2560).")
    height: int = Field(720, ge=2, le=2560, multiple_of=2, description="Recording height in pixels (max 2560).")
    max_duration_limit: int = Field(21600, alias="maxDurationLimit", ge=1, le=36000,
                                    description="Recording ends after this many seconds (default 6 h, max 10 h).")
    output: WebOutputSpec = Field(default_factory=WebOutputSpec, description=WebOutputSpec.__doc__)
    callback: CallbackSpec | None = Field(None, description=CallbackSpec.__doc__)
    paused: bool = Field(False, description="true pauses; false resumes into the same file (no new file).")
    refresh_generation: int = Field(0, alias="refreshGeneration", ge=0,
                                    description="Increase to reload the page being recorded (Refresh).")
    stop: bool = Field(False, description="Set true to end the recording; the file is finished and uploaded.")

    model_config = ConfigDict(json_schema_extra=validations(
        STOP_IS_FINAL,
        cel("!has(oldSelf.refreshGeneration) || self.refreshGeneration >= oldSelf.refreshGeneration",
            "refreshGeneration can only increase", field_path=".refreshGeneration"),
    ))


class WebRecordingStatus(TaskStatus):
    """Observed state of a WebRecording (seed 003 Describe), with what the URL policy refused."""

    recorded_seconds: float | None = Field(None, alias="recordedSeconds",
                                           description="Time recorded so far, paused time left out.")
    paused_seconds: float | None = Field(None, alias="pausedSeconds", description="Time spent paused so far.")
    refused_requests: int | None = Field(None, alias="refusedRequests",
                                         description="Requests of the page the URL policy refused (not made).")
    last_refused_request: str | None = Field(None, alias="lastRefusedRequest",
                                             description="The latest refused request and why.")
    dropped_frames: int | None = Field(None, alias="droppedFrames",
                                       description="Captured pictures and sound chunks dropped because the "
                                                   "encoder fell more than 2 s behind.")


class WebRecording(CamelModel):
    """A panoramic recording of a web page with headless Chromium."""

    api_version: str = Field("capstan.dev/v1alpha1", alias="apiVersion")
    kind: str = "WebRecording"
    metadata: dict = Field(default_factory=dict)
    spec: WebRecordingSpec
    status: WebRecordingStatus | None = None
