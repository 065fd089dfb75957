"""StreamPush end to end on the real stack: the operator, the pod runner, the pusher worker, a real
room (LiveKit: pass-through; Janus: re-encode), a subscriber that reads what arrives (frame
numbers, size, tone, A/V offset), real Redis, and a callback receiver checking signatures."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from typing import Any

import pytest
import redis
from kubernetes import client

from capstan.api import GROUP, VERSION
from capstan.pusher.progress import redis_key
from devstack import podrunner, pushmedia
from devstack.harness import BackgroundLoop
from tests.conftest import wait_for
from tests.operator.test_callbacks_stack import KEY, Receiver
from tests.operator.test_operator_stack import Tasks

from .conftest import Seen, assert_in_sync, watch

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]
SDKAPPID = 1400000000
USE = {"labels": {"capstan.dev/use": "true"}}
LIVEKIT_ONLY = pytest.mark.parametrize("room_server", ["livekit"], indirect=True)


class Pushes(Tasks):
    """tests.operator's Tasks, for StreamPush objects."""

    def create(self, obj):
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, "streampushes", obj,
                                                        _request_timeout=30)

    def get(self, name):
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, "streampushes", name,
                                                         _request_timeout=30)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_spec(self, name, spec):
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, "streampushes", name,
                                                       {"spec": spec}, _request_timeout=30)


@pytest.fixture
def pushes(kube_api, namespace, stack, room_server):
    core = client.CoreV1Api(kube_api)
    for name, data in (("room-credentials", room_server.secret_data()), ("callback-key", {"key": KEY}),
                       ("redis", {"url": stack.redis_url})):
        core.create_namespaced_secret(namespace, {"metadata": {"name": name, **USE}, "stringData": data},
                                      _request_timeout=30)
    return Pushes(kube_api, namespace)


@pytest.fixture
def pusher_operator(operator_factory, room_server):
    return operator_factory(CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE="media", **room_server.worker_env())


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class Watcher:
    """A subscriber in the background for the whole test."""

    def __init__(self, server: Any) -> None:
        self.server, self.loop = server, BackgroundLoop()
        self.room = f"push-{uuid.uuid4().hex[:8]}"
        self.control = server.control()
        self.loop.run(self.control.create_room(self.room))
        self.seen = Seen()
        self.future: Any = None

    def start(self, seconds: float = 240) -> None:
        self.future = asyncio.run_coroutine_threadsafe(
            watch(self.server, self.room, "pusher", seconds, seen=self.seen, until=lambda _s: self.stopped),
            self.loop.loop)

    stopped = False

    def close(self) -> None:
        self.stopped = True
        if self.future is not None:
            self.future.result(30)
        self.loop.run(self.control.close_room(self.room))
        self.loop.run(self.control.aclose())
        self.loop.close()


@pytest.fixture
def watcher(room_server):
    w = Watcher(room_server)
    yield w
    w.close()


def push(name: str, watcher: Watcher, src: str, receiver: Receiver | None = None, **spec: Any) -> dict:
    body: dict[str, Any] = {"videoSrc": src, "room": watcher.server.room_spec(watcher.room, SDKAPPID),
                            "userId": "pusher", **spec}
    if receiver is not None:
        body["callback"] = {"url": receiver.url, "signingKeySecretRef": {"name": "callback-key", "key": "key"}}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "StreamPush", "metadata": {"name": name}, "spec": body}


