"""What a worker Pod needs besides its identity: room URL and access token, storage and Redis
settings. Secrets reach the Pod only as secretKeyRefs, never as literal values in the Pod spec.

The operator checks here what only it can check (the referenced Secrets and keys exist) so a
mistake ends the task in `failed` with a message naming the field, instead of a Pod stuck in
CreateContainerConfigError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from capstan import rooms
from capstan.api import KindInfo
from capstan.net import urlpolicy
from capstan.operator import children
from capstan.operator.defaults import TaskConfigError
from capstan.rooms.base import Role, SecretReader

# A task may use a Secret only when the Secret says so: otherwise anyone who may create a task could
# make its worker send any Secret of the namespace to a room server of their choosing.
SECRET_OPT_IN_LABEL = "capstan.dev/use"


class SecretNotFound(KeyError):
    """The referenced Secret does not exist."""


class SecretNotOptedIn(KeyError):
    """The referenced Secret exists but does not carry `capstan.dev/use: "true"`."""


def unavailable_message(namespace: str, name: str) -> str:
    """One message for "missing" and "not opted in", so a failed task does not tell its author
    which Secrets exist."""
    return f'Secret {namespace}/{name} not found or not labelled {SECRET_OPT_IN_LABEL}: "true"'


@dataclass
class WorkerEnv:
    env: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[dict[str, Any]] = field(default_factory=list)  # per-task Secrets to create or update


def token_secret_name(info: KindInfo, task: str) -> str:
    return children.service_account_name(info, task).removesuffix("-worker") + "-token"


def _check(read: SecretReader, field_path: str, name: str, key: str) -> str:
    try:
        return read(name, key)
    except KeyError as exc:
        raise TaskConfigError(f"{field_path}: {exc.args[0]}") from None


def _check_opt_in(read: SecretReader, field_path: str, name: str, key: str) -> None:
    """For a key that may be missing: the Secret, if there, must still have opted in."""
    try:
        read(name, key)
    except SecretNotOptedIn as exc:
        raise TaskConfigError(f"{field_path}: {exc.args[0]}") from None
    except KeyError:
        pass


def _value(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def _room_env(info: KindInfo, body: dict[str, Any], read: SecretReader, out: WorkerEnv) -> None:
    spec, name = body["spec"], body["metadata"]["name"]
    room = spec["room"]
    room_name = str(room["roomId"]) if room.get("roomId") is not None else str(room["strRoomId"])
    backend_name = room.get("backend", rooms.DEFAULT_BACKEND)
    out.env += [_value("ROOM_BACKEND", backend_name), _value("ROOM_URL", room["url"]),
                _value("ROOM_NAME", room_name)]
    user_field, identity_field, role = (("recorderTokenSecretRef", "recorderUserId", Role.recorder)
                                        if info.worker == "recorder" else ("userTokenSecretRef", "userId",
                                                                           Role.publisher))
    given = spec.get(user_field)
    if given:
        _check(read, f"spec.{user_field}", given["name"], given["key"])
        out.env.append(children.secret_env("ROOM_TOKEN", given["name"], given["key"]))
        return
    try:
        backend = rooms.backend_info(backend_name)
    except rooms.BackendUnavailable as exc:
        raise TaskConfigError(f"spec.room.backend: {exc}") from None
    creds = room["credentialsSecretRef"]["name"]
    try:
        join = backend.join_secret(role, room_name, spec[identity_field], creds, read)
    except KeyError as exc:
        raise TaskConfigError(f"spec.room.credentialsSecretRef: {exc.args[0]}") from None
    if join.ref is not None:  # a Secret the kubelet reads for the worker: it must have opted in too
        (_check_opt_in if join.ref.optional else _check)(read, "spec.room.credentialsSecretRef", join.ref.name,
                                                         join.ref.key)
        out.env.append(children.secret_env("ROOM_TOKEN", join.ref.name, join.ref.key, optional=join.ref.optional))
        return
    assert join.minted is not None
    secret_name = token_secret_name(info, name)
    out.secrets.append({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": secret_name, "namespace": body["metadata"]["namespace"],
                     "labels": children.task_labels(info, name),
                     "ownerReferences": [children.owner_reference(body)]},
        "stringData": {"token": join.minted},
    })
    out.env.append(children.secret_env("ROOM_TOKEN", secret_name, "token"))


def _storage_env(storage: dict[str, Any], field_path: str, read: SecretReader, out: WorkerEnv) -> None:
    creds = storage["credentialsSecretRef"]["name"]
    for key in ("accessKey", "secretKey"):
        _check(read, f"{field_path}.credentialsSecretRef", creds, key)
    out.env += [
        _value("S3_ENDPOINT", storage["endpoint"]), _value("S3_BUCKET", storage["bucket"]),
        _value("S3_REGION", storage.get("region", "us-east-1")),
        _value("S3_SECURE", "1" if storage.get("secure", True) else "0"),
        children.secret_env("S3_ACCESS_KEY", creds, "accessKey"),
        children.secret_env("S3_SECRET_KEY", creds, "secretKey"),
    ]
    if storage.get("publicBaseUrl"):  # the worker's spec may not hold it (the operator's default storage)
        out.env.append(_value("S3_PUBLIC_BASE_URL", storage["publicBaseUrl"]))


def worker_env(info: KindInfo, body: dict[str, Any], read: SecretReader) -> WorkerEnv:
    """Env and per-task Secrets for the worker of `body`, whose spec has the operator's defaults
    filled in (`defaults.effective_spec`); raises TaskConfigError."""
    spec = body["spec"]
    out = WorkerEnv()
    if "room" in spec:
        _room_env(info, body, read, out)
    if "storage" in spec:
        _storage_env(spec["storage"], "spec.storage", read, out)
    output = spec.get("output") or {}
    if "storage" in output:
        _storage_env(output["storage"], "spec.output.storage", read, out)
    for env_name, field_path, ref in (("REDIS_URL", "spec.redisSecretRef", spec.get("redisSecretRef")),
                                      ("HLS_ENCRYPT_KEY", "spec.output.encryptKeySecretRef",
                                       output.get("encryptKeySecretRef"))):
        if ref:
            _check(read, field_path, ref["name"], ref["key"])
            out.env.append(children.secret_env(env_name, ref["name"], ref["key"]))
    # Workers fetch tenant URLs too (the pusher's source): under the operator's own URL policy.
    for name in (urlpolicy.ENV_ALLOW_CIDRS, urlpolicy.ENV_ALLOW_HOSTS, urlpolicy.ENV_CLUSTER_CIDRS):
        if os.environ.get(name) is not None:
            out.env.append(_value(name, os.environ[name]))
    signing = (spec.get("callback") or {}).get("signingKeySecretRef")
    if signing:  # read at delivery time (a missing key is retried there); refused now if not opted in
        _check_opt_in(read, "spec.callback.signingKeySecretRef", signing["name"], signing["key"])
    return out
