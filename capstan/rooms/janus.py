"""Janus VideoRoom room backend: Janus' HTTP API (aiohttp) for signalling, aiortc for the media.

How the port maps onto Janus (see docs/room-backends.md for the spike behind it):

- **Joining.** A session with one VideoRoom handle that joins as a *publisher-type* participant
  and never publishes (the "listener"). Only publisher-type handles get the room's notifications:
  the ``publishers`` list on join, then ``publishers``, ``unpublished``, ``leaving``, ``kicked`` and
  ``destroyed``. This is TRTC's hidden recording robot. ``hidden`` is best-effort on Janus: a
  participant that never publishes is not in anybody's ``publishers`` list, but it is listed by
  ``listparticipants`` and, in rooms created with ``notify_joining``, announced by ``joining``.
- **Tracks.** Every audio/video stream of a publisher is a :class:`RemoteTrack`: the user id is
  the Janus participant ``id`` (the server runs with ``string_ids = true``), the media id comes
  from the stream's ``description`` (``main``/``aux``, default ``main``), the kind from its type,
  and the track id is ``<user id>/<publisher mid>``.
- **Subscribing.** One subscriber handle and one aiortc PeerConnection per publisher feed, carrying
  that feed's video streams and one audio stream (aiortc delivers frames only for the first audio
  m-line of a PeerConnection). Its decoded frames are fanned out to per-track iterators; frames of
  tracks nobody iterates are decoded and dropped. A later subscription to a stream the feed's
  PeerConnection does not carry (e.g. an aux stream added later) gets a further PeerConnection.
- **Frame times.** From the RTP timestamps, mapped to wall clock: the offset is the smallest
  ``receive time - media time`` seen so far (the least delayed frame), and it may creep up by
  ``CLOCK_DRIFT`` per media second so a sender clock slower than ours is followed. Gaps in the
  RTP timeline stay gaps, and a time is never later than the frame's receipt.
- **Leaving.** ``kicked`` (our ``leaving`` with reason ``kicked``) -> ``Left(removed)``; the room's
  ``destroyed`` -> ``Left(room_closed)``; our :meth:`leave` -> ``Left(normal)``. A lost Janus
  session (the server went away or expired it) is not a leave reason: ``events()`` raises
  :class:`JanusConnectionLost`.
- **ICE.** ``RTCConfiguration(iceServers=[])``: aiortc would otherwise fall back to a public STUN
  server. aioice offers a host candidate for every local address; when ``ROOM_HOST_ADDRESS`` (or
  the ``host_address`` argument) is set, our PeerConnections offer only that address. This is done
  by wrapping ``aioice.ice.get_host_addresses`` once, process-wide, with a filter that applies only
  inside our own ``setLocalDescription`` calls (a context variable), so other aiortc users in the
  process are unaffected. Why: on a machine whose room server sits behind a veth pair in a network
  namespace (the devstack), the other interfaces' addresses are useless candidates and would send
  connectivity checks elsewhere.

Room administration (the tests and the operator): :meth:`JanusBackend.create_room`,
:meth:`JanusBackend.kick` and :meth:`JanusBackend.destroy_room`. The VideoRoom ``admin_key``
guards ``create``; rooms are created with ``secret = admin_key`` so the same key kicks and destroys.

Every HTTP request has a timeout; the long poll that carries the events also keeps the session
alive, and an explicit keepalive is sent every ``KEEPALIVE_INTERVAL`` seconds besides.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from capstan.rooms.base import (
    LeaveReason,
    Left,
    MediaId,
    RemoteTrack,
    RoomConnectionLost,
    RoomEvent,
    TimedFrame,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
)
from capstan.rooms.fanout import FrameSink, TrackFrames, WallClock

log = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
REQUEST_TIMEOUT = 10.0  # one HTTP request, and a plugin answer that comes as an event
POLL_TIMEOUT = 45.0  # Janus answers a long poll within 30 s (a keepalive when nothing happened)
POLL_RETRIES = 3  # consecutive failed polls before the session counts as lost
KEEPALIVE_INTERVAL = 5.0  # Janus expires sessions after session_timeout (60 s; 15 s in the devstack)
# A failed earlier attempt of the same worker leaves its participant until Janus expires its session;
# a new attempt waits that long for the id to be free (TRTC kicks the old robot, LeaveCode 101).
DUPLICATE_ID_WAIT = 60.0
CONNECT_TIMEOUT = 15.0  # ICE + DTLS of one PeerConnection
NO_SUCH_FEED_RETRY = 5.0  # a feed exists only once its publisher's DTLS is up

# VideoRoom error codes
ERR_NO_SUCH_ROOM = 426
ERR_ROOM_EXISTS = 427
ERR_NO_SUCH_FEED = 428
ERR_NO_SUCH_USER = 433
ERR_ID_EXISTS = 436


class JanusError(RuntimeError):
    """Janus refused a request (``code`` is the Janus or VideoRoom error code, 0 if none)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"janus error {code}: {reason}" if code else f"janus: {reason}")
        self.code = code
        self.reason = reason


