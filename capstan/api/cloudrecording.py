"""CloudRecording: TRTC on-cloud recording (CreateCloudRecording / Modify / Describe / Delete)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from capstan.api.common import (
    IMMUTABLE,
    STOP_IS_FINAL,
    STORAGE_DEFAULT,
    USER_ID_PATTERN,
    CallbackSpec,
    CamelModel,
    RoomSpec,
    SecretKeyRef,
    StorageSpec,
    TaskStatus,
    cel,
    validations,
)

MAX_STREAMS_PER_ROOM = 25
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN, max_length=64)]


class RecordMode(StrEnum):
    single = "single"
    mix = "mix"


class StreamType(StrEnum):
    audio_video = "audioVideo"
    audio = "audio"
    video = "video"


class SubscribeSpec(CamelModel):
    """Whose streams are recorded (TRTC SubscribeStreamUserIds). Editable while recording.

    Empty allow lists mean everyone; deny lists are applied after allow lists.
    """

    audio_allow: list[UserId] = Field(default_factory=list, alias="audioAllow", max_length=MAX_STREAMS_PER_ROOM,
                                   description="Record only these users' audio (empty: all).")
    audio_deny: list[UserId] = Field(default_factory=list, alias="audioDeny", max_length=MAX_STREAMS_PER_ROOM,
                                  description="Never record these users' audio.")
    video_allow: list[UserId] = Field(default_factory=list, alias="videoAllow", max_length=MAX_STREAMS_PER_ROOM,
                                   description="Record only these users' video (empty: all).")
    video_deny: list[UserId] = Field(default_factory=list, alias="videoDeny", max_length=MAX_STREAMS_PER_ROOM,
                                  description="Never record these users' video.")

    def wants_audio(self, user_id: str) -> bool:
        return (not self.audio_allow or user_id in self.audio_allow) and user_id not in self.audio_deny

    def wants_video(self, user_id: str) -> bool:
        return (not self.video_allow or user_id in self.video_allow) and user_id not in self.video_deny


class VideoSpec(CamelModel):
    """Encoding of recorded video (TRTC VideoParams); unset size/fps: each anchor's own, never squeezed."""

    width: int | None = Field(None, ge=16, le=1920, multiple_of=2,
                              description="Width in pixels (even); unset: each anchor's own. Set with height.")
    height: int | None = Field(None, ge=16, le=1920, multiple_of=2,
                               description="Height in pixels (even); unset: each anchor's own. Set with width.")
    fps: int | None = Field(None, ge=1, le=60, description="Frames per second at most; unset: each anchor's own.")
    bitrate: int = Field(550000, ge=64000, le=8192000, description="Bit rate in bit/s.")
    gop: int = Field(10, ge=1, le=10, description="Keyframe interval in seconds.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("has(self.width) == has(self.height)", "video.width and video.height are given together",
            field_path=".width"),
    ))


class AudioSpec(CamelModel):
    """Encoding of recorded audio (TRTC AudioParams)."""

    sample_rate: int = Field(48000, alias="sampleRate", description="Sample rate in Hz.",
                             json_schema_extra={"enum": [16000, 32000, 44100, 48000]})
    channels: int = Field(1, ge=1, le=2, description="1 (mono) or 2 (stereo).")
    bitrate: int = Field(64000, ge=32000, le=128000, description="Bit rate in bit/s.")


class LayoutMode(StrEnum):
    grid = "grid"
    floating = "floating"
    screen_share = "screenShare"
    custom = "custom"


class RenderMode(StrEnum):
    crop = "crop"
    fit = "fit"
    stretch = "stretch"


class MixRegion(CamelModel):
    """One custom-layout window (TRTC MixLayoutList item), in canvas pixels."""

    user_id: str = Field(alias="userId", pattern=USER_ID_PATTERN, description="Anchor shown in this window.")
    media_id: str = Field("main", alias="mediaId", description="main (camera) or aux (screen share).",
                          json_schema_extra={"enum": ["main", "aux"]})
    top: int = Field(ge=0, le=1920, description="Offset from the canvas top, pixels.")
    left: int = Field(ge=0, le=1920, description="Offset from the canvas left, pixels.")
    width: int = Field(ge=2, le=1920, description="Window width, pixels.")
    height: int = Field(ge=2, le=1920, description="Window height, pixels.")
    z_order: int = Field(1, alias="zOrder", ge=1, le=25, description="Stacking order; higher is on top.")
    render_mode: RenderMode = Field(RenderMode.crop, alias="renderMode",
                                    description="crop: fill and cut; fit: letterbox; stretch: distort.")


class MixLayoutSpec(CamelModel):
    """How mixed-stream recording places the anchors (seed 002 layouts). Editable while recording."""

    mode: LayoutMode = Field(LayoutMode.grid, description="grid (default), floating, screenShare or custom.")
    main_user_id: str | None = Field(None, alias="mainUserId", pattern=USER_ID_PATTERN,
                                     description="Anchor shown large (floating, screenShare).")
    regions: list[MixRegion] = Field(default_factory=list, max_length=25,
                                     description="Windows of the custom layout (max 25).")
    background_color: str = Field("#000000", alias="backgroundColor", pattern=r"^#[0-9A-Fa-f]{6}$",
                                  description="Canvas colour as #RRGGBB.")
    background_image_url: str | None = Field(None, alias="backgroundImageUrl", pattern=r"^https?://\S+$",
                                             description="Canvas background image URL.")
    placeholder_color: str = Field(
        "#000000", alias="placeholderColor", pattern=r"^#[0-9A-Fa-f]{6}$",
        description="Colour (#RRGGBB) of the window of an anchor that shows no picture: one that publishes "
                    "audio only, or whose first picture has not arrived yet.")
    placeholder_image_url: str | None = Field(
        None, alias="placeholderImageUrl", pattern=r"^https?://\S+$",
        description="Image (PNG or JPEG) shown instead of placeholderColor in the window of an anchor that "
                    "shows no picture, cropped to the window. Fetched under the URL policy; one that cannot "
                    "be fetched gives event 309 and the colour is shown.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("self.mode != 'custom' || size(self.regions) > 0",
            "mixLayout.regions must list at least one region when mode is custom",
            field_path=".regions", reason="FieldValueRequired"),
        cel("self.mode == 'custom' || size(self.regions) == 0",
            "mixLayout.regions are only used when mode is custom", field_path=".regions"),
    ))