def test_a_file_is_pushed_with_its_frames_size_tone_and_sync_then_finished(
        pusher_operator, pushes, watcher, media_server, receiver, room_server):
    watcher.start()
    pushes.create(push("file", watcher, f"{media_server.url}/short.mp4", receiver))
    st = pushes.wait_phase("file", "pushing", timeout=60)
    expected = "pass-through H.264" if room_server.name == "livekit" else "re-encoded video"
    assert expected in st["message"], st["message"]
    st = pushes.wait_phase("file", "finished", timeout=90)
    assert st["progress"]["durationSeconds"] == pytest.approx(6.0, abs=0.1)
    assert st["progress"]["positionSeconds"] > 5.0
    seen = watcher.seen
    assert seen.sizes() == {(pushmedia.WIDTH, pushmedia.HEIGHT)}
    numbers = seen.numbers()
    assert numbers == sorted(numbers) and numbers[-1] >= 170, numbers[-10:]  # the file's own frames, in order
    share = len(set(numbers)) / (numbers[-1] - numbers[0] + 1)  # of the frames since the subscription began
    assert share > (0.95 if room_server.name == "livekit" else 0.4), share  # aiortc's VP8 at 720p drops some
    assert abs(seen.tone_hz() - pushmedia.TONE_HZ) < 10
    offsets = seen.av_offsets()
    assert len(offsets) >= 3, offsets
    assert_in_sync(offsets)
    wait_for(lambda: 403 in receiver.types(), 30, what="403 delivered")
    assert receiver.types() == [401, 403] and not receiver.bad
    stop = receiver.bodies[-1]["EventInfo"]["Payload"]
    assert stop["Status"] == 0 and stop["PositionMs"] > 5000
    reasons = [r for r, _ in pushes.events("file")]
    assert "PushStart" in reasons and "PushStop" in reasons, reasons


def first_after(numbers: list[tuple[float, int]], moment: float) -> int:
    """The first frame number read after `moment`; a blank picture (a decoder waiting for its first
    keyframe shows one) reads as 0 and is skipped."""
    return next(n for t, n in numbers if t > moment and n > 0)


def test_a_killed_pusher_continues_from_status_progress(pusher_operator, pushes, watcher, media_server, receiver,
                                                       namespace):
    watcher.start()
    pushes.create(push("ha", watcher, f"{media_server.url}/pattern.mp4", receiver))
    pushes.wait_phase("ha", "pushing", timeout=60)
    wait_for(lambda: len(watcher.seen.video) > 200, 60, what="frames arriving")
    podrunner.kill_container(namespace, "ha-spush-a1", sig=signal.SIGKILL)
    killed_at = time.time()
    last_before = [n for t, n, _, _ in watcher.seen.video if t <= killed_at][-1]
    wait_for(lambda: (s := pushes.status("ha")).get("attempt") == 2 and s.get("phase") == "pushing", 90,
             what="attempt 2 pushing")
    wait_for(lambda: any(t > killed_at + 1 and n > 0 for t, n, *_ in watcher.seen.video), 60,
             what="frames after the failover")
    resumed = first_after([(t, n) for t, n, _, _ in watcher.seen.video], killed_at + 0.5)
    assert abs(resumed - last_before) <= 2 * pushmedia.FPS, (last_before, resumed)  # within 2 s
    pushes.patch_spec("ha", {"stop": True})
    pushes.wait_phase("ha", "finished", timeout=60)
    wait_for(lambda: 403 in receiver.types(), 30, what="403 delivered")
    types = receiver.types()
    assert types[0] == 401 and 402 in types and types[-1] == 403, types
    resume = next(b for b in receiver.bodies if b["EventType"] == 402)["EventInfo"]["Payload"]
    assert resume["From"] == "status" and resume["Attempt"] == 2
    assert "PushResume" in [r for r, _ in pushes.events("ha")]
    # the dead attempt's identity was taken out of the room (Janus would keep it for its session timeout)
    identity = [m for r, m in pushes.events("ha") if r == "FailoverIdentity"]
    assert identity == ["dead attempt's room identity: removed"], identity


