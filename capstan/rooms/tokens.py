"""Access tokens for room participants (the TRTC UserSig of the robot), minted from the room's
API key and secret. Pure: no network."""

from __future__ import annotations

import datetime as dt

from livekit import api

# A token is checked when the worker joins; a connected participant's token is refreshed by the
# server. Each attempt gets a fresh one, so a day is ample and a leaked token soon expires.
TOKEN_TTL = dt.timedelta(hours=24)


def recorder_token(api_key: str, api_secret: str, identity: str, room: str, ttl: dt.timedelta = TOKEN_TTL) -> str:
    """Hidden, subscribe-only: the recorder sees everyone and nobody sees it."""
    grants = api.VideoGrants(room_join=True, room=room, hidden=True, recorder=True, can_publish=False,
                             can_publish_data=False, can_subscribe=True)
    return (api.AccessToken(api_key, api_secret).with_identity(identity).with_ttl(ttl)
            .with_grants(grants).to_jwt())


def publisher_token(api_key: str, api_secret: str, identity: str, room: str, ttl: dt.timedelta = TOKEN_TTL) -> str:
    """A visible participant that publishes (stream push) and subscribes to nothing."""
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_publish_data=False,
                             can_subscribe=False)
    return (api.AccessToken(api_key, api_secret).with_identity(identity).with_ttl(ttl)
            .with_grants(grants).to_jwt())
