"""Failover helpers with I/O: tell the room a dead attempt's identity has left.

A SIGKILLed recorder never says goodbye; the room keeps its identity until its session expires
(Janus: session_timeout), and the next attempt, joining as the same identity, waits for that. The
operator removes the identity through the room port when the task's credentials Secret carries the
backend's control keys (`Backend.control_keys`); otherwise the next attempt waits as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from capstan import rooms
from capstan.rooms.base import SecretReader

log = logging.getLogger(__name__)
REMOVE_TIMEOUT = 3.0  # the next attempt waits for this; the room's own expiry is the fallback


def remove_dead_identity(spec: dict[str, Any], read: SecretReader, identity_field: str = "recorderUserId") -> str:
    """Remove the task's room identity (the dead attempt's); returns what happened, for the log."""
    room = spec.get("room") or {}
    identity = spec.get(identity_field)
    if not room or not identity:
        return "no room identity"
    room_name = str(room["roomId"]) if room.get("roomId") is not None else str(room.get("strRoomId"))
    try:
        backend = rooms.backend_info(room.get("backend", rooms.DEFAULT_BACKEND))
        secret = (room.get("credentialsSecretRef") or {}).get("name", "")
        credentials = {k: read(secret, k) for k in backend.control_keys}
    except (KeyError, rooms.BackendUnavailable) as exc:
        return f"not removed (no control keys: {exc})"

    async def remove() -> None:
        control = rooms.control_for(backend.name, room["url"], credentials)
        try:
            await asyncio.wait_for(control.remove_participant(room_name, identity), REMOVE_TIMEOUT)
        finally:
            await asyncio.wait_for(control.aclose(), REMOVE_TIMEOUT)

    try:
        asyncio.run(remove())
    except Exception as exc:  # noqa: BLE001 - already gone, or the room is unreachable: the join waits
        return f"not removed ({type(exc).__name__}: {exc})"[:300]
    return "removed"
