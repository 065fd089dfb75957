"""Operator-wide defaults for what a task may leave out: the room server and the storage.

An admin sets them once (the chart's `defaults.room` and `defaults.storage`, as CAPSTAN_DEFAULT_*
env); a task that omits `spec.room.url` / `spec.room.credentialsSecretRef` / `spec.room.backend`,
or its storage (`spec.storage`, `spec.output.storage`), gets them. Default credentials are Secret
*names*: the Secret is looked up in the task's own namespace, like any Secret a task names, and
must opt in with `capstan.dev/use: "true"` there.

The task's spec is never changed: `effective_spec` computes what the worker gets, each time the
operator reads the spec. Pure: environment in, dicts out, no I/O.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from capstan.api import KindInfo
from capstan.api.common import RoomBackend, RoomSpec, StorageSpec

ROOM_VALUE = "chart value defaults.room"
STORAGE_VALUE = "chart value defaults.storage"


class TaskConfigError(Exception):
    """The task refers to something that is not there; the message names the field."""


@dataclass(frozen=True)
class RoomDefaults:
    """The room server tasks use when they name none (CAPSTAN_DEFAULT_ROOM_*)."""

    backend: str = RoomBackend.livekit.value  # also the backend of a task that names a URL but no backend
    url: str = ""
    secret: str = ""  # credentials Secret, looked up in the task's namespace


@dataclass(frozen=True)
class StorageDefaults:
    """The S3-compatible storage tasks use when they name none (CAPSTAN_DEFAULT_STORAGE_*)."""

    endpoint: str = ""
    bucket: str = ""
    region: str = "us-east-1"
    secure: bool = True
    secret: str = ""  # Secret with accessKey and secretKey, looked up in the task's namespace
    public_base_url: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.endpoint)

    def spec(self) -> dict[str, Any]:
        """The default storage as a task would write it (camelCase)."""
        out: dict[str, Any] = {"endpoint": self.endpoint, "bucket": self.bucket, "region": self.region,
                               "secure": self.secure, "credentialsSecretRef": {"name": self.secret}}
        if self.public_base_url:
            out["publicBaseUrl"] = self.public_base_url
        return out


@dataclass(frozen=True)
class TaskDefaults:
    room: RoomDefaults = field(default_factory=RoomDefaults)
    storage: StorageDefaults = field(default_factory=StorageDefaults)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> TaskDefaults:
        """Read and check the defaults; a half-given or malformed default stops the operator at start."""
        room = RoomDefaults(backend=env.get("CAPSTAN_DEFAULT_ROOM_BACKEND") or RoomBackend.livekit.value,
                            url=env.get("CAPSTAN_DEFAULT_ROOM_URL", ""),
                            secret=env.get("CAPSTAN_DEFAULT_ROOM_SECRET", ""))
        if room.backend not in {b.value for b in RoomBackend}:
            raise ValueError(f"CAPSTAN_DEFAULT_ROOM_BACKEND must be one of {', '.join(b.value for b in RoomBackend)}, "
                             f"not {room.backend!r}")
        if bool(room.url) != bool(room.secret):
            raise ValueError("CAPSTAN_DEFAULT_ROOM_URL and CAPSTAN_DEFAULT_ROOM_SECRET are given together")
        if room.url:
            _check(RoomSpec, {"url": room.url, "sdkAppId": 1, "roomId": 1,
                              "credentialsSecretRef": {"name": room.secret}}, "CAPSTAN_DEFAULT_ROOM")
        secure = env.get("CAPSTAN_DEFAULT_STORAGE_SECURE", "true").strip().lower()
        if secure not in ("true", "false", "1", "0"):
            raise ValueError(f"CAPSTAN_DEFAULT_STORAGE_SECURE must be true or false, not {secure!r}")
        storage = StorageDefaults(endpoint=env.get("CAPSTAN_DEFAULT_STORAGE_ENDPOINT", ""),
                                  bucket=env.get("CAPSTAN_DEFAULT_STORAGE_BUCKET", ""),
                                  region=env.get("CAPSTAN_DEFAULT_STORAGE_REGION") or "us-east-1",
                                  secure=secure in ("true", "1"),
                                  secret=env.get("CAPSTAN_DEFAULT_STORAGE_SECRET", ""),
                                  public_base_url=env.get("CAPSTAN_DEFAULT_STORAGE_PUBLIC_BASE_URL", ""))
        given = [bool(storage.endpoint), bool(storage.bucket), bool(storage.secret)]
        if any(given) and not all(given):
            raise ValueError("CAPSTAN_DEFAULT_STORAGE_ENDPOINT, _BUCKET and _SECRET are given together")
        if storage.configured:
            _check(StorageSpec, storage.spec(), "CAPSTAN_DEFAULT_STORAGE")
        return cls(room=room, storage=storage)


def _check(model: type[RoomSpec] | type[StorageSpec], value: dict[str, Any], env_prefix: str) -> None:
    """A default must be what a task could have written itself."""
    try:
        model.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{env_prefix}_*: {where}: {err['msg']}") from None


def _fill_room(room: dict[str, Any], defaults: RoomDefaults, strict: bool) -> None:
    backend = room.get("backend") or defaults.backend
    room["backend"] = backend
    if not room.get("url"):
        if not defaults.url:
            if strict:
                raise TaskConfigError("spec.room.url: required: this operator has no default room URL "
                                      f"(CAPSTAN_DEFAULT_ROOM_URL, {ROOM_VALUE}.url)")
            return
        if backend != defaults.backend:
            if strict:
                raise TaskConfigError(f"spec.room.url: required: the task's backend is {backend}, the operator's "
                                      f"default room URL is a {defaults.backend} server")
            return
        room["url"] = defaults.url
    if not room.get("credentialsSecretRef"):
        # The default Secret holds the default server's credentials: never sent to a server the task chose.
        if room["url"] == defaults.url and backend == defaults.backend and defaults.secret:
            room["credentialsSecretRef"] = {"name": defaults.secret}
        elif strict:
            why = ("this operator has no default room Secret" if not defaults.url else
                   "the operator's default room Secret is only used with its default room URL")
            raise TaskConfigError(f"spec.room.credentialsSecretRef: required: {why} "
                                  f"(CAPSTAN_DEFAULT_ROOM_SECRET, {ROOM_VALUE}.credentialsSecret)")


def _fill_storage(holder: dict[str, Any], field_path: str, defaults: StorageDefaults, strict: bool) -> None:
    if holder.get("storage"):
        return
    if defaults.configured:
        holder["storage"] = defaults.spec()
    elif strict:
        raise TaskConfigError(f"{field_path}: required: this operator has no default storage "
                              f"(CAPSTAN_DEFAULT_STORAGE_ENDPOINT/_BUCKET/_SECRET, {STORAGE_VALUE})")


def effective_spec(info: KindInfo, spec: Mapping[str, Any], defaults: TaskDefaults, *,
                   strict: bool = True) -> dict[str, Any]:
    """`spec` with the operator's defaults where the task left room server or storage out.

    strict: a field that has neither a value nor a default raises TaskConfigError naming it;
    otherwise it stays out (for readers that only need what is there, e.g. the outbox checks).
    """
    out = copy.deepcopy(dict(spec))
    if isinstance(out.get("room"), dict):
        _fill_room(out["room"], defaults.room, strict)
    if info.worker == "recorder":
        _fill_storage(out, "spec.storage", defaults.storage, strict)
    elif info.worker == "panorama":
        output = out.setdefault("output", {})
        _fill_storage(output, "spec.output.storage", defaults.storage, strict)
    return out


__all__ = ["RoomDefaults", "StorageDefaults", "TaskConfigError", "TaskDefaults", "effective_spec"]
