"""Room backends (LiveKit by default; Janus VideoRoom) behind the port in base.py.

Each backend is described here by a :class:`Backend`: how its workers get their join secret, and
where its adapter lives. The adapters (and their SDKs) are imported only when a worker joins or a
control client is made, so the operator needs neither PyAV nor a room SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from capstan.rooms.base import JoinSecret, Role, RoomBackend, RoomControl, SecretKeyRef, SecretReader

DEFAULT_BACKEND = "livekit"


class BackendUnavailable(RuntimeError):
    """The task names a room backend this build cannot talk to."""


class Backend(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def credential_keys(self) -> tuple[str, ...]:
        """Keys the room's credentials Secret (spec.room.credentialsSecretRef) holds for this backend."""
        ...

    @property
    def control_keys(self) -> tuple[str, ...]:
        """Keys of that Secret that let the operator administer the room (remove a dead attempt's
        identity at failover); optional: without them the room lets the identity expire."""
        ...

    def join_secret(self, role: Role, room: str, identity: str, credentials_secret: str,
                    read: SecretReader) -> JoinSecret:
        """How a worker joining `room` as `identity` gets its secret; `read` raises KeyError."""
        ...

    def connector(self, **options: Any) -> RoomBackend: ...

    def control(self, url: str, credentials: Mapping[str, str]) -> RoomControl: ...


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class LiveKit:
    """LiveKit: the operator mints an access token per attempt from the room's API key and secret."""

    name: str = "livekit"
    credential_keys: tuple[str, ...] = ("apiKey", "apiSecret")
    control_keys: tuple[str, ...] = ("apiKey", "apiSecret")

    def join_secret(self, role: Role, room: str, identity: str, credentials_secret: str,
                    read: SecretReader) -> JoinSecret:
        from capstan.rooms import tokens

        key, secret = (read(credentials_secret, k) for k in self.credential_keys)
        mint = tokens.recorder_token if role is Role.recorder else tokens.publisher_token
        return JoinSecret(minted=mint(key, secret, identity, room))

    def connector(self, **options: Any) -> RoomBackend:
        backend: RoomBackend = _load("capstan.rooms.livekit:LiveKitBackend")(**options)
        return backend

    def control(self, url: str, credentials: Mapping[str, str]) -> RoomControl:
        control: RoomControl = _load("capstan.rooms.livekit:LiveKitControl")(
            url, credentials["apiKey"], credentials["apiSecret"])
        return control


@dataclass(frozen=True)
class Janus:
    """Janus VideoRoom: rooms are guarded by an optional PIN (key ``roomPin``); the admin key
    (``adminKey``) creates, kicks from and destroys rooms."""

    name: str = "janus"
    credential_keys: tuple[str, ...] = ("roomPin",)
    control_keys: tuple[str, ...] = ("adminKey",)

    def join_secret(self, role: Role, room: str, identity: str, credentials_secret: str,
                    read: SecretReader) -> JoinSecret:
        return JoinSecret(ref=SecretKeyRef(credentials_secret, "roomPin", optional=True))

    def connector(self, **options: Any) -> RoomBackend:
        backend: RoomBackend = _load("capstan.rooms.janus:JanusBackend")(**options)
        return backend

    def control(self, url: str, credentials: Mapping[str, str]) -> RoomControl:
        control: RoomControl = _load("capstan.rooms.janus:JanusControl")(url, credentials["adminKey"])
        return control


BACKENDS: dict[str, Backend] = {b.name: b for b in (LiveKit(), Janus())}


def backend_info(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendUnavailable(f"unknown room backend {name!r} (known: {', '.join(sorted(BACKENDS))})") from None


def backend_for(name: str, **options: Any) -> RoomBackend:
    """The adapter a worker joins rooms with."""
    return backend_info(name).connector(**options)


def control_for(name: str, url: str, credentials: Mapping[str, str]) -> RoomControl:
    """A room administration client (the operator at failover, tests, the demo, the REST gateway)."""
    return backend_info(name).control(url, credentials)