class RoomNotFound(JanusError):
    """The room does not exist on the Janus server."""


class JanusConnectionLost(JanusError, RoomConnectionLost):
    """The Janus session is gone (server unreachable, restarted, or the session expired)."""


def _error(code: int, reason: str) -> JanusError:
    if code == ERR_NO_SUCH_ROOM:
        return RoomNotFound(code, reason)
    return JanusError(code, reason)


# --------------------------------------------------------------------------------------------
# ICE: host candidates restricted to one address (see the module docstring)

_host_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "capstan_ice_host_addresses", default=None)
_filter_installed = False


def _install_host_address_filter() -> None:
    global _filter_installed
    if _filter_installed:
        return
    import aioice.ice

    original = aioice.ice.get_host_addresses

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        only = _host_addresses.get()
        return list(only) if only is not None else original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)

    aioice.ice.get_host_addresses = get_host_addresses
    _filter_installed = True


@contextlib.contextmanager
def restrict_host_addresses(address: str | None) -> Iterator[None]:
    """ICE candidates gathered inside this block (in this task) use only `address` (if given)."""
    if not address:
        yield
        return
    _install_host_address_filter()
    token = _host_addresses.set((address,))
    try:
        yield
    finally:
        _host_addresses.reset(token)


def host_address_from_env() -> str | None:
    return os.environ.get("ROOM_HOST_ADDRESS") or None


