"""A pusher's /metrics on the real stack: while a file is pushed into a LiveKit room through the
operator, the worker Pod's position gauge follows the push in real time, its frame counters move
and the drift (how late a frame leaves after its due time) stays small."""

from __future__ import annotations

import time

import pytest

from tests.operator.test_chart_install_stack import free_port, sample, scrape, scrape_until
from tests.pusher.test_streampush import LIVEKIT_ONLY, push, pushes, watcher  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


@LIVEKIT_ONLY
def test_a_pushers_position_drift_and_frames_move_on_its_metrics_endpoint(
        operator_factory, room_server, pushes, watcher, media_server):  # noqa: F811
    port = free_port()
    operator_factory(CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE="media", CAPSTAN_WORKER_METRICS_PORT=str(port),
                     **room_server.worker_env())
    watcher.start()
    pushes.create(push("metered", watcher, f"{media_server.url}/pattern.mp4"))
    pushes.wait_phase("metered", "pushing", timeout=60)
    ip = pushes.pod("metered-spush-a1").status.pod_ip
    first = scrape_until(ip, port, lambda m: sample(m, "capstan_worker_push_position_seconds") > 1, "pushing")
    time.sleep(3)
    second = scrape(ip, port)
    position = "capstan_worker_push_position_seconds"
    moved = sample(second, position) - sample(first, position)
    assert 1.5 < moved < 5, moved  # real time, give or take the scrape
    for name in ("capstan_worker_frames_sent_total", "capstan_worker_frames_received_total"):
        for track in ("video", "audio"):
            assert sample(second, name, track=track) > sample(first, name, track=track), (name, track)
    for track in ("video", "audio"):
        assert abs(sample(second, "capstan_worker_push_drift_seconds", track=track)) < 1.0, track
    pushes.patch_spec("metered", {"stop": True})
    pushes.wait_phase("metered", "finished", timeout=60)
