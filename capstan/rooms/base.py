"""The room backend port: everything a worker or the operator needs from a real-time room server.

TRTC concepts map onto it: a room (RoomId/StrRoomId) with anchors (user ids) that publish a
main (camera) and an aux (screen share) stream, each with an audio and/or a video track.

- **Joining** (:class:`RoomBackend.join`): the recorder joins hidden and subscribe-only, gets
  events (tracks already published come first) and decoded frames stamped with their capture
  wall-clock time, and learns why it left (:class:`LeaveReason`, TRTC event 302 LeaveCode).
- **Publishing** (:class:`RoomBackend.publish`): the pusher and the test anchors publish raw
  frames and, where the backend takes it (:attr:`Publisher.accepts_encoded_h264`), pre-encoded
  H.264 access units.
- **Credentials** (:class:`JoinSecret`): how a worker of a backend gets its join secret is the
  backend's decision (a token the operator mints, or a key of the room's Secret).
- **Room control** (:class:`RoomControl`): create a room, remove a participant (TRTC
  RemoveUser), close a room (TRTC DismissRoom).

This module is imported by the operator, whose image has neither PyAV nor a room SDK: it imports
neither at import time (frames are typed by name only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from capstan.media.naming import MediaId, TrackType

if TYPE_CHECKING:  # PyAV is a worker dependency, not the operator's
    import av

# The same vocabulary as the file names (seed 002): one enum each, shared with capstan.media.naming.
TrackKind = TrackType

__all__ = [
    "LEAVE_CODES", "AudioOutput", "JoinSecret", "LeaveReason", "Left", "MediaId", "Publisher", "RemoteTrack",
    "Role", "RoomBackend", "RoomConnection", "RoomConnectionLost", "RoomControl", "RoomEvent", "SecretKeyRef",
    "SecretReader", "TimedFrame", "TrackKind", "TrackPublished", "TrackUnpublished", "VideoOutput",
]


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
    """Why the worker's participant left the room: TRTC event 302's LeaveCode (seed 002)."""

    normal = "normal"  # 0: the recording ended normally (stop, deletion)
    removed = "removed"  # 1: removed from the room (RemoveUser / RemoveParticipant)
    room_closed = "room_closed"  # 2: the room was closed (DismissRoom / DeleteRoom)
    server_removed = "server_removed"  # 3: the server removed the robot on its own
    server_closed = "server_closed"  # 4: the server closed the room on its own (shutdown, empty room)
    idle = "idle"  # 99: no anchor for MaxIdleTime
    timeout = "timeout"  # 100: the connection was lost and did not come back in time
    replaced = "replaced"  # 101: the same user id entered the room again


LEAVE_CODES = {LeaveReason.normal: 0, LeaveReason.removed: 1, LeaveReason.room_closed: 2,
               LeaveReason.server_removed: 3, LeaveReason.server_closed: 4, LeaveReason.idle: 99,
               LeaveReason.timeout: 100, LeaveReason.replaced: 101}


class RoomConnectionLost(RuntimeError):
    """The room connection was lost and the backend could not get it back: the attempt fails over
    (302 LeaveCode 100 for this attempt). Raised from :meth:`RoomConnection.events`."""


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


# --- publishing ------------------------------------------------------------------------------


class VideoOutput(Protocol):
    """One published video track."""

    def write(self, frame: av.VideoFrame, time: float) -> None:
        """Send a raw frame captured at Unix time `time` (the caller paces)."""
        ...

    def write_encoded(self, data: bytes, *, keyframe: bool, time: float) -> bool:
        """Send one H.264 access unit (Annex B) as it is; only where the publisher accepts encoded H.264."""
        ...

    def keyframe_requested(self) -> bool:
        """Whether a subscriber asked for a keyframe since the last call (encoded outputs)."""
        ...


class AudioOutput(Protocol):
    """One published audio track."""

    # Seconds between write() and the sound leaving for the room (the backend's own queue): a
    # writer keeping sound in step with pictures writes it this much ahead of the pictures.
    latency: float

    async def write(self, frame: av.AudioFrame) -> None:
        """Send raw audio; returns when the backend has room for more (it paces the caller)."""
        ...


class Publisher(Protocol):
    """A participant that publishes. Tracks are added, then :meth:`start` publishes them; a backend
    with :attr:`adds_tracks_live` also publishes tracks added after :meth:`start` (a screen share)."""

    accepts_encoded_h264: bool
    adds_tracks_live: bool

    async def add_video(self, media: MediaId, width: int, height: int, *, encoded_h264: bool = False) -> VideoOutput:
        ...

    async def add_audio(self, media: MediaId, sample_rate: int = 48000, channels: int = 1) -> AudioOutput: ...

    async def remove(self, output: VideoOutput | AudioOutput) -> None:
        """Unpublish one track (subscribers see it unpublished)."""
        ...

    async def start(self) -> None: ...

    async def leave(self) -> None: ...


class RoomBackend(Protocol):
    async def join(self, url: str, room: str, identity: str, token: str, *, hidden: bool = True) -> RoomConnection:
        """Join `room` as `identity`; hidden participants are not seen by the anchors."""
        ...

    async def publish(self, url: str, room: str, identity: str, token: str) -> Publisher:
        """Join `room` as a visible participant `identity` that publishes."""
        ...


# --- credentials -----------------------------------------------------------------------------


class Role(StrEnum):
    """What a worker does in the room, which decides the rights its join secret grants."""

    recorder = "recorder"  # hidden, subscribe-only
    publisher = "publisher"  # visible, publishes, subscribes to nothing


SecretReader = Callable[[str, str], str]  # (secret name, key) -> value; raises KeyError with a message


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True)
class JoinSecret:
    """How a worker gets its join secret (env ``ROOM_TOKEN``): exactly one of a value the operator
    minted (it stores it in the task's own Secret) or a key of an existing Secret."""

    minted: str | None = None
    ref: SecretKeyRef | None = None


# --- room control ----------------------------------------------------------------------------


class RoomControl(Protocol):
    """Server-side room administration (TRTC RemoveUser / DismissRoom); every call times out."""

    async def create_room(self, room: str) -> bool:
        """Create `room`; False when it already existed."""
        ...

    async def remove_participant(self, room: str, identity: str) -> None: ...

    async def close_room(self, room: str) -> None:
        """Close `room`: every participant leaves with reason room_closed."""
        ...

    async def list_participants(self, room: str) -> list[str]: ...

    async def aclose(self) -> None: ...