def new_peer_connection() -> Any:
    """An aiortc PeerConnection that never contacts a STUN/TURN server."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def set_local_description(pc: Any, description: Any, host_address: str | None) -> None:
    """setLocalDescription (which gathers all candidates) with the host-address restriction."""
    with restrict_host_addresses(host_address):
        await pc.setLocalDescription(description)


async def wait_connected(pc: Any, timeout: float = CONNECT_TIMEOUT) -> None:
    """Until the PeerConnection is connected; JanusError when it fails or takes too long."""
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            raise JanusError(0, f"PeerConnection {pc.connectionState}")
        if time.monotonic() > deadline:
            raise JanusError(0, f"PeerConnection not connected after {timeout:.0f} s ({pc.connectionState})")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Janus HTTP API


def _transaction() -> str:
    return secrets.token_hex(8)


class JanusSession:
    """One Janus session over the HTTP transport, with its long-poll event loop and keepalive."""

    def __init__(self, url: str, http: aiohttp.ClientSession, session_id: int) -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.id = session_id
        self.handles: dict[int, JanusHandle] = {}
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.lost: JanusConnectionLost | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @classmethod
    async def create(cls, url: str, *, poll: bool = True) -> JanusSession:
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        try:
            answer = await _post(http, url.rstrip("/"), {"janus": "create"})
            session = cls(url, http, int(answer["data"]["id"]))
        except BaseException:
            await http.close()
            raise
        if poll:
            session._tasks = [asyncio.create_task(session._poll()), asyncio.create_task(session._keepalive())]
        return session

    async def post(self, path: str, message: dict[str, Any]) -> dict[str, Any]:
        if self.lost is not None:
            raise self.lost
        return await _post(self.http, f"{self.url}/{self.id}{path}", message)

    async def attach(self, plugin: str = VIDEOROOM) -> JanusHandle:
        answer = await self.post("", {"janus": "attach", "plugin": plugin})
        handle = JanusHandle(self, int(answer["data"]["id"]))
        self.handles[handle.id] = handle
        return handle

    async def destroy(self) -> None:
        """Destroy the session on the server (best effort) and stop polling."""
        if self._closing:
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self.lost is None:
            with contextlib.suppress(Exception):
                await self.post("", {"janus": "destroy"})
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail(JanusConnectionLost(0, "session destroyed"))
        await self.http.close()

    def _fail(self, error: JanusConnectionLost) -> None:
        if self.lost is None:
            self.lost = error
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(error)
        self.pending.clear()
        for handle in self.handles.values():
            handle.events.put_nowait(None)

    async def _poll(self) -> None:
        failures = 0
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT)
        while True:
            try:
                async with self.http.get(f"{self.url}/{self.id}", params={"maxev": "10"}, timeout=timeout) as resp:
                    if resp.status == 404:  # Janus: no such session (expired or destroyed)
                        self._fail(JanusConnectionLost(458, "the session no longer exists on the server"))
                        return
                    if resp.status != 200:
                        raise JanusError(0, f"long poll: HTTP {resp.status}")
                    body = await resp.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried, then the session counts as lost
                failures += 1
                if failures >= POLL_RETRIES:
                    log.warning("janus session %s lost: %s", self.id, exc)
                    self._fail(JanusConnectionLost(0, f"long poll failed {failures} times: {exc}"))
                    return
                await asyncio.sleep(2 ** (failures - 1))
                continue
            failures = 0
            for msg in body if isinstance(body, list) else [body]:
                if msg.get("janus") == "error":
                    err = msg.get("error", {})
                    self._fail(JanusConnectionLost(int(err.get("code", 0)), str(err.get("reason", "error"))))
                    return
                if msg.get("janus") == "timeout":
                    self._fail(JanusConnectionLost(0, "session timed out on the server"))
                    return
                self._dispatch(msg)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("janus")
        if kind == "keepalive":
            return
        fut = self.pending.pop(str(msg.get("transaction", "")), None)
        if fut is not None and kind in ("event", "success", "error"):
            if not fut.done():
                fut.set_result(msg)
            return
        handle = self.handles.get(int(msg.get("sender", 0) or 0))
        if handle is not None:
            handle.events.put_nowait(msg)
            if kind == "detached":
                self.handles.pop(handle.id, None)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            try:
                await self.post("", {"janus": "keepalive"})
            except asyncio.CancelledError:
                raise
            except JanusConnectionLost as exc:
                self._fail(exc)
                return
            except Exception as exc:  # noqa: BLE001 - the long poll decides when the session is lost
                log.debug("janus keepalive failed: %s", exc)


async def _post(http: aiohttp.ClientSession, url: str, message: dict[str, Any]) -> dict[str, Any]:
    message = {**message, "transaction": message.get("transaction") or _transaction()}
    async with http.post(url, json=message) as resp:
        if resp.status != 200:
            raise JanusError(0, f"HTTP {resp.status} from {url}")
        answer: dict[str, Any] = await resp.json(content_type=None)
    if answer.get("janus") == "error":
        err = answer.get("error", {})
        code = int(err.get("code", 0))
        if code == 458:  # no such session
            raise JanusConnectionLost(code, str(err.get("reason", "")))
        raise JanusError(code, str(err.get("reason", "error")))
    return answer


def _plugin_data(msg: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = msg.get("plugindata", {}).get("data", {})
    if "error_code" in data or "error" in data:
        raise _error(int(data.get("error_code", 0)), str(data.get("error", "plugin error")))
    return data


class JanusHandle:
    """A plugin handle. Events without a pending transaction land in `events` (None: session gone)."""

    def __init__(self, session: JanusSession, handle_id: int) -> None:
        self.session = session
        self.id = handle_id
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request (create, destroy, kick, listparticipants...): its data."""
        answer = await self.session.post(f"/{self.id}", {"janus": "message", "body": body})
        return _plugin_data(answer)

    async def message(self, body: dict[str, Any], jsep: dict[str, Any] | None = None,
                      timeout: float = REQUEST_TIMEOUT) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """An asynchronous plugin request (join, publish, start, leave...): its event's data and jsep."""
        tx = _transaction()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.session.pending[tx] = fut
        msg: dict[str, Any] = {"janus": "message", "body": body, "transaction": tx}
        if jsep is not None:
            msg["jsep"] = jsep
        try:
            answer = await self.session.post(f"/{self.id}", msg)
            if answer.get("janus") != "ack":  # answered synchronously after all
                return _plugin_data(answer), answer.get("jsep")
            event = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise JanusError(0, f"no answer to {body.get('request')!r} within {timeout:.0f} s") from None
        finally:
            self.session.pending.pop(tx, None)
        if event.get("janus") == "error":
            err = event.get("error", {})
            raise _error(int(err.get("code", 0)), str(err.get("reason", "error")))
        return _plugin_data(event), event.get("jsep")

    async def detach(self) -> None:
        with contextlib.suppress(Exception):
            await self.session.post(f"/{self.id}", {"janus": "detach"})
        self.session.handles.pop(self.id, None)


