"""TRTC requests -> Capstan resources, and Capstan status -> TRTC answers. Pure: no I/O.

Each `plan_*` reads a request with `fields.Obj`, so a field is either mapped (docs/trtc-gateway.md
lists how) or refused with InvalidParameter naming it. Credentials the request carries (storage keys,
UserSig, a Redis password) go into Secrets the plan lists; the spec only refers to them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from capstan.api.cloudrecording import CloudRecordingSpec
from capstan.api.common import (
    API_VERSION,
    STR_ROOM_ID_PATTERN,
    TASK_ID_ANNOTATION,
    USER_ID_PATTERN,
)
from capstan.api.streampush import StreamPushSpec
from capstan.api.webrecording import WebRecordingSpec
from capstan.gateway import errors
from capstan.gateway.config import AppConfig, GatewayConfig
from capstan.gateway.errors import ApiError, invalid, missing, unsupported
from capstan.gateway.fields import Obj

GATEWAY_LABEL = "capstan.dev/gateway"
SDK_APP_ID_LABEL = "capstan.dev/sdk-app-id"
RECORD_ID_LABEL = "capstan.dev/record-id"
SECRET_OPT_IN = {"capstan.dev/use": "true"}
NAME_PREFIX = "trtc-"
MAX_SUBSCRIBE = 25  # Capstan records at most 25 streams per room (TRTC allows 32 ids per list)
_TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
TERMINAL = frozenset({"finished", "canceled", "failed"})


@dataclass(frozen=True)
class Names:
    """A new task's id (the TRTC TaskId), and the resource and Secret names that follow from it."""

    task_id: str

    @classmethod
    def new(cls) -> Names:
        return cls(str(uuid.uuid4()))

    @property
    def resource(self) -> str:
        return NAME_PREFIX + self.task_id

    def secret(self, what: str) -> str:
        return f"{self.resource}-{what}"


def resource_name(task_id: Any, field_name: str = "TaskId") -> str:
    """The resource a TaskId names; InvalidParameter.TaskId when it is not one of ours."""
    if not isinstance(task_id, str) or not task_id:
        raise missing(field_name)
    if not _TASK_ID.match(task_id):
        raise ApiError(errors.INVALID_TASK_ID, f"{field_name} {task_id[:80]!r} is not a task id of this gateway")
    return NAME_PREFIX + task_id


@dataclass
class Plan:
    """What a Start/Create request becomes: one resource and the Secrets it owns."""

    plural: str
    names: Names
    sdk_app_id: int
    spec: dict[str, Any]
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> stringData
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return {"cloudrecordings": "CloudRecording", "streampushes": "StreamPush",
                "webrecordings": "WebRecording"}[self.plural]

    def body(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": self.kind,
                "metadata": {"name": self.names.resource,
                             "labels": {GATEWAY_LABEL: "trtc", SDK_APP_ID_LABEL: str(self.sdk_app_id), **self.labels},
                             "annotations": {TASK_ID_ANNOTATION: self.names.task_id}},
                "spec": self.spec}

    def secret_bodies(self) -> list[dict[str, Any]]:
        return [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": name, "labels": {**SECRET_OPT_IN, GATEWAY_LABEL: "trtc"}},
                 "stringData": data} for name, data in self.secrets.items()]


