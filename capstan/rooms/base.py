"""The room backend port: what a worker needs from a real-time room server.

TRTC concepts map onto it: a room (RoomId/StrRoomId) with anchors (user ids) that publish a
main (camera) and an aux (screen share) stream, each with an audio and/or a video track. The
recorder joins as a hidden participant, subscribes to tracks, receives decoded frames, and learns
when it was removed (RemoveUser) or the room closed. LiveKit is the default backend; Janus
VideoRoom is the one this machine can run (see docs/room-backends.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import av

from capstan.media.naming import MediaId, TrackType

# The same vocabulary as the file names (seed 002): one enum each, shared with capstan.media.naming.
TrackKind = TrackType


@dataclass(frozen=True)
class RemoteTrack:
    """One published track of one anchor."""

    user_id: str
    media_id: MediaId
    kind: TrackKind
    track_id: str  # backend-specific handle, stable while the track is published


@dataclass(frozen=True)
class TimedFrame:
    """A decoded frame and the wall-clock time (Unix seconds) it was captured or received."""

    frame: av.VideoFrame | av.AudioFrame
    time: float


class LeaveReason(StrEnum):
    """Why the worker's participant left the room (TRTC event 302 LeaveCode)."""

    normal = "normal"  # 0: we stopped
    removed = "removed"  # 1: RemoveUser / kicked by the server
    room_closed = "room_closed"  # 2: the room was closed
    idle = "idle"  # 99: no anchor for MaxIdleTime
    replaced = "replaced"  # 101: the same user id joined again


LEAVE_CODES = {LeaveReason.normal: 0, LeaveReason.removed: 1, LeaveReason.room_closed: 2,
               LeaveReason.idle: 99, LeaveReason.replaced: 101}


@dataclass(frozen=True)
class TrackPublished:
    track: RemoteTrack


@dataclass(frozen=True)
class TrackUnpublished:
    track: RemoteTrack


@dataclass(frozen=True)
class Left:
    """Our participant is out of the room; nothing more will arrive."""

    reason: LeaveReason


RoomEvent = TrackPublished | TrackUnpublished | Left


class RoomConnection(Protocol):
    """A joined room. Events come in order; tracks already published when we joined come first."""

    def events(self) -> AsyncIterator[RoomEvent]: ...

    def subscribe(self, track: RemoteTrack) -> AsyncIterator[TimedFrame]:
        """Decoded frames of one track until it is unpublished or unsubscribed."""
        ...

    async def unsubscribe(self, track: RemoteTrack) -> None: ...

    async def leave(self) -> None: ...


class RoomBackend(Protocol):
    async def join(self, url: str, room: str, identity: str, token: str, *, hidden: bool = True) -> RoomConnection:
        """Join `room` as `identity`; hidden participants are not seen by the anchors."""
        ...