class Watermark(CamelModel):
    """An image drawn over the mixed picture, in canvas pixels."""

    url: str = Field(pattern=r"^https?://\S+$", description="URL of the image (PNG/JPEG).")
    top: int = Field(ge=0, le=1920, description="Offset from the top, pixels.")
    left: int = Field(ge=0, le=1920, description="Offset from the left, pixels.")
    width: int = Field(ge=2, le=1920, description="Width, pixels.")
    height: int = Field(ge=2, le=1920, description="Height, pixels.")


class OutputFormat(StrEnum):
    hls = "hls"
    mp4 = "mp4"
    mp3 = "mp3"


class RecordingOutputSpec(CamelModel):
    """What files are written. HLS is always the live format; MP4/MP3 are made from it at the end."""

    formats: list[OutputFormat] = Field(
        default_factory=lambda: [OutputFormat.hls], min_length=1, max_length=3,
        description="Any of hls, mp4 (hls+mp4 in TRTC terms), mp3 (the single-stream function's mode 00).",
        json_schema_extra={"x-kubernetes-list-type": "set"})
    prefix: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-./]{1,512}$",
                               description="Key prefix inside the bucket: <prefix>/<taskid>/<file>.")
    segment_seconds: int = Field(10, alias="segmentSeconds", ge=2, le=60,
                                 description="Target HLS segment duration in seconds.")
    mp4_max_seconds: int = Field(86400, alias="mp4MaxSeconds", ge=60, le=86400,
                                 description="A new MP4 file starts after this many seconds (24 h).")
    mp4_max_bytes: int = Field(2147483648, alias="mp4MaxBytes", ge=1048576, le=2147483648,
                               description="A new MP4 file starts at this size (2 GiB).")


class CloudRecordingSpec(CamelModel):
    """Desired recording. `subscribe` and `mixLayout` may change while recording; `room` and `recordMode` not."""

    room: RoomSpec = Field(description="The room to record.", json_schema_extra=IMMUTABLE)
    recorder_user_id: str = Field(alias="recorderUserId", pattern=USER_ID_PATTERN,
                                  description="Identity of the recording robot in the room; unique in the room.")
    recorder_token_secret_ref: SecretKeyRef | None = Field(
        None, alias="recorderTokenSecretRef",
        description="A ready access token for the robot (TRTC UserSig); by default the operator mints one.")
    record_mode: RecordMode = Field(RecordMode.single, alias="recordMode",
                                    description="single: one file per anchor and track; mix: one mixed picture.",
                                    json_schema_extra=IMMUTABLE)
    stream_type: StreamType = Field(StreamType.audio_video, alias="streamType",
                                    description="Which media to record: audioVideo, audio or video.")
    subscribe: SubscribeSpec = Field(default_factory=SubscribeSpec, description=SubscribeSpec.__doc__)
    max_idle_time: int = Field(30, alias="maxIdleTime", ge=5, le=86400,
                               description="Seconds without any publishing anchor after which the task ends.")
    video: VideoSpec = Field(default_factory=VideoSpec, description=VideoSpec.__doc__)
    audio: AudioSpec = Field(default_factory=AudioSpec, description=AudioSpec.__doc__)
    mix_layout: MixLayoutSpec | None = Field(None, alias="mixLayout", description=MixLayoutSpec.__doc__)
    watermarks: list[Watermark] = Field(default_factory=list, max_length=25,
                                        description="Up to 25 images over the mixed picture (mix only).")
    output: RecordingOutputSpec = Field(default_factory=RecordingOutputSpec, description=RecordingOutputSpec.__doc__)
    storage: StorageSpec | None = Field(None, description=f"{StorageSpec.__doc__} {STORAGE_DEFAULT}")
    callback: CallbackSpec | None = Field(None, description=CallbackSpec.__doc__)
    stop: bool = Field(False, description="Set true to end the recording gracefully; results are kept.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("self.recordMode == 'mix' || !has(self.mixLayout)",
            "mixLayout is only allowed when recordMode is mix", field_path=".mixLayout"),
        cel("self.recordMode == 'mix' || size(self.watermarks) == 0",
            "watermarks are only allowed when recordMode is mix", field_path=".watermarks"),
        cel("!('mp3' in self.output.formats) || self.streamType != 'video'",
            "output.formats mp3 needs audio: streamType must be audio or audioVideo", field_path=".output.formats"),
        STOP_IS_FINAL,
    ))


class CloudRecordingStatus(TaskStatus):
    """Observed state of a CloudRecording."""

    anchors: list[str] = Field(default_factory=list, description="Anchors being recorded now.")


class CloudRecording(CamelModel):
    """A recording of a real-time room to S3-compatible storage, as TRTC on-cloud recording does."""

    api_version: str = Field("capstan.dev/v1alpha1", alias="apiVersion")
    kind: str = "CloudRecording"
    metadata: dict = Field(default_factory=dict)
    spec: CloudRecordingSpec
    status: CloudRecordingStatus | None = None
