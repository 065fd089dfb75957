"""The Janus room backend against a real Janus VideoRoom (devstack): events, decoded media, leave reasons."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from capstan.rooms import janus as janus_module
from capstan.rooms.base import (
    LeaveReason,
    Left,
    MediaId,
    RemoteTrack,
    RoomEvent,
    TimedFrame,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
)
from capstan.rooms.janus import JanusBackend, JanusConnection, JanusConnectionLost, RoomNotFound
from devstack.anchors import SyntheticAnchor
from devstack.rooms import RoomServer

from .conftest import JanusEnv

pytestmark = [pytest.mark.stack, pytest.mark.timeout(60)]

T = TypeVar("T")

ALICE = ("alice", (220, 40, 40), 440.0)
BOB = ("bob", (40, 60, 220), 1000.0)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(main())


def anchor(env: JanusEnv, room: str, who: tuple[str, tuple[int, int, int], float], **kw: Any) -> SyntheticAnchor:
    user, color, tone = who
    server = RoomServer("janus", env.url, {"adminKey": env.admin_key, "roomPin": ""}, host_address=env.host_address)
    return SyntheticAnchor(server, room, user, color=color, tone_hz=tone, **kw)


async def next_events(events: AsyncIterator[RoomEvent], want: Callable[[list[RoomEvent]], bool],
                      timeout: float = 10.0) -> list[RoomEvent]:
    seen: list[RoomEvent] = []

    async def collect() -> None:
        while not want(seen):
            seen.append(await events.__anext__())

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise AssertionError(f"events so far: {seen}") from None
    return seen


def published(events: list[RoomEvent]) -> set[tuple[str, MediaId, TrackKind]]:
    return {(e.track.user_id, e.track.media_id, e.track.kind) for e in events if isinstance(e, TrackPublished)}


async def frames(it: AsyncIterator[TimedFrame], n: int, timeout: float = 10.0) -> list[TimedFrame]:
    out: list[TimedFrame] = []

    async def collect() -> None:
        async for timed in it:
            out.append(timed)
            if len(out) >= n:
                return

    await asyncio.wait_for(collect(), timeout)
    return out


def mean_rgb(timed: TimedFrame) -> np.ndarray:
    return timed.frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)  # type: ignore[union-attr]


def dominant_hz(timed: list[TimedFrame]) -> float:
    chunks = []
    rate = 0
    for t in timed:
        frame = t.frame
        rate = frame.sample_rate  # type: ignore[union-attr]
        pcm = frame.to_ndarray()
        channels = len(frame.layout.channels)  # type: ignore[union-attr]
        chunks.append(pcm[0] if frame.format.is_planar else pcm.reshape(-1, channels)[:, 0])  # type: ignore[union-attr]
    signal = np.concatenate(chunks).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(np.argmax(spectrum))])


def track_of(events: list[RoomEvent], user: str, kind: TrackKind) -> RemoteTrack:
    return next(e.track for e in events
                if isinstance(e, TrackPublished) and e.track.user_id == user and e.track.kind is kind)


async def join(env: JanusEnv, room: str, identity: str = "recorder") -> JanusConnection:
    return await JanusBackend(env.url, host_address=env.host_address).join(env.url, room, identity, "")


@pytest.fixture
def room(janus_env: JanusEnv, room_name: str) -> Any:
    backend = JanusBackend(janus_env.url, host_address=janus_env.host_address)
    assert run(backend.create_room(room_name, janus_env.admin_key))
    yield room_name

    async def cleanup() -> None:
        with contextlib.suppress(RoomNotFound):
            await backend.destroy_room(room_name, janus_env.admin_key)

    run(cleanup())


def test_two_anchors_colours_and_tones(janus_env: JanusEnv, room: str) -> None:
    async def scenario() -> None:
        alice = await anchor(janus_env, room, ALICE).start()  # published before we join
        conn = await join(janus_env, room)
        bob = await anchor(janus_env, room, BOB).start()  # published after
        try:
            events = conn.events().__aiter__()
            seen = await next_events(events, lambda s: len(published(s)) == 4)
            assert published(seen) == {(u, MediaId.MAIN, k) for u in ("alice", "bob") for k in TrackKind}
            assert [e.track.user_id for e in seen[:2]] == ["alice", "alice"]  # already published: first
            for user, color, tone in (ALICE, BOB):
                video = await frames(conn.subscribe(track_of(seen, user, TrackKind.VIDEO)), 8)
                rgb = mean_rgb(video[-1])
                assert np.abs(rgb - np.array(color)).max() < 12, (user, rgb, color)
                assert video[-1].frame.width == 320 and video[-1].frame.height == 180  # type: ignore[union-attr]
                times = [t.time for t in video]
                assert times == sorted(times) and 0.2 < times[-1] - times[0] < 1.5, times
                audio = await frames(conn.subscribe(track_of(seen, user, TrackKind.AUDIO)), 30)
                assert abs(dominant_hz(audio[5:]) - tone) < 5, (user, dominant_hz(audio[5:]), tone)
                gaps = np.diff([t.time for t in audio])
                assert abs(float(np.median(gaps)) - 0.02) < 0.003, gaps
        finally:
            await bob.stop()
            await alice.stop()
            await conn.leave()
        rest = await next_events(events, lambda s: bool(s) and isinstance(s[-1], Left))
        assert rest[-1] == Left(LeaveReason.normal)

    run(scenario())


def test_anchor_that_stops_is_unpublished(janus_env: JanusEnv, room: str) -> None:
    async def scenario() -> None:
        alice = await anchor(janus_env, room, ALICE, aux_color=(30, 200, 30)).start()
        conn = await join(janus_env, room)
        try:
            events = conn.events().__aiter__()
            seen = await next_events(events, lambda s: len(published(s)) == 3)
            assert published(seen) == {("alice", MediaId.MAIN, TrackKind.VIDEO),
                                       ("alice", MediaId.MAIN, TrackKind.AUDIO),
                                       ("alice", MediaId.AUX, TrackKind.VIDEO)}
            aux = next(e.track for e in seen if isinstance(e, TrackPublished) and e.track.media_id is MediaId.AUX)
            it = conn.subscribe(aux)
            got = await frames(it, 3)
            assert np.abs(mean_rgb(got[-1]) - np.array((30, 200, 30))).max() < 12
            await alice.stop()
            gone = await next_events(events, lambda s: len(s) >= 3)
            assert {e.track for e in gone if isinstance(e, TrackUnpublished)} == {
                e.track for e in seen if isinstance(e, TrackPublished)}
            # the subscription ends with the track
            rest = await asyncio.wait_for(_drain(it), 5)
            assert rest < 50
        finally:
            await alice.stop()
            await conn.leave()

    run(scenario())


async def _drain(it: AsyncIterator[Any]) -> int:
    n = 0
    async for _ in it:
        n += 1
    return n


def test_kick_is_left_removed(janus_env: JanusEnv, room: str) -> None:
    async def scenario() -> None:
        conn = await join(janus_env, room)
        try:
            participants = await JanusBackend(janus_env.url).list_participants(room)
            assert [p["id"] for p in participants] == ["recorder"]
            await JanusBackend(janus_env.url).kick(room, "recorder", janus_env.admin_key)
            seen = await next_events(conn.events().__aiter__(), lambda s: bool(s) and isinstance(s[-1], Left))
            assert seen == [Left(LeaveReason.removed)]
        finally:
            await conn.leave()

    run(scenario())


def test_destroy_room_is_left_room_closed(janus_env: JanusEnv, room: str) -> None:
    async def scenario() -> None:
        conn = await join(janus_env, room)
        try:
            await JanusBackend(janus_env.url).destroy_room(room, janus_env.admin_key)
            seen = await next_events(conn.events().__aiter__(), lambda s: bool(s) and isinstance(s[-1], Left))
            assert seen == [Left(LeaveReason.room_closed)]
        finally:
            await conn.leave()

    run(scenario())


def test_join_missing_room_is_a_clear_error(janus_env: JanusEnv, room_name: str) -> None:
    with pytest.raises(RoomNotFound, match="426"):
        run(join(janus_env, room_name))


def test_create_room_twice_and_kick_unknown_user(janus_env: JanusEnv, room: str) -> None:
    backend = JanusBackend(janus_env.url)
    assert run(backend.create_room(room, janus_env.admin_key)) is False
    with pytest.raises(Exception, match="433|No such"):
        run(backend.kick(room, "nobody", janus_env.admin_key))


def test_unsubscribe_ends_the_iterator_and_closes_the_feed(janus_env: JanusEnv, room: str) -> None:
    async def scenario() -> None:
        alice = await anchor(janus_env, room, ALICE).start()
        conn = await join(janus_env, room)
        try:
            seen = await next_events(conn.events().__aiter__(), lambda s: len(published(s)) == 2)
            video, audio = track_of(seen, "alice", TrackKind.VIDEO), track_of(seen, "alice", TrackKind.AUDIO)
            v, a = conn.subscribe(video), conn.subscribe(audio)
            await frames(v, 2)
            await frames(a, 2)
            assert len(conn.feeds) == 1  # one PeerConnection carries the feed's audio and video
            await conn.unsubscribe(video)
            assert await asyncio.wait_for(_drain(v), 5) < 300
            assert len(await frames(a, 5)) == 5 and len(conn.feeds) == 1
            await conn.unsubscribe(audio)
            await asyncio.wait_for(_drain(a), 5)
            assert conn.feeds == []
            assert len(await frames(conn.subscribe(video), 2)) == 2  # subscribing again works
        finally:
            await alice.stop()
            await conn.leave()

    run(scenario())


def test_lost_session_raises_from_events(janus_env: JanusEnv, room: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(janus_module, "POLL_TIMEOUT", 2.0)  # Janus holds a long poll for 30 s

    async def scenario() -> None:
        conn = await join(janus_env, room)
        try:
            await conn.session.post("", {"janus": "destroy"})  # as if Janus had expired the session
            with pytest.raises(JanusConnectionLost):
                await next_events(conn.events().__aiter__(), lambda s: False)
        finally:
            await conn.leave()

    run(scenario())
