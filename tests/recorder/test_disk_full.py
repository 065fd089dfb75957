"""A full local disk (ENOSPC) mid-recording, on a real filesystem that fills up (a 1 MiB tmpfs):
the stream is not ended silently; the worker is told, frames are dropped while the disk is full,
and recording resumes in a new segment once there is space. The segments closed before are intact."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from capstan.media.pipeline import hls as hls_sink
from capstan.media.pipeline.encoding import VideoEncoding
from capstan.recorder.hls import HlsOutput, HlsTrackWriter, StreamNames
from tests.recorder.frames import T0, stream_times

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