def test_a_new_push_of_the_same_source_resumes_from_redis(pusher_operator, pushes, watcher, media_server, stack,
                                                         receiver):
    src = f"{media_server.url}/pattern.mp4?case={uuid.uuid4().hex[:6]}"  # a source of its own in the shared Redis
    watcher.start()
    r = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    spec = {"resume": True, "redisSecretRef": {"name": "redis", "key": "url"}}
    pushes.create(push("first", watcher, src, **spec))
    pushes.wait_phase("first", "pushing", timeout=60)
    wait_for(lambda: len(watcher.seen.video) > 150, 60, what="frames arriving")
    pushes.patch_spec("first", {"stop": True})
    stopped_at = time.time()
    pushes.wait_phase("first", "finished", timeout=60)
    last_before = [n for t, n, _, _ in watcher.seen.video if t <= stopped_at][-1]
    record = json.loads(r.get(redis_key(src)))
    assert abs(record["position"] - last_before / pushmedia.FPS) < 1.5, (record, last_before)
    pushes.create(push("second", watcher, src, receiver, **spec))
    st = pushes.wait_phase("second", "pushing", timeout=60)
    assert "(redis)" in st["message"], st["message"]
    wait_for(lambda: any(t > stopped_at + 1 and n > 0 for t, n, *_ in watcher.seen.video), 60,
             what="frames of the second push")
    resumed = first_after([(t, n) for t, n, _, _ in watcher.seen.video], stopped_at + 1)
    assert abs(resumed - last_before) <= 2 * pushmedia.FPS and resumed > 3 * pushmedia.FPS, (last_before, resumed)
    pushes.patch_spec("second", {"stop": True})
    pushes.wait_phase("second", "finished", timeout=60)
    wait_for(lambda: 402 in receiver.types(), 30, what="402 delivered")
    resume = next(b for b in receiver.bodies if b["EventType"] == 402)["EventInfo"]["Payload"]
    assert resume["From"] == "redis" and abs(resume["PositionMs"] / 1000 - record["position"]) < 1.5


@LIVEKIT_ONLY
@pytest.mark.parametrize("src, message", [
    ("http://169.254.169.254/latest/meta-data.mp4", "is a link-local address"),
    ("http://127.0.0.1:1/nothing.mp4", "cannot be fetched"),
    ("{media}/missing.mp4", "HTTP 404"),
    ("{media}/not-media.mp4", "cannot be opened as media"),
])
def test_a_bad_source_fails_with_a_message_that_names_it(pusher_operator, pushes, watcher, media_server, src,
                                                         message):
    src = src.format(media=media_server.url)
    pushes.create(push("bad", watcher, src))
    st = pushes.wait_phase("bad", "failed", timeout=60)
    assert message in st["result"]["errorMessage"] and "spec.videoSrc" in st["result"]["errorMessage"], st["result"]
    assert src.split("?")[0] in st["result"]["errorMessage"]
    assert st.get("failovers", 0) == 0


def stop_process(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except Exception:  # noqa: BLE001
        proc.kill()
        proc.wait(5)


def test_a_live_rtmp_stream_is_relayed_survives_a_short_drop_and_fails_on_a_long_one(
        pusher_operator, pushes, watcher, media_dir, rtmp_server, receiver, room_server):
    stream = uuid.uuid4().hex[:8]
    feed = rtmp_server.publish(media_dir / "pattern.mp4", stream)
    try:
        time.sleep(2)
        watcher.start()
        pushes.create(push("live", watcher, rtmp_server.url(stream), receiver, mode="live", liveReconnectSeconds=10))
        st = pushes.wait_phase("live", "pushing", timeout=60)
        expected = "pass-through H.264 1280x720" if room_server.name == "livekit" else "re-encoded video"
        assert expected in st["message"], st["message"]
        wait_for(lambda: sum(n > 0 for _, n, _, _ in watcher.seen.video) > 60, 60, what="live frames arriving")
        stop_process(feed)
        dropped_at = time.time()
        time.sleep(5)
        feed = rtmp_server.publish(media_dir / "pattern.mp4", stream)  # back after 5 s
        wait_for(lambda: any(t > dropped_at + 5 and n > 0 for t, n, _, _ in watcher.seen.video), 60,
                 what="frames after the short drop")
        assert pushes.status("live")["phase"] == "pushing"
        assert abs(watcher.seen.tone_hz() - pushmedia.TONE_HZ) < 10
        stop_process(feed)  # gone for good
        gone_at = time.time()
        st = pushes.wait_phase("live", "failed", timeout=60)
        assert time.time() - gone_at < 40
        assert "did not come back within 10 s" in st["result"]["errorMessage"], st["result"]
        assert rtmp_server.url(stream) in st["result"]["errorMessage"]
        wait_for(lambda: 403 in receiver.types(), 30, what="403 delivered")
        assert receiver.bodies[-1]["EventInfo"]["Payload"]["Status"] == 2
    finally:
        stop_process(feed)
