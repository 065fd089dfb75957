"""The SCF functions' JSON bodies (seeds 000/001 single-stream recording, 003 panoramic recording's
Action API, 004 stream push) -> the same Capstan resources, and their result bodies. Pure: no I/O."""

from __future__ import annotations

import datetime as dt
from typing import Any

from capstan.api.cloudrecording import CloudRecordingSpec
from capstan.api.streampush import StreamPushSpec
from capstan.api.webrecording import WebRecordingSpec
from capstan.gateway.config import GatewayConfig
from capstan.gateway.errors import invalid, missing, unsupported
from capstan.gateway.fields import Obj
from capstan.gateway.mapping import (
    Names,
    Plan,
    basename,
    scf_room,
    sdk_app_id,
    task_id_of,
    user_id,
    user_sig,
    validated,
)

# Seed 001 Mode: 00 audio -> MP3 (default), 01 video -> MP4, 02 audio and video -> MP4.
RECORD_MODES = {"00": ("audio", ["hls", "mp3"]), "01": ("video", ["hls", "mp4"]),
                "02": ("audioVideo", ["hls", "mp4"])}


def _cos(req: Obj, cfg: GatewayConfig, names: Names, secrets: dict[str, dict[str, str]]) -> dict[str, Any]:
    """CosConfig {SecretId, SecretKey, Region, Bucket, Path} -> storage (+ a Secret) and the prefix."""
    cos = req.obj("CosConfig", required=True)
    assert cos is not None
    region = cos.text("Region", required=True)
    assert region is not None
    target = cfg.storage_for(region)
    if target is None:
        raise invalid("CosConfig.Region", f"no S3 endpoint is configured for region {region!r}")
    bucket = cos.text("Bucket", required=True)
    access, secret = cos.text("SecretId"), cos.text("SecretKey")
    if access is None or secret is None:
        raise unsupported("CosConfig (without SecretId and SecretKey)", "there is no execution role: give the "
                          "bucket's keys")
    path = cos.text("Path", required=True)
    cos.done()
    secrets[names.secret("storage")] = {"accessKey": access, "secretKey": secret}
    storage: dict[str, Any] = {"endpoint": target.endpoint, "bucket": bucket, "region": region,
                               "secure": target.secure, "credentialsSecretRef": {"name": names.secret("storage")}}
    if target.public_base_url:
        storage["publicBaseUrl"] = target.public_base_url
    return {"storage": storage, "prefix": str(path).strip("/") or None}


def plan_recording(body: dict[str, Any], cfg: GatewayConfig, names: Names) -> Plan:
    """Seed 001: one anchor's stream (UserId is the recorded user), stopped by removing the robot."""
    req = Obj(body)
    app_id, app = sdk_app_id(req, cfg)
    anchor = user_id(req)
    spec: dict[str, Any] = {"room": scf_room(req, app, app_id), "recorderUserId": f"rec-{anchor}"[:64],
                            "recordMode": "single"}
    secrets: dict[str, dict[str, str]] = {}
    # The function joins as the recorded user's own identity's robot; the UserSig is that robot's token.
    user_sig(req, app, names, secrets, "recorderTokenSecretRef", spec)
    stream_type, formats = req.choice("Mode", RECORD_MODES, default=RECORD_MODES["00"])
    spec["streamType"] = stream_type
    spec["subscribe"] = {"audioAllow": [anchor], "videoAllow": [anchor]}
    cos = _cos(req, cfg, names, secrets)
    spec["storage"] = cos["storage"]
    spec["output"] = {"formats": formats, **({"prefix": cos["prefix"]} if cos["prefix"] else {})}
    callback = req.text("Callback")
    if callback is not None:
        spec["callback"] = {"url": callback}
    req.done()
    return Plan("cloudrecordings", names, app_id, validated(CloudRecordingSpec, spec), secrets)