# --------------------------------------------------------------------------------------------
# the room connection


def tracks_of(publisher: dict[str, Any]) -> dict[str, RemoteTrack]:
    """The audio/video tracks of a VideoRoom publisher entry, by publisher mid."""
    user_id = str(publisher["id"])
    out: dict[str, RemoteTrack] = {}
    for stream in publisher.get("streams", []):
        kind = stream.get("type")
        if kind not in ("audio", "video") or stream.get("disabled"):
            continue
        mid = str(stream["mid"])
        description = str(stream.get("description") or "main").lower()
        media = MediaId.AUX if description == "aux" else MediaId.MAIN
        out[mid] = RemoteTrack(user_id, media, TrackKind(kind), f"{user_id}/{mid}")
    return out


@dataclass
class _FeedSubscriber:
    """One subscriber handle + PeerConnection for (some streams of) one publisher feed."""

    conn: JanusConnection
    feed: str
    tracks: dict[str, RemoteTrack]  # by publisher mid: what this PeerConnection carries
    sinks: dict[str, list[FrameSink]] = field(default_factory=dict)  # by track id
    handle: JanusHandle | None = None
    pc: Any = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False

    def add(self, sink: FrameSink) -> None:
        self.sinks.setdefault(sink.track.track_id, []).append(sink)

    def remove(self, sink: FrameSink) -> None:
        sinks = self.sinks.get(sink.track.track_id, [])
        if sink in sinks:
            sinks.remove(sink)
        sink.end()

    def has_sinks(self) -> bool:
        return any(self.sinks.values())

    def end_track(self, track_id: str, error: BaseException | None = None) -> None:
        for sink in self.sinks.pop(track_id, []):
            sink.end(error)

    async def run(self) -> None:
        try:
            await self._start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the iterators
            log.warning("subscription to feed %s failed: %s", self.feed, exc)
            for track_id in list(self.sinks):
                self.end_track(track_id, exc)
            await self.close()

    async def _start(self) -> None:
        from aiortc import RTCSessionDescription

        conn = self.conn
        self.handle = await conn.session.attach()
        body = {"request": "join", "ptype": "subscriber", "room": conn.room, "private_id": conn.private_id,
                "streams": [{"feed": self.feed, "mid": mid} for mid in self.tracks]}
        if conn.pin:
            body["pin"] = conn.pin
        deadline = time.monotonic() + NO_SUCH_FEED_RETRY
        while True:
            try:
                data, jsep = await self.handle.message(body)
                break
            except JanusError as exc:
                if exc.code != ERR_NO_SUCH_FEED or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
        if jsep is None:
            raise JanusError(0, f"no offer from Janus for feed {self.feed}")
        by_sub_mid: dict[str, RemoteTrack] = {}
        for stream in data.get("streams", []):
            feed_mid = str(stream.get("feed_mid", ""))
            if feed_mid in self.tracks and str(stream.get("feed_id")) == self.feed:
                by_sub_mid[str(stream["mid"])] = self.tracks[feed_mid]
        self.pc = pc = new_peer_connection()

        @pc.on("track")
        def on_track(media: Any) -> None:
            mid = next((t.mid for t in pc.getTransceivers() if t.receiver.track is media), None)
            track = by_sub_mid.get(str(mid))
            self.tasks.append(asyncio.create_task(self._pump(media, track)))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
        answer = await pc.createAnswer()
        await set_local_description(pc, answer, conn.host_address)
        await self.handle.message({"request": "start"},
                                  {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})
        self.tasks.append(asyncio.create_task(self._watch_handle()))
        await wait_connected(pc)

    async def _pump(self, media: Any, track: RemoteTrack | None) -> None:
        from aiortc.mediastreams import MediaStreamError

        clock = WallClock()
        try:
            while True:
                frame = await media.recv()
                if track is None:
                    continue
                sinks = self.sinks.get(track.track_id)
                if not sinks:
                    continue
                media_time = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
                timed = TimedFrame(frame, clock.time(media_time, time.time()))
                for sink in sinks:
                    sink.put(timed)
        except MediaStreamError:
            if track is not None:
                self.end_track(track.track_id)

    async def _watch_handle(self) -> None:
        assert self.handle is not None
        while True:
            msg = await self.handle.events.get()
            if msg is None or msg.get("janus") in ("hangup", "detached"):
                reason = "session lost" if msg is None else msg.get("reason", msg.get("janus"))
                log.info("subscription to feed %s ended: %s", self.feed, reason)
                for track_id in list(self.sinks):
                    self.end_track(track_id)
                return
            data = msg.get("plugindata", {}).get("data", {})
            if data.get("videoroom") == "updated":
                inactive = {str(s.get("feed_mid")) for s in data.get("streams", []) if s.get("active") is False}
                for mid in inactive & set(self.tracks):
                    self.end_track(self.tracks[mid].track_id)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for track_id in list(self.sinks):
            self.end_track(track_id)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), REQUEST_TIMEOUT)
        if self.handle is not None and self.conn.session.lost is None:
            await self.handle.detach()
        self.conn._feed_closed(self)


