"""StartStreamIngest / DescribeStreamIngest <-> StreamPush. Pure: no I/O."""

from __future__ import annotations

from typing import Any

from capstan.api.streampush import StreamPushSpec
from capstan.gateway.config import GatewayConfig
from capstan.gateway.errors import invalid, missing, unsupported
from capstan.gateway.fields import Obj
from capstan.gateway.mapping import (
    TERMINAL,
    Names,
    Plan,
    api_room,
    sdk_app_id,
    user_id,
    user_sig,
    validated,
)


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
    return Plan("streampushes", names, app_id, validated(StreamPushSpec, spec), secrets)


def describe_stream_ingest(obj: dict[str, Any] | None) -> dict[str, Any]:
    """DescribeStreamIngest: InProgress while the push runs, NotExist otherwise (ended or unknown)."""
    phase = ((obj or {}).get("status") or {}).get("phase")
    running = obj is not None and phase not in TERMINAL and not (obj.get("spec") or {}).get("stop")
    return {"Status": "InProgress" if running else "NotExist"}