def recording_result(obj: dict[str, Any]) -> dict[str, Any]:
    """Seed 001's returned data: SdkAppId, RoomId, StrRoomId, UserId, Files [{UserId, RecordFile, Status,
    Message}] -- the MP3/MP4 files the Mode asked for -- with the task's Status and TaskId."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    room = spec.get("room") or {}
    wanted = tuple(f".{f}" for f in (spec.get("output") or {}).get("formats", []) if f != "hls") or (".m3u8",)
    allow = (spec.get("subscribe") or {}).get("audioAllow") or (spec.get("subscribe") or {}).get("videoAllow") or [""]
    files = [{"UserId": str(f.get("userId") or ""), "RecordFile": str(f.get("url") or f.get("fileName") or ""),
              "Status": 1 if f.get("status", "uploaded") == "uploaded" else 0,
              "Message": "uploaded" if f.get("status", "uploaded") == "uploaded" else str(f.get("status"))}
             for f in status.get("files") or [] if str(f.get("fileName", "")).endswith(wanted)]
    result = status.get("result") or {}
    out: dict[str, Any] = {"TaskId": task_id_of(obj), "Status": status.get("phase") or "normal",
                           "SdkAppId": str(room.get("sdkAppId", "")), "RoomId": str(room.get("roomId") or ""),
                           "StrRoomId": str(room.get("strRoomId") or ""), "UserId": allow[0], "Files": files}
    if result.get("errorCode"):
        out["ErrorCode"], out["ErrorMessage"] = result["errorCode"], result.get("errorMessage", "")
    return out


def plan_push(body: dict[str, Any], cfg: GatewayConfig, names: Names) -> Plan:
    """Seed 004: VideoSrc, Mode vod|live, the room, UserId/UserSig, and Redis for resumable progress."""
    req = Obj(body)
    app_id, app = sdk_app_id(req, cfg)
    src = req.text("VideoSrc", required=True)
    assert src is not None
    spec: dict[str, Any] = {"room": scf_room(req, app, app_id), "userId": user_id(req), "videoSrc": src,
                            "mode": req.choice("Mode", {"vod": "vod", "live": "live"}, default="vod")}
    secrets: dict[str, dict[str, str]] = {}
    user_sig(req, app, names, secrets, "userTokenSecretRef", spec)
    use_redis = req.get("Redis", bool, default=False)
    host, port, password = req.text("RedisHost"), req.integer("RedisPort", lo=1, hi=65535), req.text("RedisPassword")
    if use_redis:
        if host is None:
            raise missing("RedisHost")
        auth = f":{password}@" if password else ""
        secrets[names.secret("redis")] = {"url": f"redis://{auth}{host}:{port or 6379}/0"}
        spec["redisSecretRef"] = {"name": names.secret("redis"), "key": "url"}
        spec["resume"] = True  # seed 004: with Redis, the same VideoSrc continues from its saved record
    elif host or port or password:
        raise invalid("Redis", "RedisHost, RedisPort and RedisPassword are used only with Redis true")
    req.done()
    return Plan("streampushes", names, app_id, validated(StreamPushSpec, spec), secrets)


def push_result(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    progress = status.get("progress") or {}
    out: dict[str, Any] = {"TaskId": task_id_of(obj), "Status": status.get("phase") or "normal",
                           "PositionSeconds": float(progress.get("positionSeconds") or 0.0)}
    result = status.get("result") or {}
    if result.get("errorCode"):
        out["ErrorCode"], out["ErrorMessage"] = result["errorCode"], result.get("errorMessage", "")
    return out


def plan_web_start(data: dict[str, Any], cfg: GatewayConfig, names: Names, sdk_app_id_of_key: int) -> Plan:
    """Seed 003 Start: Data {RecordURL, ManualStart, Width, Height, CallbackURL, MaxDurationLimit,
    Output {Cos {Domain, Bucket, Region, TargetDir, TargetName}, Video {Muxer, EncryptKey, AuthUrl}}}.

    The function has no bucket of its own here, so Output.Cos.Bucket and Region are required, and its
    keys come in Output.Cos.SecretId / SecretKey (Capstan's addition: the function used its role's)."""
    req = Obj(data, "Data")
    spec: dict[str, Any] = {"recordUrl": req.text("RecordURL", required=True),
                            "manualStart": req.get("ManualStart", bool, default=False)}
    for name, ours in (("Width", "width"), ("Height", "height")):
        value = req.integer(name, lo=0, hi=2560)
        if value:
            spec[ours] = value
    callback = req.text("CallbackURL")
    if callback is not None:
        spec["callback"] = {"url": callback}
    limit = req.integer("MaxDurationLimit", lo=0, hi=36000)
    if limit:
        spec["maxDurationLimit"] = limit
    req.only("StorageType", "cfs", "cos", why="")  # the intermediate file's place: the worker's own volume
    out = req.obj("Output", required=True)
    assert out is not None
    cos = out.obj("Cos", required=True)
    assert cos is not None
    region, bucket = cos.text("Region", required=True), cos.text("Bucket", required=True)
    assert region is not None
    target = cfg.storage_for(region)
    if target is None:
        raise invalid(cos.at("Region"), f"no S3 endpoint is configured for region {region!r}")
    access, secret = cos.text("SecretId", required=True), cos.text("SecretKey", required=True)
    secrets = {names.secret("storage"): {"accessKey": str(access), "secretKey": str(secret)}}
    storage: dict[str, Any] = {"endpoint": target.endpoint, "bucket": bucket, "region": region,
                               "secure": target.secure, "credentialsSecretRef": {"name": names.secret("storage")}}
    if target.public_base_url:
        storage["publicBaseUrl"] = target.public_base_url
    output: dict[str, Any] = {"storage": storage}
    for name, ours in (("TargetDir", "targetDir"), ("TargetName", "targetName"), ("Domain", "domain")):
        given = cos.text(name)
        if given is not None:
            output[ours] = given.strip("/") if ours == "targetDir" else given
    cos.done()
    out.only("Vod", why="VOD storage has no Capstan counterpart; use Output.Cos")
    video = out.obj("Video")
    if video is not None:
        output["muxer"] = video.choice("Muxer", {"mp4": "mp4", "hls": "hls"}, default="mp4")
        key, auth_url = video.text("EncryptKey"), video.text("AuthUrl")
        if key is not None:
            secrets[names.secret("encrypt")] = {"key": key}
            output["encryptKeySecretRef"] = {"name": names.secret("encrypt"), "key": "key"}
        if auth_url is not None:
            output["authUrl"] = auth_url
        video.done()
    out.done()
    spec["output"] = output
    req.done()
    return Plan("webrecordings", names, sdk_app_id_of_key, validated(WebRecordingSpec, spec), secrets)


def _seconds(stamp: Any) -> int | None:
    if not stamp:
        return None
    return int(dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp())


def web_describe(obj: dict[str, Any]) -> dict[str, Any]:
    """Seed 003 Describe: TaskID, Status (the phase), the times in seconds, Result {Videos | ErrorCode}."""
    status = obj.get("status") or {}
    out: dict[str, Any] = {"TaskID": task_id_of(obj), "Status": status.get("phase") or "normal"}
    for ours, theirs in (("createTime", "CreateTime"), ("startTime", "StartTime"), ("cancelTime", "CancelTime"),
                         ("stopTime", "StopTime"), ("finishTime", "FinishTime")):
        value = _seconds(status.get(ours))
        if value is not None:
            out[theirs] = value
    result: dict[str, Any] = {}
    err = status.get("result") or {}
    if err.get("errorCode"):
        result.update(ErrorCode=err["errorCode"], ErrorMessage=err.get("errorMessage", ""))
    videos = [{"Filename": basename(str(f.get("fileName", ""))), "FileSize": int(f.get("size") or 0),
               "FileDuration": f.get("duration") or 0, "FileURL": str(f.get("url") or "")}
              for f in status.get("files") or []]
    if videos:
        result["Videos"] = videos
    if result:
        out["Result"] = result
    return out
