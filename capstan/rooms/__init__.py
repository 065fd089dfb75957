"""Room backends (LiveKit by default; Janus VideoRoom) behind the port in base.py."""

from __future__ import annotations

from capstan.rooms.base import RoomBackend


class BackendUnavailable(RuntimeError):
    """The task names a room backend this build cannot talk to."""


def backend_for(name: str) -> RoomBackend:
    if name == "janus":
        from capstan.rooms.janus import JanusBackend

        return JanusBackend()
    if name == "livekit":
        raise BackendUnavailable(
            "room backend livekit: the LiveKit adapter is not built yet (no LiveKit server can be built "
            "on the development machines to test it against; see docs/room-backends.md)")
    raise BackendUnavailable(f"unknown room backend {name!r}")