class JanusConnection:
    """A joined VideoRoom (implements capstan.rooms.base.RoomConnection)."""

    def __init__(self, session: JanusSession, listener: JanusHandle, room: str, identity: str,
                 private_id: Any, host_address: str | None) -> None:
        self.session = session
        self.listener = listener
        self.room = room
        self.identity = identity
        self.private_id = private_id
        self.host_address = host_address
        self.pin = ""  # the room's PIN: subscriber joins of PIN-protected rooms need it too
        self.publishers: dict[str, dict[str, RemoteTrack]] = {}  # user id -> tracks by mid
        self.feeds: list[_FeedSubscriber] = []
        self.subscriptions: dict[int, tuple[FrameSink, _FeedSubscriber | None]] = {}
        self._events: asyncio.Queue[RoomEvent | JanusConnectionLost] = asyncio.Queue()
        self.left: LeaveReason | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self, publishers: list[dict[str, Any]]) -> None:
        for publisher in publishers:
            self._publisher(publisher)
        self._task = asyncio.create_task(self._follow())

    # --- events ------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[RoomEvent]:
        while True:
            event = await self._events.get()
            if isinstance(event, JanusConnectionLost):
                raise event
            yield event
            if isinstance(event, Left):
                return

    def _publisher(self, publisher: dict[str, Any]) -> None:
        user_id = str(publisher["id"])
        if user_id == self.identity:
            return
        new = tracks_of(publisher)
        old = self.publishers.get(user_id, {})
        for mid, track in old.items():
            if new.get(mid) != track:
                self._unpublished(track)
        for mid, track in new.items():
            if old.get(mid) != track:
                self._events.put_nowait(TrackPublished(track))
        self.publishers[user_id] = new

    def _gone(self, user_id: str) -> None:
        for track in self.publishers.pop(user_id, {}).values():
            self._unpublished(track)

    def _unpublished(self, track: RemoteTrack) -> None:
        for feed in self.feeds:
            feed.end_track(track.track_id)
        self._events.put_nowait(TrackUnpublished(track))

    async def _follow(self) -> None:
        while self.left is None:
            msg = await self.listener.events.get()
            if msg is None:
                if not self._closing:
                    lost = self.session.lost or JanusConnectionLost(0, "session lost")
                    await self._close_feeds()
                    self._events.put_nowait(lost)
                return
            data = msg.get("plugindata", {}).get("data", {})
            room_event = data.get("videoroom")
            if room_event == "destroyed":
                await self._left(LeaveReason.room_closed)
            elif room_event == "event":
                for publisher in data.get("publishers", []):
                    self._publisher(publisher)
                for key in ("unpublished", "leaving", "kicked"):
                    who = data.get(key)
                    if who is None:
                        continue
                    if str(who) == "ok" or str(who) == self.identity:
                        if key == "kicked" or data.get("reason") == "kicked":
                            await self._left(LeaveReason.removed)
                    else:
                        self._gone(str(who))
            elif msg.get("janus") == "detached" and not self._closing:
                await self._left(LeaveReason.removed)
            await self._prune_feeds()

    async def _prune_feeds(self) -> None:
        """Close the PeerConnections of feeds none of whose tracks is published any more."""
        for feed in list(self.feeds):
            published = {t.track_id for t in self.publishers.get(feed.feed, {}).values()}
            if not published & {t.track_id for t in feed.tracks.values()}:
                await feed.close()

    async def _left(self, reason: LeaveReason) -> None:
        if self.left is not None:
            return
        self.left = reason
        await self._close_feeds()
        self._events.put_nowait(Left(reason))
        if reason is not LeaveReason.normal:
            self._closing = True
            await self.session.destroy()

    # --- subscriptions -----------------------------------------------------------------------

    def subscribe(self, track: RemoteTrack) -> AsyncIterator[TimedFrame]:
        sink = FrameSink(track)
        frames = TrackFrames(sink)
        published = self.publishers.get(track.user_id, {})
        mid = next((m for m, t in published.items() if t.track_id == track.track_id), None)
        if self.left is not None or self.session.lost is not None:
            sink.end()
            return frames
        if mid is None:
            sink.end(JanusError(0, f"track {track.track_id} is not published in room {self.room!r}"))
            return frames
        feed = next((f for f in self.feeds if f.feed == track.user_id and mid in f.tracks and not f.closed), None)
        if feed is None:
            carried = {m for f in self.feeds if f.feed == track.user_id and not f.closed for m in f.tracks}
            wanted = {mid: track}
            audio = track.kind is TrackKind.AUDIO
            for m, t in published.items():
                if m in carried or m in wanted:
                    continue
                if t.kind is TrackKind.AUDIO:
                    if audio:
                        continue  # aiortc: one audio m-line per PeerConnection
                    audio = True
                wanted[m] = t
            feed = _FeedSubscriber(self, track.user_id, wanted)
            self.feeds.append(feed)
            feed.add(sink)
            feed.tasks.append(asyncio.create_task(feed.run()))
        else:
            feed.add(sink)
        self.subscriptions[id(frames)] = (sink, feed)
        return frames

    async def unsubscribe(self, track: RemoteTrack) -> None:
        """End every iterator of `track`; a feed nobody iterates any more is closed."""
        for key, (sink, feed) in list(self.subscriptions.items()):
            if sink.track.track_id != track.track_id:
                continue
            del self.subscriptions[key]
            if feed is not None:
                feed.remove(sink)
                if not feed.has_sinks():
                    await feed.close()
            else:
                sink.end()

    def _feed_closed(self, feed: _FeedSubscriber) -> None:
        if feed in self.feeds:
            self.feeds.remove(feed)
        for key, (_sink, f) in list(self.subscriptions.items()):
            if f is feed:
                del self.subscriptions[key]

    async def _close_feeds(self) -> None:
        await asyncio.gather(*(f.close() for f in list(self.feeds)), return_exceptions=True)

    # --- leaving -----------------------------------------------------------------------------

    async def leave(self) -> None:
        if self._closing:
            return
        self._closing = True
        await self._close_feeds()
        if self.session.lost is None and self.left is None:
            with contextlib.suppress(Exception):
                await self.listener.message({"request": "leave"}, timeout=5.0)
        if self.left is None:
            self.left = LeaveReason.normal
            self._events.put_nowait(Left(LeaveReason.normal))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.session.destroy()


