"""What every TRTC request -> Capstan resource mapping shares: task names, the Plan (a resource and the
Secrets it owns), room, UserSig and storage fields. Pure: no I/O. The kinds' own mappings are in
recording.py, ingest.py, webrecord.py and scf.py.

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

from capstan.api.common import (
    API_VERSION,
    STR_ROOM_ID_PATTERN,
    TASK_ID_ANNOTATION,
    USER_ID_PATTERN,
)
from capstan.gateway import errors
from capstan.gateway.config import AppConfig, GatewayConfig
from capstan.gateway.errors import ApiError, invalid, missing, unsupported
from capstan.gateway.fields import Obj

GATEWAY_LABEL = "capstan.dev/gateway"
SDK_APP_ID_LABEL = "capstan.dev/sdk-app-id"
RECORD_ID_LABEL = "capstan.dev/record-id"
EXPIRED_HOUR_ANNOTATION = "capstan.dev/trtc-resource-expired-hour"  # CreateCloudRecording's ResourceExpiredHour
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
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return {"cloudrecordings": "CloudRecording", "streampushes": "StreamPush",
                "webrecordings": "WebRecording"}[self.plural]

    def body(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": self.kind,
                "metadata": {"name": self.names.resource,
                             "labels": {GATEWAY_LABEL: "trtc", SDK_APP_ID_LABEL: str(self.sdk_app_id), **self.labels},
                             "annotations": {TASK_ID_ANNOTATION: self.names.task_id, **self.annotations}},
                "spec": self.spec}

    def secret_bodies(self) -> list[dict[str, Any]]:
        return [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": name, "labels": {**SECRET_OPT_IN, GATEWAY_LABEL: "trtc"}},
                 "stringData": data} for name, data in self.secrets.items()]


def validated(model: type[BaseModel], spec: dict[str, Any]) -> dict[str, Any]:
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


def task_id_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str((obj.get("status") or {}).get("taskId") or (meta.get("annotations") or {}).get(TASK_ID_ANNOTATION)
               or str(meta.get("name", "")).removeprefix(NAME_PREFIX))


def basename(key: str) -> str:
    return key.rsplit("/", 1)[-1]
