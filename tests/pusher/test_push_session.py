"""The push session against the real room servers, in-process (no operator): what a subscriber
receives, pass-through or re-encode, resume positions, and how bad sources fail."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from capstan.api.streampush import StreamPushSpec
from capstan.net.urlpolicy import UrlPolicy
from capstan.pusher.session import PushSession
from capstan.worker.base import WorkerContext
from devstack import pushmedia

from .conftest import Seen, assert_in_sync, watch

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]
LOOPBACK_ALLOWED = UrlPolicy.from_env({"CAPSTAN_URL_ALLOW_CIDRS": "127.0.0.0/8"})


class FakeWorker:
    """The parts of capstan.worker.base.Worker a session uses, recorded."""

    def __init__(self, attempt: int = 1) -> None:
        self.ctx = WorkerContext(plural="streampushes", name="p", namespace="ns", task_id="t-1", attempt=attempt,
                                 pod_name="p-spush-a1", work_dir=__import__("pathlib").Path("/tmp"))
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.reports: list[dict[str, Any]] = []
        self.events: list[tuple[int, dict[str, Any]]] = []

    def report(self, **status: Any) -> None:
        self.reports.append(status)

    def emit(self, event_type: int, payload: dict[str, Any]) -> None:
        self.events.append((event_type, payload))


def session(server: Any, room: str, src: str, worker: FakeWorker, **spec: Any) -> PushSession:
    body = {"videoSrc": src, "room": server.room_spec(room, 1400000000), "userId": "pusher", **spec}
    return PushSession(worker, StreamPushSpec.model_validate(body), server.connector(), room_url=server.url,
                       room_name=room, room_token=server.token(room, "pusher"), policy=LOOPBACK_ALLOWED,
                       redis_url=spec.get("_redis"))


async def push_and_watch(server: Any, room: str, s: PushSession, seconds: float) -> tuple[int, Any]:
    control = server.control()
    await control.create_room(room)
    await control.aclose()
    pushing = asyncio.create_task(s.run())
    seen = await watch(server, room, "pusher", seconds, until=lambda _s: pushing.done())
    return await asyncio.wait_for(pushing, 60), seen


def test_a_file_reaches_a_subscriber_with_its_frames_size_tone_and_sync(room_server: Any, media_server: Any) -> None:
    room = f"push-{uuid.uuid4().hex[:8]}"
    worker = FakeWorker()
    s = session(room_server, room, f"{media_server.url}/short.mp4", worker)
    code, seen = asyncio.run(push_and_watch(room_server, room, s, 30))
    assert code == 0
    assert seen.sizes() == {(pushmedia.WIDTH, pushmedia.HEIGHT)}
    numbers = seen.numbers()
    assert len(numbers) > 60 and numbers[-1] > 150, numbers[-20:]
    assert abs(seen.tone_hz() - pushmedia.TONE_HZ) < 10
    offsets = seen.av_offsets()
    assert_in_sync(offsets)
    assert [t for t, _ in worker.events] == [401, 403] and worker.events[-1][1]["Status"] == 0
    print("offsets", offsets, "frames", len(numbers), "first", numbers[:5], worker.reports[0])


@pytest.mark.parametrize("room_server", ["livekit"], indirect=True)
def test_a_file_with_b_frames_is_re_encoded_and_reaches_a_subscriber_in_sync(room_server: Any,
                                                                            media_server: Any) -> None:
    """B-frames cannot pass through: FFmpeg's libx264 re-encodes, capstan-lkpublish publishes."""
    room = f"push-{uuid.uuid4().hex[:8]}"
    worker = FakeWorker()
    s = session(room_server, room, f"{media_server.url}/bframes.mp4", worker)
    code, seen = asyncio.run(push_and_watch(room_server, room, s, 40))
    assert code == 0
    assert any("re-encoded video (libx264) 1280x720" in str(r.get("message")) for r in worker.reports), worker.reports
    assert seen.sizes() == {(pushmedia.WIDTH, pushmedia.HEIGHT)}
    numbers = seen.numbers()
    assert len(numbers) > 200 and numbers[-1] > 11 * pushmedia.FPS, numbers[-20:]
    assert abs(seen.tone_hz() - pushmedia.TONE_HZ) < 10
    offsets = seen.av_offsets()
    assert_in_sync(offsets)
    print("offsets", offsets, "frames", len(numbers))


@pytest.mark.parametrize("room_server", ["livekit"], indirect=True)
def test_a_failover_attempt_starts_at_the_saved_position(room_server: Any, media_server: Any) -> None:
    room = f"push-{uuid.uuid4().hex[:8]}"
    worker = FakeWorker(attempt=2)
    s = session(room_server, room, f"{media_server.url}/pattern.mp4", worker)
    s.status_position = 10.0

    async def scenario() -> Any:
        control = room_server.control()
        await control.create_room(room)
        await control.aclose()
        pushing = asyncio.create_task(s.run())
        seen = await watch(room_server, room, "pusher", 6)
        worker.stop_event.set()
        await asyncio.wait_for(pushing, 30)
        return seen

    seen = asyncio.run(scenario())
    numbers = [n for n in seen.numbers() if n > 0]
    print(seen.numbers()[:40])
    assert numbers and 9.5 * pushmedia.FPS <= numbers[0] <= 12 * pushmedia.FPS, numbers[:10]
    assert [t for t, _ in worker.events] == [402, 403] and worker.events[0][1]["From"] == "status"


@pytest.mark.parametrize("room_server", ["livekit"], indirect=True)
def test_a_looped_file_plays_again_in_time_and_in_sync(room_server: Any, media_server: Any) -> None:
    """loop: the 6 s file twice and more, without a pause at the seam, sound still with the pictures,
    and status.progress back near 0 in the second run (on LiveKit the publisher paces the runs)."""
    room = f"push-{uuid.uuid4().hex[:8]}"
    worker = FakeWorker()
    s = session(room_server, room, f"{media_server.url}/short.mp4", worker, loop=True)

    async def scenario() -> Any:
        control = room_server.control()
        await control.create_room(room)
        await control.aclose()
        pushing = asyncio.create_task(s.run())
        seen = await watch(room_server, room, "pusher", 16)
        worker.stop_event.set()
        assert await asyncio.wait_for(pushing, 30) == 0
        return seen

    seen = asyncio.run(scenario())
    numbers = seen.numbers()
    seams = [i for i in range(1, len(numbers)) if numbers[i] < numbers[i - 1] - pushmedia.FPS]
    assert seams, numbers[::15]
    at = seams[0]
    assert numbers[at - 1] >= 5.5 * pushmedia.FPS and numbers[at] <= 0.5 * pushmedia.FPS, numbers[at - 5:at + 5]
    frame_times = [t for t, *_ in seen.video]
    assert frame_times[at] - frame_times[at - 1] < 0.4, "a pause at the seam"
    second_run = Seen(video=seen.video[at:], audio=[a for a in seen.audio if a[0] >= frame_times[at] - 0.1])
    offsets = second_run.av_offsets()
    assert_in_sync(offsets)
    positions = [r["progress"]["positionSeconds"] for r in worker.reports if "progress" in r]
    assert any(b < a - 3 for a, b in zip(positions, positions[1:], strict=False)), positions
