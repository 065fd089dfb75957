"""A PIN-protected Janus VideoRoom: the worker's credential is sent as the VideoRoom `pin` on the
listener's join and on every subscriber join, so such rooms can be recorded (it used to go as
`token`, which Janus ignores for PINs, and the join was refused)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from capstan.rooms.base import TrackKind, TrackPublished
from capstan.rooms.janus import JanusBackend, JanusError
from devstack.anchors import SyntheticAnchor
from devstack.rooms import RoomServer

pytestmark = [pytest.mark.stack, pytest.mark.timeout(60)]
PIN = "4321"


def test_pin_protected_room_is_joined_and_subscribed_with_the_pin(janus, room_name) -> None:
    server = RoomServer("janus", janus.janus_url, {"adminKey": janus.janus_admin_key, "roomPin": PIN},
                        host_address=janus.room_host_address)
    backend = JanusBackend(janus.janus_url, host_address=janus.room_host_address)

    async def scenario() -> None:
        await backend._admin({"request": "create", "room": room_name, "admin_key": janus.janus_admin_key,
                              "secret": janus.janus_admin_key, "pin": PIN, "publishers": 4, "permanent": False,
                              "is_private": True})
        anchor = None
        try:
            with pytest.raises(JanusError):  # without the PIN Janus refuses the join
                await backend.join(janus.janus_url, room_name, "intruder", "")
            anchor = await SyntheticAnchor(server, room_name, "alice", color=(220, 40, 40)).start()
            conn = await backend.join(janus.janus_url, room_name, "recorder", PIN)
            try:
                events = conn.events().__aiter__()
                while True:
                    event = await asyncio.wait_for(events.__anext__(), 10)
                    if isinstance(event, TrackPublished) and event.track.kind is TrackKind.VIDEO:
                        break
                frames = conn.subscribe(event.track).__aiter__()
                first = await asyncio.wait_for(frames.__anext__(), 10)  # the subscriber join carried the PIN
                assert first.frame.width == 320
            finally:
                await conn.leave()
        finally:
            if anchor is not None:
                await anchor.stop()
            with contextlib.suppress(Exception):
                await backend.destroy_room(room_name, janus.janus_admin_key)

    asyncio.run(asyncio.wait_for(scenario(), 45))
