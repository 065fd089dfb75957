"""StartWebRecord / DescribeWebRecord <-> WebRecording. Pure: no I/O."""

from __future__ import annotations

import re
from typing import Any

from capstan.api.webrecording import WebRecordingSpec
from capstan.gateway.config import GatewayConfig
from capstan.gateway.errors import invalid, unsupported
from capstan.gateway.fields import Obj
from capstan.gateway.mapping import (
    RECORD_ID_LABEL,
    Names,
    Plan,
    storage_params,
    task_id_of,
    validated,
)

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
    return Plan("webrecordings", names, app_id, validated(WebRecordingSpec, spec), secrets, labels)


WEB_STATUS = {None: 0, "normal": 0, "idle": 0, "recording": 1, "paused": 1}


def describe_web_record(obj: dict[str, Any]) -> dict[str, Any]:
    """DescribeWebRecord: Status 1 while recording (seed 003's recording/paused), 0 before, 2 after."""
    phase = (obj.get("status") or {}).get("phase")
    labels = (obj.get("metadata") or {}).get("labels") or {}
    out: dict[str, Any] = {"Status": WEB_STATUS.get(phase, 2), "TaskId": task_id_of(obj)}
    if labels.get(RECORD_ID_LABEL):
        out["RecordId"] = labels[RECORD_ID_LABEL]
    return out
