"""CreateCloudRecording / ModifyCloudRecording / DescribeCloudRecording <-> CloudRecording. Pure: no I/O."""

from __future__ import annotations

import re
from typing import Any

from capstan.api.cloudrecording import CloudRecordingSpec
from capstan.api.common import USER_ID_PATTERN
from capstan.gateway.config import GatewayConfig
from capstan.gateway.errors import invalid, missing, unsupported
from capstan.gateway.fields import Obj
from capstan.gateway.mapping import (
    EXPIRED_HOUR_ANNOTATION,
    MAX_SUBSCRIBE,
    Names,
    Plan,
    api_room,
    basename,
    sdk_app_id,
    storage_params,
    task_id_of,
    user_id,
    user_sig,
    validated,
)

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
    hours = req.integer("ResourceExpiredHour", lo=6, hi=720)
    req.only("PrivateMapKey", why="room permissions come from the room server's credentials")
    req.done()
    plan = Plan("cloudrecordings", names, app_id, validated(CloudRecordingSpec, spec), secrets)
    if hours is not None:  # TRTC: Describe/Modify/Delete answer for this long; the recording goes on
        plan.annotations[EXPIRED_HOUR_ANNOTATION] = str(hours)
    return plan


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
    validated(CloudRecordingSpec, merged)
    return patch


STATUS_OF_PHASE = {None: "Idle", "normal": "Idle", "idle": "Idle", "recording": "InProgress",
                   "paused": "InProgress"}


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