def _validated(model: type[BaseModel], spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as Capstan's own model checks it: a last net under the field-by-field mapping."""
    try:
        model.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(errors.INVALID, f"the request maps to spec.{where}, which Capstan refuses: "
                                       f"{first['msg']}") from None
    return spec


# --- shared parts -----------------------------------------------------------------------------------

def sdk_app_id(req: Obj, cfg: GatewayConfig) -> tuple[int, AppConfig]:
    app_id = req.integer("SdkAppId", lo=1, hi=4294967295, required=True)
    assert app_id is not None
    app = cfg.apps.get(app_id)
    if app is None:
        raise ApiError(f"{errors.INVALID}.SdkAppId", f"SdkAppId {app_id} has no room server configured here")
    return app_id, app


def user_id(req: Obj, name: str = "UserId") -> str:
    value = req.text(name, required=True)
    assert value is not None
    if not re.match(USER_ID_PATTERN, value):
        raise invalid(req.at(name), "1-64 of A-Z a-z 0-9 _ - @ .")
    return value


def _room_from(app: AppConfig, app_id: int, room_id: int | None, str_room_id: str | None) -> dict[str, Any]:
    room: dict[str, Any] = {"backend": app.room_backend, "url": app.room_url, "sdkAppId": app_id,
                            "credentialsSecretRef": {"name": app.room_credentials_secret}}
    if room_id is not None:
        room["roomId"] = room_id
    else:
        room["strRoomId"] = str_room_id
    return room


def api_room(req: Obj, app: AppConfig, app_id: int) -> dict[str, Any]:
    """RoomId (a string in the API) with RoomIdType: 1 integer (default), 0 string."""
    req.read.add("RoomId")
    raw = req.data.get("RoomId")
    if raw is None or raw == "":
        raise missing("RoomId")
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise invalid("RoomId", "must be a string")
    kind = req.choice("RoomIdType", {0: "string", 1: "int"}, default="int")
    text = str(raw)
    if kind == "int":
        if not text.isdigit() or not 1 <= int(text) <= 4294967295:
            raise invalid("RoomId", "with RoomIdType 1 it is an integer in [1, 4294967295]; "
                                    "give RoomIdType 0 for a string room id")
        return _room_from(app, app_id, int(text), None)
    if not re.match(STR_ROOM_ID_PATTERN, text):
        raise invalid("RoomId", "a string room id of 1-64 allowed characters")
    return _room_from(app, app_id, None, text)


def scf_room(req: Obj, app: AppConfig, app_id: int) -> dict[str, Any]:
    """The SCF bodies: RoomId (integer) or StrRoomId; RoomId wins when both are given."""
    room_id = req.integer("RoomId", lo=1, hi=4294967295)
    str_room_id = req.text("StrRoomId")
    if room_id is None and str_room_id is None:
        raise missing("RoomId")
    if room_id is None and not re.match(STR_ROOM_ID_PATTERN, str(str_room_id)):
        raise invalid("StrRoomId", "1-64 allowed characters")
    return _room_from(app, app_id, room_id, None if room_id is not None else str_room_id)


def user_sig(req: Obj, app: AppConfig, names: Names, secrets: dict[str, dict[str, str]], spec_field: str,
             spec: dict[str, Any]) -> None:
    """UserSig: in `token` mode the robot's room token, kept in a Secret the resource owns."""
    sig = req.text("UserSig", required=True)
    if app.user_sig == "token":
        secrets[names.secret("usersig")] = {"token": str(sig)}
        spec[spec_field] = {"name": names.secret("usersig"), "key": "token"}


def cloud_storage(st: Obj, cfg: GatewayConfig, names: Names, secrets: dict[str, dict[str, str]]) \
        -> tuple[dict[str, Any], list[str]]:
    """CloudStorage -> spec storage (+ a Secret with the keys) and the FileNamePrefix parts."""
    vendor = st.integer("Vendor", required=True)
    if vendor not in cfg.vendors:
        raise unsupported(f"{st.at('Vendor')}={vendor}", "this gateway takes Vendor "
                          + ", ".join(str(v) for v in sorted(cfg.vendors)) + " (1 = AWS: any S3-compatible store)")
    region = st.text("Region", required=True)
    assert region is not None
    target = cfg.storage_for(region)
    if target is None:
        raise invalid(st.at("Region"), f"no S3 endpoint is configured for region {region!r}")
    bucket = st.text("Bucket", required=True)
    access, secret = st.text("AccessKey", required=True), st.text("SecretKey", required=True)
    prefix = st.strs("FileNamePrefix", max_items=16)
    for i, part in enumerate(prefix):
        if not _PREFIX_PART.match(part):
            raise invalid(f"{st.at('FileNamePrefix')}[{i}]", "a-z, A-Z, 0-9, _ and - only")
    st.done()
    secrets[names.secret("storage")] = {"accessKey": str(access), "secretKey": str(secret)}
    storage: dict[str, Any] = {"endpoint": target.endpoint, "bucket": bucket, "region": region,
                               "secure": target.secure, "credentialsSecretRef": {"name": names.secret("storage")}}
    if target.public_base_url:
        storage["publicBaseUrl"] = target.public_base_url
    return storage, prefix


def storage_params(req: Obj, cfg: GatewayConfig, names: Names, secrets: dict[str, dict[str, str]]) \
        -> tuple[dict[str, Any], list[str]]:
    sp = req.obj("StorageParams", required=True)
    assert sp is not None
    sp.only("CloudVod", why="VOD storage (TencentVod) has no Capstan counterpart; use CloudStorage")
    st = sp.obj("CloudStorage", required=True)
    assert st is not None
    sp.done()
    return cloud_storage(st, cfg, names, secrets)


# --- CloudRecording ---------------------------------------------------------------------------------

OUTPUT_FORMATS = {0: ["hls"], 1: ["hls", "mp4"]}
STREAM_TYPES = {0: "audioVideo", 1: "audio", 2: "video"}
LAYOUT_MODES = {1: "floating", 2: "screenShare", 3: "grid", 4: "custom"}
RENDER_MODES = {0: "stretch", 1: "crop", 2: "fit"}
MEDIA_IDS = {0: "main", 1: "aux"}
SAMPLE_RATES = {1: 48000, 2: 44100, 3: 16000}


def subscribe(sub: Obj | None) -> dict[str, list[str]]:
    """SubscribeStreamUserIds -> spec.subscribe (every list given, so a Modify replaces them all)."""
    out: dict[str, list[str]] = {"audioAllow": [], "audioDeny": [], "videoAllow": [], "videoDeny": []}
    if sub is None:
        return out
    for trtc, ours in (("SubscribeAudioUserIds", "audioAllow"), ("UnSubscribeAudioUserIds", "audioDeny"),
                       ("SubscribeVideoUserIds", "videoAllow"), ("UnSubscribeVideoUserIds", "videoDeny")):
        ids = sub.strs(trtc, max_items=MAX_SUBSCRIBE)
        for i, uid in enumerate(ids):
            if not re.match(USER_ID_PATTERN, uid):
                raise unsupported(f"{sub.at(trtc)}[{i}]={uid!r}", "user id patterns (regular expressions) are "
                                  "not supported; list user ids (A-Z a-z 0-9 _ - @ .)")
        out[ours] = ids
    sub.done()
    return out


def record_params(rp: Obj, spec: dict[str, Any]) -> str:
    mode = rp.choice("RecordMode", {1: "single", 2: "mix"})
    if mode is None:
        raise missing(rp.at("RecordMode"))
    spec["recordMode"] = mode
    spec["maxIdleTime"] = rp.integer("MaxIdleTime", lo=5, hi=86400, default=30)
    spec["streamType"] = rp.choice("StreamType", STREAM_TYPES, default="audioVideo")
    spec["subscribe"] = subscribe(rp.obj("SubscribeStreamUserIds"))
    formats = rp.choice("OutputFormat", OUTPUT_FORMATS, default=["hls"],
                        why="Capstan writes HLS always, and MP4 from it at the end: 0 (hls) or 1 (hls+mp4); "
                            "AAC outputs (2, 4) and MP4 alone (3) are not made")
    output: dict[str, Any] = {"formats": formats}
    minutes = rp.integer("MaxMediaFileDuration", lo=1, hi=1440)
    if minutes is not None:
        output["mp4MaxSeconds"] = max(60, minutes * 60)
    spec["output"] = output
    rp.only("AvMerge", 0, why="single-stream audio and video are always separate files (AvMerge 0)")
    rp.only("MediaId", 0, why="the main and aux streams are both recorded (MediaId 0)")
    rp.only("FillType", why="the picture shown after an anchor's video stops is not configurable")
    rp.only("SubscribeAbility", 0, why="there is no mixed-stream relay robot to subscribe to (0 only)")
    rp.done()
    return str(mode)


def video_params(vp: Obj) -> dict[str, Any]:
    width, height = vp.integer("Width", lo=16, hi=1920), vp.integer("Height", lo=16, hi=1920)
    if (width is None) != (height is None):
        raise missing(vp.at("Height" if height is None else "Width"))
    out: dict[str, Any] = {}
    if width is not None and height is not None:
        if width % 2 or height % 2:
            raise invalid(vp.at("Width" if width % 2 else "Height"), "must be even")
        if width * height > 1920 * 1080:
            raise invalid(vp.at("Width"), "Width x Height may not exceed 1920 x 1080")
        out.update(width=width, height=height)
    for trtc, ours, lo, hi in (("Fps", "fps", 1, 60), ("BitRate", "bitrate", 64000, 8192000), ("Gop", "gop", 1, 10)):
        value = vp.integer(trtc, lo=lo, hi=hi)
        if value is not None:
            out[ours] = value
    vp.done()
    return out


def audio_params(ap: Obj) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rate = ap.choice("SampleRate", SAMPLE_RATES)
    if rate is not None:
        out["sampleRate"] = rate
    for trtc, ours, lo, hi in (("Channel", "channels", 1, 2), ("BitRate", "bitrate", 32000, 128000)):
        value = ap.integer(trtc, lo=lo, hi=hi)
        if value is not None:
            out[ours] = value
    ap.done()
    return out


def _color(mp: Obj, name: str) -> str | None:
    value = mp.text(name)
    if value is not None and not re.match(r"^#[0-9A-Fa-f]{6}$", value):
        raise invalid(mp.at(name), "#RRGGBB")
    return value


def mix_layout(mp: Obj) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """MixLayoutParams -> spec.mixLayout (every key present: a Modify replaces the layout whole) and
    the watermarks."""
    layout: dict[str, Any] = {"mode": mp.choice("MixLayoutMode", LAYOUT_MODES, default="grid"),
                              "mainUserId": None, "regions": [], "backgroundColor": "#000000",
                              "backgroundImageUrl": None}
    main = mp.text("MaxResolutionUserId")
    if main is not None:
        if not re.match(USER_ID_PATTERN, main):
            raise invalid(mp.at("MaxResolutionUserId"), "a user id")
        layout["mainUserId"] = main
    mp.only("MediaId", 0, why="the large window shows the anchor's main stream (MediaId 0)")
    layout["backgroundColor"] = _color(mp, "BackGroundColor") or "#000000"
    layout["backgroundImageUrl"] = mp.text("BackgroundImageUrl")
    regions = []
    for item in mp.objs("MixLayoutList", max_items=25):
        region: dict[str, Any] = {}
        uid = item.text("UserId")
        if uid is None:
            raise unsupported(item.at("UserId") + " (absent)", "a window is given to a named user; windows filled "
                              "in join order are not supported")
        if not re.match(USER_ID_PATTERN, uid):
            raise invalid(item.at("UserId"), "a user id")
        region["userId"] = uid
        for trtc, ours in (("Top", "top"), ("Left", "left"), ("Width", "width"), ("Height", "height")):
            value = item.integer(trtc, lo=0, hi=1920, required=True)
            region[ours] = value
        if region["width"] < 2 or region["height"] < 2:
            raise invalid(item.at("Width" if region["width"] < 2 else "Height"), "at least 2 pixels")
        region["mediaId"] = item.choice("MediaId", MEDIA_IDS, default="main")
        region["renderMode"] = item.choice("RenderMode", RENDER_MODES, default="crop",
                                           why="0 stretch, 1 crop, 2 fit; smart stretch (3) is not supported")
        layer = item.integer("ImageLayer", lo=0, hi=24, default=0)
        region["zOrder"] = int(layer or 0) + 1
        item.only("Alpha", 0, why="windows are opaque (Alpha 0)")
        item.only("SubBackgroundImage", why="placeholder images are not supported")
        item.done()
        regions.append(region)
    layout["regions"] = regions
    if layout["mode"] == "custom" and not regions:
        raise missing(mp.at("MixLayoutList"))
    if layout["mode"] != "custom" and regions:
        raise invalid(mp.at("MixLayoutList"), "only used with MixLayoutMode 4 (custom)")
    watermarks = []
    for wm in mp.objs("WaterMarkList", max_items=25):
        wm.choice("WaterMarkType", {0: "image"}, default="image",
                  why="image watermarks (0) only; text (1) and timestamp (2) watermarks are not supported")
        wm.only("WaterMarkChar", why="text watermarks are not supported")
        wm.only("WaterMarkTimestamp", why="timestamp watermarks are not supported")
        img = wm.obj("WaterMarkImage", required=True)
        assert img is not None
        mark: dict[str, Any] = {"url": img.text("WaterMarkUrl", required=True)}
        for trtc, ours in (("Top", "top"), ("Left", "left"), ("Width", "width"), ("Height", "height")):
            mark[ours] = img.integer(trtc, lo=0, hi=1920, required=True)
        img.done()
        wm.done()
        watermarks.append(mark)
    mp.only("PlaceHolderMode", 0, why="placeholder images are not supported (0 only)")
    mp.only("BackgroundImageRenderMode", why="the background image's fit is not configurable")
    mp.only("DefaultSubBackgroundImage", why="placeholder images are not supported")
    mp.only("RenderMode", why="template layouts' render mode is not configurable")
    mp.only("MaxResolutionUserAlign", 0, why="the screen-share layout's large window is on the left (0 only)")
    mp.only("PureAudioDisableLayout", False, why="audio-only anchors always take a window (false only)")
    mp.done()
    return layout, watermarks


def plan_cloud_recording(body: dict[str, Any], cfg: GatewayConfig, names: Names) -> Plan:
    req = Obj(body)
    app_id, app = sdk_app_id(req, cfg)
    spec: dict[str, Any] = {"room": api_room(req, app, app_id), "recorderUserId": user_id(req)}
    secrets: dict[str, dict[str, str]] = {}
    user_sig(req, app, names, secrets, "recorderTokenSecretRef", spec)
    rp = req.obj("RecordParams", required=True)
    assert rp is not None
    mode = record_params(rp, spec)
    storage, prefix = storage_params(req, cfg, names, secrets)
    spec["storage"] = storage
    if prefix:
        spec["output"]["prefix"] = "/".join(prefix)
    for name in ("MixTranscodeParams", "MixLayoutParams"):
        if req.has(name) and mode != "mix":
            raise invalid(name, "only for mixed-stream recording (RecordParams.RecordMode 2)")
    mt = req.obj("MixTranscodeParams")
    if mt is not None:
        vp, ap = mt.obj("VideoParams"), mt.obj("AudioParams")
        if vp is not None:
            spec["video"] = video_params(vp)
        if ap is not None:
            spec["audio"] = audio_params(ap)
        mt.done()
    mp = req.obj("MixLayoutParams")
    if mp is not None:
        layout, watermarks = mix_layout(mp)
        spec["mixLayout"] = {k: v for k, v in layout.items() if v is not None}
        if watermarks:
            spec["watermarks"] = watermarks
    elif mode == "mix":
        spec["mixLayout"] = {"mode": "grid"}
    req.only("ResourceExpiredHour", why="tasks are reachable for as long as their resource exists")
    req.only("PrivateMapKey", why="room permissions come from the room server's credentials")
    req.done()
    return Plan("cloudrecordings", names, app_id, _validated(CloudRecordingSpec, spec), secrets)


def plan_modify_cloud_recording(body: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """ModifyCloudRecording -> a merge patch of the spec. TRTC's rule: every parameter is given again,
    so the lists and the layout given replace the current ones whole."""
    req = Obj(body)
    req.integer("SdkAppId", required=True)
    req.get("TaskId", str, required=True)
    spec = current.get("spec") or {}
    patch: dict[str, Any] = {}
    sub = req.obj("SubscribeStreamUserIds")
    if sub is not None:
        patch["subscribe"] = subscribe(sub)
    mp = req.obj("MixLayoutParams")
    if mp is not None:
        if spec.get("recordMode") != "mix":
            raise invalid("MixLayoutParams", "only for mixed-stream recording (RecordParams.RecordMode 2)")
        layout, watermarks = mix_layout(mp)
        if watermarks != (spec.get("watermarks") or []):
            raise unsupported("MixLayoutParams.WaterMarkList", "watermarks cannot change while recording; "
                              "give the list the task was created with")
        patch["mixLayout"] = layout
    req.done()
    if not patch:
        raise missing("SubscribeStreamUserIds")
    merged = {**spec, **{k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in patch.items()}}
    _validated(CloudRecordingSpec, merged)
    return patch


STATUS_OF_PHASE = {None: "Idle", "normal": "Idle", "idle": "Idle", "recording": "InProgress",
                   "paused": "InProgress"}


def task_id_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str((obj.get("status") or {}).get("taskId") or (meta.get("annotations") or {}).get(TASK_ID_ANNOTATION)
               or str(meta.get("name", "")).removeprefix(NAME_PREFIX))


def basename(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def describe_cloud_recording(obj: dict[str, Any]) -> dict[str, Any]:
    """DescribeCloudRecording: Status (Idle / InProgress / Exited) and the M3U8 files (seed 002)."""
    status = obj.get("status") or {}
    mix = (obj.get("spec") or {}).get("recordMode") == "mix"
    files = []
    for f in status.get("files") or []:
        name = str(f.get("fileName") or "")
        if not name.endswith(".m3u8"):
            continue
        files.append({"UserId": "" if mix else str(f.get("userId") or ""), "FileName": basename(name),
                      "TrackType": str(f.get("trackType") or ("audio_video" if mix else "")),
                      "BeginTimeStamp": int(f.get("beginTimeStamp") or 0)})
    return {"TaskId": task_id_of(obj), "Status": STATUS_OF_PHASE.get(status.get("phase"), "Exited"),
            "StorageFileList": files}


# --- StreamPush (StartStreamIngest) -----------------------------------------------------------------

def _source(url: str, where: str) -> str:
    if url.startswith("rtmp://"):
        return "live"
    if url.startswith(("http://", "https://")):
        return "vod"
    raise unsupported(where, "Capstan pushes http(s) media files and rtmp:// live streams")


def plan_stream_ingest(body: dict[str, Any], cfg: GatewayConfig, names: Names) -> Plan:
    req = Obj(body)
    app_id, app = sdk_app_id(req, cfg)
    spec: dict[str, Any] = {"room": api_room(req, app, app_id), "userId": user_id(req)}
    secrets: dict[str, dict[str, str]] = {}
    user_sig(req, app, names, secrets, "userTokenSecretRef", spec)
    url, old = req.text("StreamUrl"), req.text("SourceUrl")
    if url and old and url != old:
        raise invalid("SourceUrl", "deprecated alias of StreamUrl; give one of them")
    src = url or old
    if src is None:
        raise missing("StreamUrl")
    spec["videoSrc"] = src
    spec["mode"] = _source(src, "StreamUrl")
    repeat = req.integer("RepeatNum", lo=-1, hi=1000)
    if repeat not in (None, 1, -1):
        raise unsupported(f"RepeatNum={repeat}", "a file is played once (1) or looped until stopped (-1)")
    if repeat == -1:
        if spec["mode"] != "vod":
            raise invalid("RepeatNum", "looping (-1) is for media files, not live streams")
        spec["loop"] = True
    req.only("PrivateMapKey", why="room permissions come from the room server's credentials")
    req.only("VideoEncodeParams", why="the source is pushed as it is (deprecated in TRTC too)")
    req.only("AudioEncodeParams", why="the source is pushed as it is (deprecated in TRTC too)")
    req.only("SeekSecond", 0, why="a push starts at the beginning (resume continues from saved progress)")
    req.only("AutoPush", False, why="relaying the room to a CDN is not part of Capstan")
    req.only("MaxDuration", why="a looped push runs until StopStreamIngest")
    req.only("Volume", 100, why="the source's volume is kept (100 only)")
    req.only("EnableProgress", False, why="progress is in the task status, not sent as room custom data")
    req.only("Tempo", 1, 1.0, why="the source plays at its own speed (1.0 only)")
    req.only("IdleTimeout", why="a push ends when its source ends")
    req.done()
    return Plan("streampushes", names, app_id, _validated(StreamPushSpec, spec), secrets)


def describe_stream_ingest(obj: dict[str, Any] | None) -> dict[str, Any]:
    """DescribeStreamIngest: InProgress while the push runs, NotExist otherwise (ended or unknown)."""
    phase = ((obj or {}).get("status") or {}).get("phase")
    running = obj is not None and phase not in TERMINAL and not (obj.get("spec") or {}).get("stop")
    return {"Status": "InProgress" if running else "NotExist"}


# --- WebRecording (StartWebRecord) ------------------------------------------------------------------

WEB_FORMATS = {"mp4": "mp4", "hls": "hls"}


def plan_web_record(body: dict[str, Any], cfg: GatewayConfig, names: Names) -> Plan:
    req = Obj(body)
    app_id = req.integer("SdkAppId", lo=1, hi=4294967295, required=True)
    assert app_id is not None
    url = req.text("RecordUrl", required=True)
    secrets: dict[str, dict[str, str]] = {}
    storage, prefix = storage_params(req, cfg, names, secrets)
    output: dict[str, Any] = {"storage": storage, "targetDir": "/".join([*prefix, names.task_id])}
    spec: dict[str, Any] = {"recordUrl": url, "output": output}
    limit = req.integer("MaxDurationLimit", lo=1, hi=86400)
    if limit is not None:
        if limit > 36000:
            raise unsupported(f"MaxDurationLimit={limit}", "a page recording lasts at most 36000 s (10 h)")
        spec["maxDurationLimit"] = limit
    vp = req.obj("WebRecordVideoParams")
    if vp is not None:
        for trtc, ours, hi in (("Width", "width", 1920), ("Height", "height", 1080)):
            value = vp.integer(trtc, lo=0, hi=hi)
            if value:  # TRTC: 0 means the default
                if value % 2:
                    raise invalid(vp.at(trtc), "must be even")
                spec[ours] = value
        muxer = vp.choice("Format", WEB_FORMATS)
        if muxer is not None:
            output["muxer"] = muxer
        vp.only("MaxMediaFileDuration", why="a page recording is one file")
        vp.done()
    record_id = req.text("RecordId")
    labels = {}
    if record_id is not None:
        if not re.match(r"^[A-Za-z0-9_\-.]{1,31}$", record_id):
            raise invalid("RecordId", "under 32 of A-Z a-z 0-9 _ - .")
        labels[RECORD_ID_LABEL] = record_id
    req.only("PublishCdnParams", why="relaying the page to a CDN is not part of Capstan")
    req.only("ReadyTimeout", 0, why="the page load timeout is not configurable (0 only)")
    req.only("EmulateMobileParams", why="mobile emulation is not supported")
    req.done()
    return Plan("webrecordings", names, app_id, _validated(WebRecordingSpec, spec), secrets, labels)


WEB_STATUS = {None: 0, "normal": 0, "idle": 0, "recording": 1, "paused": 1}


def describe_web_record(obj: dict[str, Any]) -> dict[str, Any]:
    """DescribeWebRecord: Status 1 while recording (seed 003's recording/paused), 0 before, 2 after."""
    phase = (obj.get("status") or {}).get("phase")
    labels = (obj.get("metadata") or {}).get("labels") or {}
    out: dict[str, Any] = {"Status": WEB_STATUS.get(phase, 2), "TaskId": task_id_of(obj)}
    if labels.get(RECORD_ID_LABEL):
        out["RecordId"] = labels[RECORD_ID_LABEL]
    return out
