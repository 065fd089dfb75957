"""MP4 per stream and MP3 per user from recorded HLS segments."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from capstan.media import naming
from capstan.media.pipeline.encoding import AudioEncoding, VideoEncoding
from capstan.recorder.finalize import FileRecord, finalize, finalize_directory
from capstan.recorder.hls import HlsOutput, HlsTrackWriter, StreamNames
from capstan.storage.uploader import Uploader
from tests.recorder.frames import T0, dominant_hz, interleave, stream_times, tone_frames, video_frames

SDKAPPID, ROOM = 1400000001, 1234
VIDEO = VideoEncoding(bitrate=100000, gop_seconds=2, size=(64, 48), max_fps=15)
AUDIO = AudioEncoding(sample_rate=48000, channels=1, bitrate=64000)
RED, BLUE = (200, 40, 40), (40, 40, 200)


@dataclass
class Recorded:
    directory: Path
    segments: list[Path]


def _record(directory: Path, user: str, media: str, runs: list[tuple[float, float]], *, color: tuple[int, int, int]
            | None, hz: float | None, ha: int = 0) -> None:
    writers: dict[str, HlsTrackWriter] = {}
    if color is not None:
        writers["video"] = HlsTrackWriter(StreamNames.single(SDKAPPID, ROOM, user, media, "video", ha=ha),
                                          HlsOutput(directory, segment_seconds=2), VIDEO)
    if hz is not None:
        writers["audio"] = HlsTrackWriter(StreamNames.single(SDKAPPID, ROOM, user, "main", "audio", ha=ha),
                                          HlsOutput(directory, segment_seconds=2), AUDIO)
    for start, seconds in runs:
        sources: list[Iterator[Any]] = []
        if color is not None:
            sources.append(video_frames(T0 + start, seconds, color=color))
        if hz is not None:
            sources.append(tone_frames(T0 + start, seconds, hz=hz))
        for frame, t in interleave(*sources):
            writers["video" if isinstance(frame, av.VideoFrame) else "audio"].write(frame, t)
    for writer in writers.values():
        writer.close()


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """alice: camera + mic 0-5 s and 8-11 s; bob: mic 0-4 s and a screen share (aux) 1-3 s."""
    directory = tmp_path_factory.mktemp("segments")
    _record(directory, "alice", "main", [(0, 5), (8, 3)], color=RED, hz=440)
    _record(directory, "bob", "main", [(0, 4)], color=None, hz=660)
    _record(directory, "bob", "aux", [(1, 2)], color=BLUE, hz=None)
    return Recorded(directory, sorted(directory.glob("*.ts")))


def _by_name(records: list[FileRecord]) -> dict[str, FileRecord]:
    return {r.file_name: r for r in records}


def _mean_rgb_at(path: Path, t: float) -> tuple[float, ...]:
    with av.open(str(path)) as container:
        chosen = None
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time > t:
                break
            chosen = frame
        assert chosen is not None
        return tuple(chosen.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0))


def _packets(paths: list[Path], kind: str) -> tuple[int, int]:
    count = total = 0
    for path in paths:
        with av.open(str(path)) as container:
            streams = container.streams.video if kind == "video" else container.streams.audio
            sizes = [p.size for p in container.demux(streams[0]) if p.size]
            count, total = count + len(sizes), total + sum(sizes)
    return count, total


def test_mp4_per_stream(room: Recorded, tmp_path: Path) -> None:
    records = _by_name(finalize(room.segments, tmp_path))
    alice = naming.single_mp4_name(SDKAPPID, ROOM, "alice", "main", 1)
    bob = naming.single_mp4_name(SDKAPPID, ROOM, "bob", "main", 1)
    bob_aux = naming.single_mp4_name(SDKAPPID, ROOM, "bob", "aux", 1)
    assert set(records) == {alice, bob, bob_aux}
    assert (records[alice].track_type, records[bob].track_type, records[bob_aux].track_type) == (
        "audio_video", "audio", "video")
    assert records[bob_aux].media_id == "aux" and records[bob].user_id == "bob"
    assert records[alice].begin_timestamp_ms == pytest.approx(T0 * 1000, abs=25)
    assert records[bob_aux].begin_timestamp_ms == round((T0 + 1) * 1000)
    assert records[alice].duration == pytest.approx(11.0, abs=0.1)
    assert records[bob].duration == pytest.approx(4.0, abs=0.1)
    assert records[bob_aux].duration == pytest.approx(2.0, abs=0.1)
    path = tmp_path / alice
    assert records[alice].size == path.stat().st_size
    video, audio = stream_times(path, "video"), stream_times(path, "audio")
    assert video.end - video.first == pytest.approx(11.0, abs=0.1)
    assert len(video.times) == 8 * 15
    # the hole stays a hole: nothing between 5 s and 8 s, and media after it is not shifted
    for times in (video.times, audio.times):
        jumps = [(a, b) for a, b in zip(times, times[1:], strict=False) if b - a > 0.2]
        assert len(jumps) == 1 and jumps[0][1] - jumps[0][0] == pytest.approx(3.0, abs=0.1)
    assert _mean_rgb_at(path, 9.0) == pytest.approx(RED, abs=6)
    assert _mean_rgb_at(tmp_path / bob_aux, 1.0) == pytest.approx(BLUE, abs=6)
    assert dominant_hz(path) == pytest.approx(440, abs=5)
    assert dominant_hz(tmp_path / bob) == pytest.approx(660, abs=5)
    # copied, not re-encoded: same packets (only Annex B start codes become length prefixes)
    parsed = [(p, naming.parse_name(p.name)) for p in room.segments]
    alice_video = [p for p, n in parsed if n.user_id == "alice" and n.track is naming.TrackType.VIDEO]
    (mp4_count, mp4_bytes), (ts_count, ts_bytes) = _packets([path], "video"), _packets(alice_video, "video")
    assert mp4_count == ts_count and mp4_bytes == pytest.approx(ts_bytes, rel=0.01)


@pytest.mark.parametrize(("limits", "expected_files"), [({"mp4_max_bytes": 40_000}, 3),
                                                        ({"mp4_max_seconds": 4.5}, 3)])
def test_mp4_is_split_by_index(room: Recorded, tmp_path: Path, limits: dict[str, float], expected_files: int) -> None:
    records = [r for r in finalize(room.segments, tmp_path, **limits) if r.user_id == "alice"]  # type: ignore[arg-type]
    assert [naming.parse_name(r.file_name).index for r in records] == list(range(1, expected_files + 1))
    frames = 0
    for record in records:
        path = tmp_path / record.file_name
        assert record.size <= limits.get("mp4_max_bytes", 2**31)
        assert record.duration <= limits.get("mp4_max_seconds", 86400) + 1e-6
        video = stream_times(path, "video")
        frames += len(video.times)
        assert _mean_rgb_at(path, video.first) == pytest.approx(RED, abs=6)  # starts on a decodable picture
        assert record.duration == pytest.approx(stream_times(path, "audio").end - min(
            video.first, stream_times(path, "audio").first), abs=0.1)
    assert frames == 8 * 15  # nothing lost or doubled at the cuts
    # the files tile the recording: each begins where the media says
    assert records[0].begin_timestamp_ms == pytest.approx(T0 * 1000, abs=25)
    assert sum(r.duration for r in records) == pytest.approx(8.0, abs=0.2)


def test_mp3_per_user_keeps_wall_clock(room: Recorded, tmp_path: Path) -> None:
    records = [r for r in finalize(room.segments, tmp_path, mp4=False, mp3=True)]
    names = {r.file_name: r for r in records}
    alice = naming.single_playlist_name(SDKAPPID, ROOM, "alice", "main", "audio").replace(".m3u8", ".mp3")
    bob = naming.single_playlist_name(SDKAPPID, ROOM, "bob", "main", "audio").replace(".m3u8", ".mp3")
    assert set(names) == {alice, bob}
    assert names[alice].duration == pytest.approx(11.0, abs=0.1)
    assert names[bob].duration == pytest.approx(4.0, abs=0.1)
    with av.open(str(tmp_path / alice)) as container:
        assert container.format.name == "mp3"
        assert float(container.duration or 0) / 1e6 == pytest.approx(11.0, abs=0.15)
        data = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
        rate = container.streams.audio[0].sample_rate
    def rms(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(data[int(a * rate):int(b * rate)] ** 2)))
    assert rms(1, 4) > 0.15 and rms(9, 10.5) > 0.15
    assert rms(5.3, 7.7) < 0.01  # the hole is silence, and the tone after it is on time
    assert dominant_hz(tmp_path / bob) == pytest.approx(660, abs=5)


def test_failover_attempts_are_joined(tmp_path: Path) -> None:
    _record(tmp_path / "seg", "carol", "main", [(0, 4)], color=RED, hz=440)
    _record(tmp_path / "seg", "carol", "main", [(3.5, 3.5)], color=RED, hz=440, ha=1)
    [record] = finalize_directory(tmp_path / "seg", tmp_path / "out")
    assert record.duration == pytest.approx(7.0, abs=0.1)
    video = stream_times(tmp_path / "out" / record.file_name, "video")
    assert all(b > a for a, b in zip(video.times, video.times[1:], strict=False))
    assert len(video.times) == pytest.approx(7 * 15, abs=2)


def test_files_are_uploaded(room: Recorded, s3: Any, bucket: str, tmp_path: Path) -> None:
    up = Uploader(s3, bucket, tmp_path / "spool")
    records = finalize(room.segments, tmp_path / "out", uploader=up, key_prefix="p", task_id="t", mp3=True)
    assert up.close(30)
    stored = {o.object_name: o.size for o in s3.list_objects(bucket, prefix="p/t/", recursive=True)}
    assert stored == {r.key: r.size for r in records}
    assert len(records) == 5
    assert not list((tmp_path / "out").iterdir())