# --------------------------------------------------------------------------------------------
# the backend


class JanusBackend:
    """capstan.rooms.base.RoomBackend for Janus VideoRoom (string ids), plus room administration."""

    def __init__(self, url: str | None = None, *, host_address: str | None = None) -> None:
        self.url = url or os.environ.get("JANUS_URL", "")
        self.host_address = host_address or host_address_from_env()

    async def join(self, url: str, room: str, identity: str, token: str, *, hidden: bool = True) -> JanusConnection:
        """Join `room` as the listener participant `identity` (see the module docstring on `hidden`).

        `token` is the room's PIN (the credential the operator gives a Janus worker): sent as the
        VideoRoom ``pin`` on the publisher and every subscriber join; empty for rooms without one.
        `hidden` is best-effort and implicit: the listener never publishes, so anchors never see it
        as a publisher, but ``listparticipants`` lists it and ``notify_joining`` rooms announce it.
        Raises RoomNotFound when the room does not exist, JanusError for other refusals.
        """
        deadline = asyncio.get_running_loop().time() + DUPLICATE_ID_WAIT
        while True:
            try:
                return await self._join(url, room, identity, token)
            except JanusError as exc:
                if exc.code != ERR_ID_EXISTS or asyncio.get_running_loop().time() > deadline:
                    raise
                log.info("participant %s is still in room %s (a dead attempt's session); waiting", identity, room)
                await asyncio.sleep(2.0)

    async def _enter(self, url: str, room: str, identity: str, token: str
                     ) -> tuple[JanusSession, JanusHandle, dict[str, Any]]:
        """A session whose VideoRoom handle joined `room` as publisher-type participant `identity`."""
        session = await JanusSession.create(url or self.url)
        try:
            handle = await session.attach()
            body: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": room, "id": identity,
                                    "display": identity}
            if token:
                body["pin"] = token
            data, _ = await handle.message(body)
            if data.get("videoroom") != "joined":
                raise JanusError(0, f"unexpected answer to join: {data}")
        except BaseException:
            await session.destroy()
            raise
        return session, handle, data

    async def _join(self, url: str, room: str, identity: str, token: str) -> JanusConnection:
        session, listener, data = await self._enter(url, room, identity, token)
        conn = JanusConnection(session, listener, room, identity, data.get("private_id"), self.host_address)
        conn.pin = token
        conn.start(data.get("publishers", []))
        return conn

    async def publish(self, url: str, room: str, identity: str, token: str) -> Any:
        """Join `room` as publisher `identity` (capstan.rooms.janus_publisher.JanusPublisher)."""
        from capstan.rooms.janus_publisher import JanusPublisher

        session, handle, _ = await self._enter(url, room, identity, token)
        return JanusPublisher(session, handle, self.host_address)

    async def _admin(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self.url:
            raise JanusError(0, "no Janus URL (JANUS_URL)")
        session = await JanusSession.create(self.url, poll=False)
        try:
            handle = await session.attach()
            return await handle.request(body)
        finally:
            await session.destroy()

    async def create_room(self, room: str, admin_key: str, *, publishers: int = 16,
                          description: str | None = None) -> bool:
        """Create a VideoRoom (secret = admin_key); False if it already existed."""
        body: dict[str, Any] = {"request": "create", "room": room, "admin_key": admin_key, "secret": admin_key,
                                "publishers": publishers, "permanent": False, "is_private": True,
                                "notify_joining": True, "description": description or room}
        try:
            await self._admin(body)
        except JanusError as exc:
            if exc.code == ERR_ROOM_EXISTS:
                return False
            raise
        return True

    async def kick(self, room: str, user_id: str, admin_key: str) -> None:
        """Remove a participant (TRTC RemoveUser); RoomNotFound / JanusError(433) if there is none."""
        await self._admin({"request": "kick", "room": room, "id": user_id, "secret": admin_key})

    async def destroy_room(self, room: str, admin_key: str) -> None:
        """Close the room (TRTC DismissRoom); every participant gets ``destroyed``."""
        await self._admin({"request": "destroy", "room": room, "secret": admin_key, "permanent": False})

    async def list_participants(self, room: str) -> list[dict[str, Any]]:
        data = await self._admin({"request": "listparticipants", "room": room})
        participants: list[dict[str, Any]] = data.get("participants", [])
        return participants


class JanusControl:
    """capstan.rooms.base.RoomControl for Janus VideoRoom: the admin key creates rooms (with
    ``secret = admin_key``), so the same key removes participants and destroys them."""

    def __init__(self, url: str, admin_key: str) -> None:
        self.backend = JanusBackend(url)
        self.admin_key = admin_key

    async def create_room(self, room: str) -> bool:
        return await self.backend.create_room(room, self.admin_key)

    async def remove_participant(self, room: str, identity: str) -> None:
        await self.backend.kick(room, identity, self.admin_key)

    async def close_room(self, room: str) -> None:
        await self.backend.destroy_room(room, self.admin_key)

    async def list_participants(self, room: str) -> list[str]:
        return [str(p["id"]) for p in await self.backend.list_participants(room)]

    async def aclose(self) -> None:
        """Nothing to close: every request opens and destroys its own session."""
