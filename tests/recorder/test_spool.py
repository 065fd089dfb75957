"""Nothing lost, nobody stuck (issue 9), end to end on each room backend: the spool outlives the
attempt that wrote it, a drain stores the open segment before the failover, and the failover gap
is short. Real API server, operator, pod runner, room, a private MinIO that the test freezes, and
the recorder's own log of every file it closed ("spooled <key>") counted against the bucket."""

from __future__ import annotations

import datetime as dt
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from capstan.media import naming
from devstack import podrunner
from tests.conftest import wait_for
from tests.recorder.test_recording import recording
from tests.recorder.test_recording_outputs import flaky_storage, recorder  # noqa: F401
from tests.storage.conftest import fast_client

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]
GAP_BOUND = 60.0
SPOOLED = re.compile(r"spooled (\S+) \(seq \d+\)")


def pod_name(task: str, attempt: int) -> str:
    return f"{task}-crec-a{attempt}"


def spooled(pod_runner: Any, namespace: str, task: str, attempts: int) -> set[str]:
    """Every object key the recorder closed and handed to its spool, across attempts (its own log)."""
    keys: set[str] = set()
    for attempt in range(1, attempts + 1):
        log = Path(pod_runner.pod_dir(namespace, pod_name(task, attempt))) / "recorder.log"
        if log.exists():
            keys |= set(SPOOLED.findall(log.read_text(errors="replace")))
    return keys


def bucket_keys(client: Any, bucket: str, task_id: str) -> set[str]:
    return {o.object_name for o in client.list_objects(bucket, prefix=f"rec/{task_id}/", recursive=True)}


def segment_start(key: str) -> float:
    """Wall-clock start of a segment, from its `<utc>` (seed 002 naming)."""
    stamp = key.rsplit("_", 1)[-1].removesuffix(".ts")
    return naming.parse_utc(stamp).replace(tzinfo=dt.UTC).timestamp()


def first_segment_of_attempt(keys: set[str], attempt: int, track: str = "audio") -> float:
    ha = attempt - 1
    starts = [segment_start(k) for k in keys if k.endswith(".ts") and f"_{track}_" in k
              and naming.parse_name(k.rsplit("/", 1)[-1]).ha == ha]
    return min(starts)


def wait_attempt_recording(tasks: Any, name: str, attempt: int, timeout: float = 90) -> None:
    wait_for(lambda: (s := tasks.status(name)).get("attempt") == attempt and s.get("phase") == "recording",
             timeout, what=f"attempt {attempt} recording")


def test_a_recorder_killed_during_a_storage_freeze_loses_nothing_it_closed(
        recorder, tasks, room, receiver, flaky_storage, namespace, pod_runner):  # noqa: F811
    """MinIO frozen 12 s, the recorder SIGKILLed at the end of it, MinIO back: the segments closed
    during the freeze wait on the task's spool and the next attempt stores them (they used to be lost
    with the Pod's emptyDir); the failover's first frame follows the kill within seconds."""
    recorder(CAPSTAN_UPLOAD_GRACE_SECONDS="3")
    client = fast_client(flaky_storage.endpoint)
    room.start("alice")
    spec = recording("spool", room, "flaky", receiver, output={"formats": ["hls"], "prefix": "rec",
                                                                "segmentSeconds": 2})
    spec["spec"]["storage"]["endpoint"] = flaky_storage.endpoint
    tasks.create(spec)
    st = tasks.wait_phase("spool", "recording", timeout=60)
    time.sleep(4)
    flaky_storage.pause()
    time.sleep(12)
    before_kill = spooled(pod_runner, namespace, "spool", 1)
    killed_at = time.time()
    podrunner.kill_container(namespace, pod_name("spool", 1), sig=signal.SIGKILL)
    flaky_storage.resume()
    wait_attempt_recording(tasks, "spool", 2)
    time.sleep(6)
    tasks.patch_spec("spool", {"stop": True})
    st = tasks.wait_phase("spool", "finished", timeout=180)

    closed = spooled(pod_runner, namespace, "spool", 2)
    stored = bucket_keys(client, "flaky", st["taskId"])
    frozen = {k for k in before_kill if k.endswith(".ts") and segment_start(k) > killed_at - 12}
    assert len(frozen) >= 8, f"too few segments closed during the freeze to prove anything: {sorted(frozen)}"
    missing = sorted(k for k in closed if k not in stored)
    assert not missing, f"closed by the recorder but not in the bucket: {missing}"
    gap = first_segment_of_attempt(stored, 2) - killed_at
    print(f"failover gap ({room.server.name}): {gap:.2f} s")
    # the aim is < 5 s (docs/reliability.md has the measured figures); on a loaded 2-core box a new
    # worker process alone takes 10-15 s to import and join, so this only catches a stuck failover
    assert 0 < gap < GAP_BOUND, f"the next attempt's first frame came {gap:.1f} s after the kill"
    # the dead attempt's playlists were ended by its successor
    first_audio = f"rec/{st['taskId']}/" + naming.single_playlist_name(
        1400000000, room.name, "alice", "main", "audio")
    assert "#EXT-X-ENDLIST" in client.get_object("flaky", first_audio).read().decode()
    # and the result lists both attempts' playlists
    files = {f["fileName"] for f in st.get("files", [])}
    assert first_audio in files and any(naming.parse_name(f.rsplit("/", 1)[-1]).ha == 1 for f in files), files
    assert not receiver.bad


def test_a_drained_recorder_stores_its_open_segment_then_fails_over(
        recorder, tasks, room, s3, bucket, receiver, namespace, pod_runner):  # noqa: F811
    """The Pod deleted with grace (node drain, eviction): the worker closes its segments, stores them,
    exits for a failover -- it is not a user stop (no 302) and nothing is force-deleted meanwhile."""
    recorder()
    room.start("alice")
    tasks.create(recording("drain", room, bucket, receiver, output={"formats": ["hls"], "prefix": "rec",
                                                                     "segmentSeconds": 2}))
    st = tasks.wait_phase("drain", "recording", timeout=60)
    time.sleep(5)
    drained_at = time.time()
    tasks.core.delete_namespaced_pod(pod_name("drain", 1), namespace, grace_period_seconds=30,
                                     _request_timeout=30)
    wait_attempt_recording(tasks, "drain", 2)
    assert 302 not in receiver.types(), "a drain is not a stop"
    time.sleep(5)
    tasks.patch_spec("drain", {"stop": True})
    st = tasks.wait_phase("drain", "finished", timeout=180)
    closed = spooled(pod_runner, namespace, "drain", 2)
    stored = bucket_keys(s3, bucket, st["taskId"])
    assert not sorted(k for k in closed if k not in stored)
    # the drained attempt closed its open segment: its last audio segment ends near the drain
    first = [k for k in closed if k.endswith(".ts") and "_audio_" in k
             and naming.parse_name(k.rsplit("/", 1)[-1]).ha == 0]
    assert first and max(segment_start(k) for k in first) > drained_at - 2.5, sorted(first)
    types = receiver.types()
    assert types.count(302) == 1 and 306 in types, types
    reasons = [r for r, _ in tasks.events("drain")]
    assert "Failover" in reasons, reasons
