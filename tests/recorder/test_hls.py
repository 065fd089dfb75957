"""HlsWriter on synthetic frames: TRTC names, playlists, segment lengths, content and timing."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from capstan.media import naming, playlist
from capstan.media.pipeline import hls as hls_sink
from capstan.media.pipeline.encoding import AudioEncoding, VideoEncoding
from capstan.recorder.hls import FirstSegment, HlsOutput, HlsTrackWriter, HlsWriter, StreamNames
from capstan.storage.uploader import Uploader
from tests.recorder.frames import T0, dominant_hz, interleave, mean_rgb, stream_times, tone_frames, video_frames

SDKAPPID, ROOM = 1400000001, 1234
VIDEO = VideoEncoding(bitrate=100000, gop_seconds=2, size=(64, 48), max_fps=15)
AUDIO = AudioEncoding(sample_rate=48000, channels=1, bitrate=64000)
USERS = {"alice": ((200, 40, 40), 440.0), "bob": ((40, 40, 200), 660.0)}


def _video_writer(tmp_path: Path, user: str = "alice", *, ha: int = 0, encoding: VideoEncoding = VIDEO,
                  **kwargs: Any) -> HlsTrackWriter:
    names = StreamNames.single(SDKAPPID, ROOM, user, "main", "video", ha=ha)
    first = kwargs.pop("on_first_segment", None)
    output = HlsOutput(tmp_path / f"{user}-video", segment_seconds=2, **kwargs)
    return HlsTrackWriter(names, output, encoding, on_first_segment=first)


def _audio_writer(tmp_path: Path, user: str = "alice", *, ha: int = 0) -> HlsTrackWriter:
    names = StreamNames.single(SDKAPPID, ROOM, user, "main", "audio", ha=ha)
    return HlsTrackWriter(names, HlsOutput(tmp_path / f"{user}-audio", segment_seconds=2), AUDIO)


def _playlist(writer: HlsWriter) -> playlist.Playlist:
    return playlist.parse((writer.work_dir / writer.names.playlist).read_text())


def test_names_keys_and_playlist_tags(tmp_path: Path) -> None:
    firsts: list[FirstSegment] = []
    writer = _video_writer(tmp_path, ha=2, key_prefix="rec", task_id="task-1", on_first_segment=firsts.append)
    for frame, t in video_frames(T0 + 0.25, 5.0):
        writer.write(frame, t)
    segments = writer.close()
    stem = f"ha2_{SDKAPPID}_{ROOM}__UserId_s_YWxpY2U.__UserId_e_main_video"
    assert [s.name for s in segments] == [
        f"{stem}_20240501100000250.ts", f"{stem}_20240501100002250.ts", f"{stem}_20240501100004250.ts"]
    assert segments[0].key == f"rec/task-1/{stem}_20240501100000250.ts"
    assert writer.playlist_key == f"rec/task-1/{stem}.m3u8"
    for s in segments:
        parsed = naming.parse_name(s.name)
        assert (parsed.ha, parsed.user_id, parsed.track) == (2, "alice", naming.TrackType.VIDEO)
        assert parsed.start == datetime.fromtimestamp(s.start, UTC).replace(microsecond=parsed.start.microsecond)
    listed = _playlist(writer)
    assert listed.ended
    assert listed.start_rec_time_ms == round((T0 + 0.25) * 1000)
    assert (listed.width, listed.height) == (64, 48)
    assert [e.uri for e in listed.entries] == [s.name for s in segments]
    assert [e.duration for e in listed.entries] == pytest.approx([2.0, 2.0, 1.0], abs=0.001)
    [first] = firsts
    assert first.playlist_name == f"{stem}.m3u8" and first.user_id == "alice" and first.track_type == "video"
    assert first.begin_timestamp_ms == round((T0 + 0.25) * 1000)
    assert first.segment == segments[0]


def test_mixed_stream_names_and_both_tracks(tmp_path: Path) -> None:
    writer = HlsWriter(StreamNames.mixed(SDKAPPID, "room/a=", ha=1), HlsOutput(tmp_path, segment_seconds=2),
                       video=VIDEO, audio=AUDIO)
    for frame, t in interleave(video_frames(T0, 4.0), tone_frames(T0, 4.0, hz=440)):
        writer.write(frame, t)
    segments = writer.close()
    room = naming.encode_room_id("room/a=")
    assert writer.names.playlist == f"ha1_{SDKAPPID}_{room}.m3u8"
    # the first packet is the AAC encoder's priming frame, 1024 samples before the first sample
    assert segments[0].name == f"ha1_{SDKAPPID}_{room}_20240501095959978.ts"
    assert naming.parse_name(segments[1].name).start == datetime(2024, 5, 1, 10, 0, 2, tzinfo=UTC)
    assert writer.track_type == "audio_video"
    for s in segments:
        with av.open(s.local_path) as container:
            assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
    assert sum(e.duration for e in _playlist(writer).entries) == pytest.approx(4.0, abs=0.1)


def test_mixed_samples_written_as_blocks_are_encoded_where_they_belong(tmp_path: Path) -> None:
    writer = HlsWriter(StreamNames.mixed(SDKAPPID, ROOM), HlsOutput(tmp_path, segment_seconds=2), audio=AUDIO)
    tone = (0.3 * np.sin(2 * np.pi * 660 * np.arange(48000 * 3) / 48000)).astype(np.float32).reshape(1, -1)
    for i in range(0, tone.shape[1], 3200):  # a mixer's span per canvas at 15 fps
        writer.write_samples(tone[:, i:i + 3200], T0 + i / 48000)
    writer.write_samples(tone[:, :48000], T0 + 5)  # after a 2 s hole: a new run, a hole in the timestamps
    segments = writer.close()
    assert [dominant_hz(Path(s.local_path or "")) for s in segments] == pytest.approx([660] * len(segments), abs=5)
    assert sum(e.duration for e in _playlist(writer).entries) == pytest.approx(4.0, abs=0.1)
    # the new run's first packet is its encoder's priming frame, 1024 samples before its first sample
    assert naming.parse_name(segments[-1].name).start == datetime(2024, 5, 1, 10, 0, 4, 978000, tzinfo=UTC)


def test_segments_durations_content_and_totals_per_user(tmp_path: Path) -> None:
    for user, (color, hz) in USERS.items():
        video, audio = _video_writer(tmp_path, user), _audio_writer(tmp_path, user)
        for frame, t in interleave(video_frames(T0, 7.0, color=color), tone_frames(T0, 7.0, hz=hz)):
            (video if isinstance(frame, av.VideoFrame) else audio).write(frame, t)
        for writer, kind in ((video, "video"), (audio, "audio")):
            segments = writer.close()
            listed = _playlist(writer)
            total = sum(e.duration for e in listed.entries)
            assert total == pytest.approx(7.0, abs=0.5), kind
            assert [e.duration for e in listed.entries][:-1] == pytest.approx([2.0] * 3, abs=0.05), kind
            for s in segments:
                path = Path(s.local_path or "")
                times = stream_times(path, kind)
                assert times.end - times.first == pytest.approx(s.duration, abs=0.03)
                if kind == "video":
                    assert mean_rgb(path) == pytest.approx(color, abs=6)
                else:
                    assert dominant_hz(path) == pytest.approx(hz, abs=5)
            assert listed.effective_target_duration() == 2


def test_gaps_stay_gaps(tmp_path: Path) -> None:
    """Publishing 0-3 s, 3.6-5 s (short gap inside a segment) and 8.5-10 s (long gap)."""
    video, audio = _video_writer(tmp_path), _audio_writer(tmp_path)
    runs = [(0.0, 3.0), (3.6, 1.4), (8.5, 1.5)]
    for start, seconds in runs:
        for frame, t in interleave(video_frames(T0 + start, seconds), tone_frames(T0 + start, seconds, hz=440)):
            (video if isinstance(frame, av.VideoFrame) else audio).write(frame, t)
    for writer, kind in ((video, "video"), (audio, "audio")):
        segments = writer.close()
        # wall time of every decoded frame: segment start + offset inside the segment
        walls: list[float] = []
        for s in segments:
            times = stream_times(Path(s.local_path or ""), kind)
            walls += [s.start - T0 + (t - times.first) for t in times.times]
        assert segments[-1].start - T0 == pytest.approx(8.5, abs=0.03), kind
        jumps = [(a, b) for a, b in zip(walls, walls[1:], strict=False) if b - a > 0.2]
        assert len(jumps) == 2, (kind, jumps)
        (a1, b1), (a2, b2) = jumps
        assert b1 == pytest.approx(3.6, abs=0.03) and a1 == pytest.approx(3.0, abs=0.1), kind
        assert b2 == pytest.approx(8.5, abs=0.03) and a2 == pytest.approx(5.0, abs=0.1), kind
        fed = sum(seconds for _, seconds in runs)
        covered = sum(d for d in (stream_times(Path(s.local_path or ""), kind).durations for s in segments)
                      for d in d)
        assert covered == pytest.approx(fed, abs=0.1), kind


def _rgb_at(path: Path, t: float) -> np.ndarray:
    """The RGB picture shown at ``t`` seconds after the first frame."""
    with av.open(str(path)) as container:
        chosen, first = None, None
        for frame in container.decode(video=0):
            first = frame.time if first is None else first
            if frame.time is not None and first is not None and frame.time - first > t + 1e-3:
                break
            chosen = frame
        assert chosen is not None
        return chosen.to_ndarray(format="rgb24")


def test_a_requested_size_keeps_the_aspect_ratio(tmp_path: Path) -> None:
    """96x80 pictures into a 64x48 recording: scaled to fit and pillarboxed, never squeezed."""
    writer = _video_writer(tmp_path)
    for frame, t in video_frames(T0, 1.0, size=(96, 80), color=(40, 200, 40)):
        writer.write(frame.reformat(format="rgb24"), t)
    [segment] = writer.close()
    with av.open(segment.local_path) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.width, ctx.height) == (64, 48)
    picture = _rgb_at(Path(segment.local_path or ""), 0.5)
    assert picture[24, 32] == pytest.approx((40, 200, 40), abs=8)  # the picture, centred
    assert picture[24, 1].max() < 30 and picture[24, 62].max() < 30  # black bars left and right
    assert picture[1, 32] == pytest.approx((40, 200, 40), abs=12)  # full height: 58x48 fits 64x48


def test_each_stream_keeps_its_own_size(tmp_path: Path) -> None:
    """No size asked: a 1280x720 and a 640x360 anchor keep theirs (and the playlist says so)."""
    own = VideoEncoding(bitrate=300000, gop_seconds=2)
    sizes = {"alice": (1280, 720), "bob": (640, 360)}
    for user, size in sizes.items():
        writer = _video_writer(tmp_path, user, encoding=own)
        for frame, t in video_frames(T0, 1.0, size=size):
            writer.write(frame, t)
        [segment] = writer.close()
        with av.open(segment.local_path) as container:
            ctx = container.streams.video[0].codec_context
            assert (ctx.width, ctx.height) == size
        assert (_playlist(writer).width, _playlist(writer).height) == size


def test_a_resolution_change_mid_stream_is_not_squeezed(tmp_path: Path) -> None:
    """720p, then 360p (congestion: same shape, scaled back up), then a 4:3 picture (pillarboxed)."""
    writer = _video_writer(tmp_path, encoding=VideoEncoding(bitrate=300000, gop_seconds=2))
    red, green, blue = (200, 40, 40), (40, 200, 40), (40, 40, 200)
    for start, size, color in ((0.0, (1280, 720), red), (2.0, (640, 360), green), (4.0, (480, 360), blue)):
        for frame, t in video_frames(T0 + start, 2.0, size=size, color=color):
            writer.write(frame, t)
    segments = writer.close()
    assert writer.stored_size == (1280, 720)
    assert (_playlist(writer).width, _playlist(writer).height) == (1280, 720)
    pictures = {round(s.start - T0): _rgb_at(Path(s.local_path or ""), 1.0) for s in segments}
    assert set(pictures) == {0, 2, 4}
    for at, color in ((0, red), (2, green)):
        assert pictures[at].shape == (720, 1280, 3)
        assert pictures[at][::90, ::160].reshape(-1, 3).mean(axis=0) == pytest.approx(color, abs=8)  # edge to edge
    four_three = pictures[4]
    assert four_three[360, 640] == pytest.approx(blue, abs=8)
    assert four_three[360, 20].max() < 30 and four_three[360, 1260].max() < 30  # 960x720 centred on black


def test_a_segment_file_without_media_is_neither_kept_nor_listed(tmp_path: Path, monkeypatch: Any) -> None:
    """A closed segment whose file holds only the TS tables (seen once in CI as the last segment
    of a recording) is dropped: every listed segment opens in a player."""
    writer = _video_writer(tmp_path)
    for frame, t in video_frames(T0, 5.0):
        writer.write(frame, t)
    for packet in writer._video.flush() if writer._video else []:
        writer.sink.mux(packet, "video")
    monkeypatch.setattr(hls_sink, "EMPTY_TS_BYTES", 10**9)  # the open (last) segment counts as empty
    segments = writer.close()
    assert [round(s.start - T0) for s in segments] == [0, 2]
    assert [e.uri for e in _playlist(writer).entries] == [s.name for s in segments]
    assert sorted(p.name for p in writer.work_dir.glob("*.ts*")) == sorted(s.name for s in segments)


def test_a_segment_of_a_few_pictures_is_probed_as_mpeg_ts(tmp_path: Path) -> None:
    """A stop two pictures after a cut leaves a segment of a few TS packets, which FFmpeg's format
    probe took for MPEG-PS ("End of file" in ffprobe and av.open): it is padded with null packets."""
    writer = _video_writer(tmp_path, encoding=VideoEncoding(bitrate=600000, gop_seconds=2))
    picture = np.zeros((720, 1280, 3), np.uint8)
    picture[:] = (40, 200, 40)
    for i in range(32):  # 2 s at 15 fps, and two pictures more
        writer.write(av.VideoFrame.from_ndarray(picture, format="rgb24"), T0 + i / 15)
    last = writer.close()[-1]
    data = Path(last.local_path or "").read_bytes()
    with av.open(io.BytesIO(data)) as container:  # probed, as a player opening one segment does
        assert container.format.name == "mpegts"
        assert len([f for f in container.decode(video=0)]) == 2


def test_a_frame_rate_cap_drops_pictures_and_none_keeps_them(tmp_path: Path) -> None:
    capped = _video_writer(tmp_path, "alice")  # max 15 fps
    free = _video_writer(tmp_path, "bob", encoding=VideoEncoding(bitrate=100000, gop_seconds=2))
    for writer in (capped, free):
        for frame, t in video_frames(T0, 2.0, fps=30):
            writer.write(frame, t)
        writer.close()
    counts = [sum(len(stream_times(Path(s.local_path or ""), "video").times) for s in w.segments)
              for w in (capped, free)]
    assert counts == [30, 60]


def test_frame_time_is_the_default_capture_time(tmp_path: Path) -> None:
    writer = _audio_writer(tmp_path)
    for frame, _ in tone_frames(T0 + 1.5, 1.0, hz=440):
        writer.write(frame)  # pts/time_base carry the wall clock
    [segment] = writer.close()
    assert segment.start == pytest.approx(T0 + 1.5, abs=0.03)


def test_uploads_to_stack_minio(s3: Any, bucket: str, tmp_path: Path) -> None:
    up = Uploader(s3, bucket, tmp_path / "spool")
    writers = [
        HlsTrackWriter(StreamNames.single(SDKAPPID, ROOM, "alice", "main", "video"),
                       HlsOutput(tmp_path / "v", up, segment_seconds=2, key_prefix="p", task_id="t"), VIDEO),
        HlsTrackWriter(StreamNames.single(SDKAPPID, ROOM, "alice", "main", "audio"),
                       HlsOutput(tmp_path / "a", up, segment_seconds=2, key_prefix="p", task_id="t"), AUDIO),
    ]
    video, audio = writers
    for frame, t in interleave(video_frames(T0, 5.0), tone_frames(T0, 5.0, hz=440)):
        (video if isinstance(frame, av.VideoFrame) else audio).write(frame, t)
    expected = set()
    for writer in writers:
        expected |= {s.key for s in writer.close()} | {writer.playlist_key}
    assert up.close(30)
    stored = {o.object_name for o in s3.list_objects(bucket, prefix="p/t/", recursive=True)}
    assert stored == expected
    body = s3.get_object(bucket, video.playlist_key)
    listed = playlist.parse(body.read().decode())
    assert listed.ended and len(listed.entries) == 3
    assert not list((tmp_path / "v").glob("*.ts")) and not list((tmp_path / "a").glob("*.ts"))
