"""The stack's room servers as tests and the demo use them, one interface for both backends: where a
task's `spec.room` points, the room's credentials Secret, participant tokens, room control and
synthetic anchors. Backend differences stay here and behind capstan.rooms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capstan import rooms
from capstan.rooms.base import Publisher, Role, RoomBackend, RoomControl
from devstack.stack import StackEnv

BACKENDS = ("livekit", "janus")


@dataclass
class RoomServer:
    name: str
    url: str
    credentials: dict[str, str]  # the room's credentials Secret, as the backend wants it
    host_address: str | None = None

    @classmethod
    def from_stack(cls, name: str, env: StackEnv) -> RoomServer:
        if name == "livekit":
            if env.livekit_error or not env.livekit_api_key or not env.livekit_api_secret:
                raise RuntimeError(f"LiveKit is not running: {env.livekit_error or 'no API key'}")
            return cls(name, env.livekit_url, {"apiKey": env.livekit_api_key, "apiSecret": env.livekit_api_secret})
        if name == "janus":
            if env.janus_error:
                raise RuntimeError(f"Janus is not running: {env.janus_error}")
            return cls(name, env.janus_url, {"adminKey": env.janus_admin_key, "roomPin": ""},
                       host_address=env.room_host_address)
        raise ValueError(f"unknown room backend {name!r}")

    @property
    def info(self) -> rooms.Backend:
        return rooms.backend_info(self.name)

    def connector(self) -> RoomBackend:
        options = {"host_address": self.host_address} if self.host_address else {}
        return self.info.connector(**options)

    def control(self) -> RoomControl:
        return self.info.control(self.url, self.credentials)

    def token(self, room: str, identity: str, role: Role = Role.publisher) -> str:
        """The join secret a participant of `room` uses, exactly as a worker would get it."""
        join = self.info.join_secret(role, room, identity, "room-credentials",
                                     lambda _name, key: self.credentials[key])
        if join.minted is not None:
            return join.minted
        assert join.ref is not None
        return self.credentials.get(join.ref.key, "")

    async def publisher(self, room: str, identity: str) -> Publisher:
        return await self.connector().publish(self.url, room, identity, self.token(room, identity))

    def secret_data(self) -> dict[str, str]:
        """stringData of the `spec.room.credentialsSecretRef` Secret for tasks in rooms of this server."""
        keys = set(self.info.credential_keys) | set(self.info.control_keys)  # control keys: failover kicks
        return {k: v for k, v in self.credentials.items() if k in keys}

    def room_spec(self, room: str, sdk_app_id: int, secret: str = "room-credentials") -> dict[str, Any]:
        return {"backend": self.name, "url": self.url, "sdkAppId": sdk_app_id, "strRoomId": room,
                "credentialsSecretRef": {"name": secret}}

    def worker_env(self) -> dict[str, str]:
        """Extra env a worker needs to reach this server from the stack's pods (operator_factory kwargs)."""
        return {"CAPSTAN_WORKER_ENV_ROOM_HOST_ADDRESS": self.host_address} if self.host_address else {}
