"""What the gateway is told: the SecretId/SecretKey pairs (from a Secret) and, per SdkAppId, the room
server its rooms live on; per storage Region, the S3 endpoint. Pure: parsing only, no I/O.

Keys Secret: one data key per SecretId, its value JSON or YAML:
    AKIDteamA: '{"secretKey": "...", "namespaces": ["team-a"], "sdkAppIds": [1400000000]}'
A pair may only create tasks in its first namespace and only read, change or stop tasks in its
namespaces, and only for its SdkAppIds.

Config file (YAML), e.g.:
    apps:
      - sdkAppId: 1400000000
        room: {backend: livekit, url: ws://livekit.rooms:7880, credentialsSecret: livekit-credentials}
        userSig: token         # token: the UserSig is the room server's access token for the robot
                               # operator: Capstan mints the robot's token; the UserSig is not used
    storage:
      vendors: [1]             # TRTC CloudStorage.Vendor values taken (1 = AWS, i.e. any S3 store)
      regions: {us-east-1: {endpoint: minio.storage:9000, secure: false}}
      default: {endpoint: s3.amazonaws.com, secure: true}   # for a region not listed (optional)
    rateLimit: {qps: 20}       # per SecretId and action, as TRTC's recording API
    admissionWaitSeconds: 3    # how long Create waits to learn whether the operator refused the task
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

USER_SIG_MODES = ("token", "operator")


class ConfigError(ValueError):
    """The keys Secret or the config file is not well-formed; the message says where."""


@dataclass(frozen=True)
class KeyBinding:
    secret_id: str
    secret_key: str
    namespaces: tuple[str, ...]
    sdk_app_ids: frozenset[int]

    @property
    def home_namespace(self) -> str:
        """Where this pair's new tasks are created."""
        return self.namespaces[0]


@dataclass(frozen=True)
class AppConfig:
    sdk_app_id: int
    room_backend: str
    room_url: str
    room_credentials_secret: str
    user_sig: str = "token"


@dataclass(frozen=True)
class StorageTarget:
    endpoint: str
    secure: bool = True
    public_base_url: str | None = None


@dataclass(frozen=True)
class GatewayConfig:
    apps: dict[int, AppConfig] = field(default_factory=dict)
    vendors: frozenset[int] = frozenset({1})
    regions: dict[str, StorageTarget] = field(default_factory=dict)
    default_storage: StorageTarget | None = None
    qps: float = 20.0
    admission_wait_seconds: float = 3.0
    max_skew_seconds: int = 300

    def storage_for(self, region: str) -> StorageTarget | None:
        return self.regions.get(region) or self.default_storage


def parse_keys(data: dict[str, str]) -> dict[str, KeyBinding]:
    """The pairs of the keys Secret (its data already Base64-decoded)."""
    out: dict[str, KeyBinding] = {}
    for secret_id, raw in sorted(data.items()):
        try:
            entry = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"keys[{secret_id}]: not JSON/YAML: {exc}") from None
        if not isinstance(entry, dict):
            raise ConfigError(f"keys[{secret_id}]: must be a mapping with secretKey, namespaces, sdkAppIds")
        key, namespaces, apps = entry.get("secretKey"), entry.get("namespaces"), entry.get("sdkAppIds")
        if not isinstance(key, str) or len(key) < 16:
            raise ConfigError(f"keys[{secret_id}].secretKey: a string of at least 16 characters is required")
        if not isinstance(namespaces, list) or not namespaces or not all(isinstance(n, str) for n in namespaces):
            raise ConfigError(f"keys[{secret_id}].namespaces: a non-empty list of namespaces is required")
        if not isinstance(apps, list) or not apps or not all(isinstance(a, int) for a in apps):
            raise ConfigError(f"keys[{secret_id}].sdkAppIds: a non-empty list of integers is required")
        out[secret_id] = KeyBinding(secret_id, key, tuple(namespaces), frozenset(apps))
    return out


def _target(where: str, raw: Any) -> StorageTarget:
    if not isinstance(raw, dict) or not isinstance(raw.get("endpoint"), str):
        raise ConfigError(f"{where}.endpoint: required")
    return StorageTarget(raw["endpoint"], bool(raw.get("secure", True)), raw.get("publicBaseUrl"))


def parse_config(text: str) -> GatewayConfig:
    raw = yaml.safe_load(text) or {}
    if not isinstance(raw, dict):
        raise ConfigError("the gateway config must be a mapping")
    apps: dict[int, AppConfig] = {}
    for i, app in enumerate(raw.get("apps") or []):
        room = app.get("room") or {}
        try:
            cfg = AppConfig(int(app["sdkAppId"]), str(room.get("backend", "livekit")), str(room["url"]),
                            str(room["credentialsSecret"]), str(app.get("userSig", "token")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"apps[{i}]: sdkAppId, room.url and room.credentialsSecret are required ({exc})") \
                from None
        if cfg.user_sig not in USER_SIG_MODES:
            raise ConfigError(f"apps[{i}].userSig: one of {', '.join(USER_SIG_MODES)}")
        apps[cfg.sdk_app_id] = cfg
    storage = raw.get("storage") or {}
    regions = {str(r): _target(f"storage.regions.{r}", t) for r, t in (storage.get("regions") or {}).items()}
    default = _target("storage.default", storage["default"]) if storage.get("default") else None
    return GatewayConfig(
        apps=apps, vendors=frozenset(int(v) for v in storage.get("vendors", [1])), regions=regions,
        default_storage=default, qps=float((raw.get("rateLimit") or {}).get("qps", 20)),
        admission_wait_seconds=float(raw.get("admissionWaitSeconds", 3)),
        max_skew_seconds=int(raw.get("maxSkewSeconds", 300)))


def dumps_key(secret_key: str, namespaces: list[str], sdk_app_ids: list[int]) -> str:
    """One value of the keys Secret (for tests and docs)."""
    return json.dumps({"secretKey": secret_key, "namespaces": namespaces, "sdkAppIds": sdk_app_ids})
