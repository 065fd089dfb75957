"""A real Janus VideoRoom for the room tests: the devstack's (the `janus` fixture of
devstack/pytest_plugin.py), or one named by CAPSTAN_TEST_JANUS_URL (+ JANUS_ADMIN_KEY,
ROOM_HOST_ADDRESS) for a Janus run by hand."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class JanusEnv:
    url: str
    admin_key: str
    host_address: str | None


@pytest.fixture(scope="session")
def janus_env(request: pytest.FixtureRequest) -> JanusEnv:
    url = os.environ.get("CAPSTAN_TEST_JANUS_URL")
    if url:
        return JanusEnv(url, os.environ.get("JANUS_ADMIN_KEY", ""), os.environ.get("ROOM_HOST_ADDRESS") or None)
    stack = request.getfixturevalue("janus")  # devstack: fails with the reason when Janus cannot run
    return JanusEnv(stack.janus_url, stack.janus_admin_key, stack.room_host_address)


@pytest.fixture
def room_name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"
