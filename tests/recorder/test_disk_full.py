"""A full local disk (ENOSPC) mid-recording, on a real filesystem that fills up (a 1 MiB tmpfs):
the stream is not ended silently; the worker is told, frames are dropped while the disk is full,
and recording resumes in a new segment once there is space. The segments closed before are intact."""

from __future__ import annotations

import contextlib
import errno
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from capstan.media.pipeline import hls as hls_sink
from capstan.media.pipeline.encoding import VideoEncoding
from capstan.recorder.hls import HlsOutput, HlsTrackWriter, StreamNames
from tests.recorder.frames import T0, stream_times
from tests.recorder.test_recording import receiver, room, tasks  # noqa: F401
from tests.recorder.test_recording_outputs import flaky_storage, recorder  # noqa: F401
from tests.recorder.test_spool import segment_start

SIZE = (160, 120)
ENCODING = VideoEncoding(bitrate=2_000_000, gop_seconds=1, size=SIZE, max_fps=15)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def noise_frames(start: float, seconds: float, fps: int = 15) -> Iterator[tuple[av.VideoFrame, float]]:
    rng = np.random.default_rng(1)
    for i in range(round(seconds * fps)):
        image = rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
        yield av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p"), start + i / fps


def fill(path: Path) -> None:
    """Write until the filesystem is full."""
    with path.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()


def test_a_full_disk_drops_frames_tells_the_worker_and_recording_resumes(small_disk, monkeypatch):
    monkeypatch.setattr(hls_sink, "DISK_RETRY_SECONDS", 0.0)
    told: list[str | None] = []
    names = StreamNames.single(1400000001, 1234, "alice", "main", "video")
    writer = HlsTrackWriter(names, HlsOutput(small_disk / "seg", segment_seconds=1), ENCODING, on_disk=told.append)
    for frame, t in noise_frames(T0, 2.0):
        writer.write(frame, t)
    before = [s for s in writer.segments]
    assert before, "a segment closed before the disk filled"
    filler = small_disk / "filler"
    fill(filler)
    for frame, t in noise_frames(T0 + 2.0, 2.0):
        writer.write(frame, t)  # no exception: the stream goes on
    assert told and told[0] is not None and "local disk full" in told[0] and told[-1] is not None
    assert len(told) == 1  # told once, not per failed try
    filler.unlink()
    for frame, t in noise_frames(T0 + 4.0, 2.0):
        writer.write(frame, t)
    assert told[-1] is None  # writing again
    segments = writer.close()
    for s in before:  # intact: every picture decodes
        assert len(stream_times(Path(s.local_path or ""), "video").times) >= 10
    resumed = [s for s in segments if s.start >= T0 + 4.0]
    assert resumed and all(Path(s.local_path or "").exists() for s in resumed)
    # what could not be written is a gap in the timeline (the segment open when the disk filled)
    assert sum(s.duration for s in segments) < 5.5
    with pytest.raises(OSError) as exc:  # the disk really was full
        fill(small_disk / "again")
        (small_disk / "again").write_bytes(b"\0" * 2_000_000)
    assert exc.value.errno == errno.ENOSPC


@pytest.mark.stack
@pytest.mark.timeout(400)
@pytest.mark.parametrize("room_server", ["livekit"], indirect=True)
def test_a_recorder_whose_disk_fills_during_a_storage_outage_says_so_and_recovers(
        recorder, tasks, room, receiver, flaky_storage, namespace, pod_runner):  # noqa: F811
    """The storage is away, so segments pile up on the task's spool -- a 512 KiB filesystem here --
    until it is full: the task says so (condition LocalDiskFull, a Warning Event) instead of ending
    its tracks silently; once the storage is back the spool drains, the streams write again, the
    condition clears, and every segment the recorder closed is stored."""
    from capstan.api import KINDS
    from capstan.operator.children import spool_claim_name
    from tests.conftest import wait_for
    from tests.recorder.test_recording import recording
    from tests.recorder.test_spool import bucket_keys, spooled
    from tests.storage.conftest import fast_client

    info = next(k for k in KINDS if k.plural == "cloudrecordings")
    claim_dir = Path(pod_runner.state_dir) / namespace / ".claims" / spool_claim_name(info, "full")
    claim_dir.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(claim_dir)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        recorder(CAPSTAN_UPLOAD_GRACE_SECONDS="3")
        client = fast_client(flaky_storage.endpoint)
        for user in ("alice", "bob"):
            room.start(user)
        spec = recording("full", room, "flaky", receiver, output={"formats": ["hls"], "prefix": "rec",
                                                                   "segmentSeconds": 2})
        spec["spec"]["storage"]["endpoint"] = flaky_storage.endpoint
        tasks.create(spec)
        tasks.wait_phase("full", "recording", timeout=90)
        flaky_storage.pause()

        def condition() -> dict | None:
            return next((c for c in tasks.status("full").get("conditions", []) if c["type"] == "LocalDiskFull"),
                        None)

        wait_for(lambda: (c := condition()) is not None and c["status"] == "True", 180, what="disk full reported")
        assert "local disk full" in condition()["message"]
        wait_for(lambda: any(r == "LocalDiskFull" for r, _ in tasks.events("full")), 30, what="the Warning Event")
        assert tasks.status("full")["phase"] == "recording"  # the task goes on
        flaky_storage.resume()
        wait_for(lambda: condition()["status"] == "False", 120, what="the condition cleared")
        cleared_at = time.time()
        time.sleep(5)  # recording again
        tasks.patch_spec("full", {"stop": True})
        st = tasks.wait_phase("full", "finished", timeout=180)
        closed = spooled(pod_runner, namespace, "full", 1)
        stored = bucket_keys(client, "flaky", st["taskId"])
        assert not sorted(k for k in closed if k not in stored), "closed but not stored"
        written_again = [k for k in stored if k.endswith(".ts")
                         and segment_start(k) > cleared_at]
        assert written_again, "nothing recorded after the disk had room again"
        assert not receiver.bad
    finally:
        subprocess.run(["umount", "-l", str(claim_dir)], check=False)
