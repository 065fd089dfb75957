"""The recorder's encoding side against FFmpeg encoding the same raw frames, same run.

Issue 3: CPU seconds per recorded minute of one 640x360@15 fps anchor (audio + video). The raw
media is generated once into files both sides read, so generating it costs neither side:

- ``video.yuv``: 900 yuv420p 640x360 pictures (60 s at 15 fps), a panned texture over a moving
  gradient with a moving box and light sensor noise, so x264 has real work;
- ``audio.raw``: 60 s of s16le mono 48 kHz, a 440 Hz tone.

Then, alternately, three times each (and each side once more on the first 2 s of the same files,
which gives its fixed cost: interpreter, imports, codec set-up; CPU per recorded minute is the
60 s run less that, per minute between the two):

- capstan: ``python -m bench.recorder VIDEO AUDIO OUT`` -- reads each picture straight into a new
  ``av.VideoFrame``'s planes (yuv420p, as a decoder fills them) and makes 10 ms ``av.AudioFrame``
  objects (s16 mono, as WebRTC delivers), with capture times, and feeds them in capture-time
  order to one :class:`~capstan.recorder.hls.HlsTrackWriter` per track, as the single-stream
  recorder does: the pipeline parts ``Scale → VideoEncoder → HlsSink`` and ``AudioConverter →
  AudioFramer → AudioEncoder → HlsSink`` (default VideoSpec/AudioSpec bitrates, 10 s segments,
  no uploader);
- ffmpeg: Debian's ``ffmpeg`` reading the same files as rawvideo / s16le and encoding them with
  the writer's settings (libx264 preset veryfast, 550 kb/s, GOP 150, no B-frames; AAC 64 kb/s
  48 kHz mono) to two HLS outputs (video, audio) of 10 s MPEG-TS segments.

Not included on either side: receiving and decoding the room's WebRTC stream.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bench.common import (
    FFMPEG,
    Sample,
    machine,
    measure,
    median,
    now_utc,
    print_run,
    print_table,
    ratios,
    x264_banner,
    x264_summary,
)

WIDTH, HEIGHT, FPS = 640, 360, 15
SECONDS = 60.0
AUDIO_RATE, AUDIO_CHANNELS = 48000, 1
AUDIO_CHUNK = 480  # 10 ms, what WebRTC delivers
TONE_HZ = 440.0
SEGMENT_SECONDS = 10
# The same work on the first seconds only: what a process costs whatever it records (interpreter,
# imports, codec set-up and flush), so the per-minute figure is what one more recorded minute costs.
SHORT_SECONDS = 2.0
# The writer's settings (capstan/recorder/hls.py with the API's default VideoSpec/AudioSpec
# bitrates and GOP); the FFmpeg side uses the same.
X264_PRESET = "veryfast"
VIDEO_BITRATE = 550000
GOP_SECONDS = 10
AUDIO_BITRATE = 64000
T0 = 1714557600.0  # capture time of the first frame (2024-05-01T10:00:00Z)
X264_KEYS = ("threads", "lookahead_threads", "rc", "bitrate", "ref", "subme", "me", "bframes", "keyint",
             "rc_lookahead")


@dataclass(frozen=True)
class Output:
    video_segments: int
    audio_segments: int
    video_seconds: float  # from the playlist (sum of EXTINF)
    audio_seconds: float
    video_frames: int
    audio_packets: int
    video_kbps: float  # TS bytes of the video segments over the media time
    audio_kbps: float
    x264: str


# --- the raw media -----------------------------------------------------------------------------


def generate(directory: Path) -> tuple[Path, Path]:
    """Write the raw yuv420p video and s16le audio once; both sides read these files."""
    rng = np.random.default_rng(3)
    frames = round(SECONDS * FPS)
    # A detailed texture (low-resolution noise, upscaled 4x and softened) larger than the frame, panned.
    coarse = rng.integers(0, 256, ((HEIGHT + 256) // 4, (WIDTH + 256) // 4), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((4, 4), np.uint8)).astype(np.float32)
    texture = (texture + np.roll(texture, 2, 0) + np.roll(texture, 2, 1) + np.roll(texture, (2, 2), (0, 1))) / 4
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    cy, cx = np.mgrid[0:HEIGHT // 2, 0:WIDTH // 2].astype(np.float32)
    video = directory / "video.yuv"
    with video.open("wb") as out:
        for i in range(frames):
            dx, dy = (3 * i) % 256, (2 * i) % 256
            gradient = (xx + yy + 4 * i) % 256
            luma = 0.55 * gradient + 0.45 * texture[dy:dy + HEIGHT, dx:dx + WIDTH]
            bx, by = (7 * i) % (WIDTH - 80), (HEIGHT - 80) // 2 + int(60 * np.sin(i / 15))
            luma[by:by + 80, bx:bx + 80] = 235
            luma += rng.normal(0, 2, luma.shape)  # sensor noise
            u = 128 + 60 * np.sin((cx + 2 * i) / 40)
            v = 128 + 60 * np.cos((cy + i) / 30)
            for plane in (luma, u, v):
                out.write(np.clip(plane, 0, 255).astype(np.uint8).tobytes())
    audio = directory / "audio.raw"
    n = np.arange(round(SECONDS * AUDIO_RATE))
    wave = (0.3 * 32767 * np.sin(2 * np.pi * TONE_HZ * n / AUDIO_RATE)).astype("<i2")
    audio.write_bytes(wave.tobytes())
    return video, audio


# --- the two sides ------------------------------------------------------------------------------


def capstan_argv(video: Path, audio: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "bench.recorder", str(video), str(audio), str(out)]


def ffmpeg_argv(video: Path, audio: Path, out: Path) -> list[str]:
    def hls(track: str) -> list[str]:
        (out / track).mkdir(parents=True, exist_ok=True)
        return ["-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_list_size", "0", "-hls_playlist_type", "vod",
                "-hls_segment_type", "mpegts", "-hls_segment_filename", str(out / track / "%03d.ts"),
                str(out / track / f"{track}.m3u8")]

    return [
        FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", str(video),
        "-f", "s16le", "-ar", str(AUDIO_RATE), "-ac", str(AUDIO_CHANNELS), "-i", str(audio),
        "-map", "0:v:0", "-c:v", "libx264", "-preset", X264_PRESET, "-b:v", str(VIDEO_BITRATE),
        "-g", str(GOP_SECONDS * FPS), "-bf", "0", "-forced-idr", "1", "-pix_fmt", "yuv420p", *hls("video"),
        "-map", "1:a:0", "-c:a", "aac", "-b:a", str(AUDIO_BITRATE), "-ar", str(AUDIO_RATE),
        "-ac", str(AUDIO_CHANNELS), *hls("audio"),
    ]


def read_picture(source: BinaryIO, picture_bytes: int) -> Any:
    """The next yuv420p picture, read straight into a new frame's planes (as a decoder fills them)."""
    import av

    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    for plane in frame.planes:
        if plane.line_size != plane.width:  # padded rows: read the rows one by one
            rows = np.frombuffer(source.read(plane.width * plane.height), np.uint8)
            if rows.size < plane.width * plane.height:
                return None
            plane.update(np.pad(rows.reshape(plane.height, plane.width),
                                ((0, 0), (0, plane.line_size - plane.width))).tobytes())
        elif source.readinto(memoryview(plane)) < plane.buffer_size:  # type: ignore[attr-defined]
            return None
    return frame


def record(video: Path, audio: Path, out: Path) -> None:
    """The capstan side, run in the measured child: raw files -> frames -> two HlsTrackWriters."""
    import av

    from capstan.media.pipeline.encoding import AudioEncoding, VideoEncoding
    from capstan.recorder.hls import HlsOutput, HlsTrackWriter, StreamNames

    def names(track: str) -> StreamNames:
        return StreamNames.single(1400000001, 1234, "alice", "main", track)

    writers = {
        "video": HlsTrackWriter(names("video"), HlsOutput(out / "video", segment_seconds=SEGMENT_SECONDS),
                                VideoEncoding(bitrate=VIDEO_BITRATE, gop_seconds=GOP_SECONDS, max_fps=FPS,
                                              preset=X264_PRESET)),
        "audio": HlsTrackWriter(names("audio"), HlsOutput(out / "audio", segment_seconds=SEGMENT_SECONDS),
                                AudioEncoding(AUDIO_RATE, AUDIO_CHANNELS, AUDIO_BITRATE)),
    }
    picture_bytes = WIDTH * HEIGHT * 3 // 2
    chunk_bytes = AUDIO_CHUNK * 2 * AUDIO_CHANNELS
    with video.open("rb") as vf, audio.open("rb") as af:
        picture, chunk = 0, 0
        video_done = audio_done = False
        while not (video_done and audio_done):
            video_time, audio_time = T0 + picture / FPS, T0 + chunk * AUDIO_CHUNK / AUDIO_RATE
            if not video_done and (audio_done or video_time <= audio_time):  # capture-time order, as a room
                frame = read_picture(vf, picture_bytes)
                if frame is None:
                    video_done = True
                    continue
                writers["video"].write(frame, video_time)
                picture += 1
            else:
                data = af.read(chunk_bytes)
                if not data:
                    audio_done = True
                    continue
                samples = np.frombuffer(data, "<i2").reshape(1, -1)
                sound = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
                sound.sample_rate = AUDIO_RATE
                writers["audio"].write(sound, audio_time)
                chunk += 1
    for writer in writers.values():
        writer.close()


# --- checks ---------------------------------------------------------------------------------------


def inspect(out: Path) -> Output:
    """Check the run did the whole job: both tracks, full length, in 10 s segments, with playlists."""
    import av

    found: dict[str, dict[str, float]] = {}
    banner = "?"
    for track in ("video", "audio"):
        segments = sorted((out / track).glob("*.ts"))
        lists = list((out / track).glob("*.m3u8"))
        if not segments or len(lists) != 1:
            raise RuntimeError(f"{out / track}: {len(segments)} segments, {len(lists)} playlists")
        text = lists[0].read_text()
        if "#EXT-X-ENDLIST" not in text:
            raise RuntimeError(f"{lists[0]} has no #EXT-X-ENDLIST")
        listed = sum(float(d) for d in re.findall(r"#EXTINF:([0-9.]+)", text))
        packets = 0
        for segment in segments:
            with av.open(str(segment)) as container:
                packets += sum(1 for p in container.demux() if p.size)
        size = sum(s.stat().st_size for s in segments)
        found[track] = {"segments": len(segments), "seconds": listed, "packets": packets, "bytes": size}
        if track == "video":  # the SEI is in the first packet (read from the TS it may be split by headers)
            with av.open(str(segments[0])) as container:
                banner = x264_banner(bytes(next(container.demux(video=0))))
    v, a = found["video"], found["audio"]
    result = Output(
        int(v["segments"]), int(a["segments"]), round(v["seconds"], 3), round(a["seconds"], 3),
        int(v["packets"]), int(a["packets"]), round(v["bytes"] * 8 / SECONDS / 1000, 1),
        round(a["bytes"] * 8 / SECONDS / 1000, 1), banner,
    )
    frames = round(SECONDS * FPS)
    if result.video_frames != frames or abs(result.video_seconds - SECONDS) > 0.5 \
            or abs(result.audio_seconds - SECONDS) > 0.5:
        raise RuntimeError(f"{out}: incomplete output {result}")
    return result


# --- the benchmark ----------------------------------------------------------------------------------


def per_minute(cpu_seconds: float) -> float:
    return round(cpu_seconds / (SECONDS / 60.0), 3)


def shorten(video: Path, audio: Path) -> tuple[Path, Path]:
    """The first SHORT_SECONDS of both files, for measuring each side's fixed cost."""
    short_video, short_audio = video.with_name("video-short.yuv"), audio.with_name("audio-short.raw")
    with video.open("rb") as src:
        short_video.write_bytes(src.read(round(SHORT_SECONDS * FPS) * WIDTH * HEIGHT * 3 // 2))
    with audio.open("rb") as src:
        short_audio.write_bytes(src.read(round(SHORT_SECONDS * AUDIO_RATE) * 2 * AUDIO_CHANNELS))
    return short_video, short_audio


def marginal_per_minute(long: float, short: float) -> float:
    """CPU seconds one more recorded minute costs: the long run less the short one, per minute between them."""
    return round((long - short) / ((SECONDS - SHORT_SECONDS) / 60.0), 3)


def run(repeats: int, results: Path) -> dict[str, object]:
    print(f"== recorder: HlsTrackWriter x2 vs ffmpeg, {SECONDS:.0f} s of {WIDTH}x{HEIGHT}@{FPS} + "
          f"{AUDIO_RATE // 1000} kHz audio", flush=True)
    with tempfile.TemporaryDirectory(prefix="capstan-bench-rec-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        video, audio = generate(work)
        print(f"generated raw media ({video.stat().st_size / 2**20:.0f} MiB yuv420p, "
              f"{audio.stat().st_size / 2**20:.1f} MiB s16le) in {time.perf_counter() - started:.1f} s", flush=True)

        short_video, short_audio = shorten(video, audio)
        runs: dict[str, list[Sample]] = {"capstan": [], "ffmpeg": []}
        short_runs: dict[str, list[Sample]] = {"capstan": [], "ffmpeg": []}
        outputs: dict[str, Output] = {}
        builders = {"capstan": capstan_argv, "ffmpeg": ffmpeg_argv}
        for repeat in range(1, repeats + 1):
            for name, build in builders.items():  # alternate, so load changes hit both alike
                out = work / name / "out"
                shutil.rmtree(out.parent, ignore_errors=True)
                out.mkdir(parents=True)
                sample = measure(build(video, audio, out), out.parent / "log.txt")
                runs[name].append(sample)
                outputs[name] = inspect(out)
                print_run(repeat, repeats, name, sample)
            for name, build in builders.items():
                out = work / name / "short"
                shutil.rmtree(out.parent, ignore_errors=True)
                out.mkdir(parents=True)
                sample = measure(build(short_video, short_audio, out), out.parent / "log.txt")
                short_runs[name].append(sample)
                print_run(repeat, repeats, f"{name} {SHORT_SECONDS:.0f} s", sample)

    medians = {name: median(samples) for name, samples in runs.items()}
    short_medians = {name: median(samples) for name, samples in short_runs.items()}
    ratio = ratios(medians["capstan"], medians["ffmpeg"])
    print_table(medians, ratio, repeats)
    whole = {name: per_minute(m.cpu_seconds) for name, m in medians.items()}
    fixed = {name: m.cpu_seconds for name, m in short_medians.items()}
    minute = {name: marginal_per_minute(medians[name].cpu_seconds, fixed[name]) for name in medians}
    minute_ratio = round(minute["capstan"] / minute["ffmpeg"], 2)
    print(f"CPU s of a {SHORT_SECONDS:.0f} s run (fixed cost): " + ", ".join(f"{n} {v:.2f}" for n, v in fixed.items()))
    print("CPU s per recorded minute (the 60 s run less the short one): "
          + ", ".join(f"{n} {v:.2f}" for n, v in minute.items()) + f"; capstan/ffmpeg {minute_ratio:.2f}")
    for name, o in outputs.items():
        print(f"{name} output: video {o.video_segments} segments {o.video_seconds:.3f} s {o.video_frames} frames "
              f"{o.video_kbps:.0f} kb/s; audio {o.audio_segments} segments {o.audio_seconds:.3f} s "
              f"{o.audio_kbps:.0f} kb/s; x264 {x264_summary(o.x264, X264_KEYS)}")

    report = {
        "benchmark": "recorder",
        "workload": {
            "anchors": 1, "media_seconds": SECONDS,
            "video": f"raw yuv420p {WIDTH}x{HEIGHT}@{FPS} (panned texture over a moving gradient, moving box, "
                     "sensor noise)",
            "audio": f"raw s16le mono {AUDIO_RATE} Hz, {TONE_HZ:.0f} Hz tone, fed in {AUDIO_CHUNK}-sample frames",
            "not_included": "receiving and decoding the room's WebRTC stream",
        },
        "settings": {
            "x264_preset": X264_PRESET, "video_bitrate": VIDEO_BITRATE, "gop_frames": GOP_SECONDS * FPS,
            "bframes": 0, "fps": FPS, "size": [WIDTH, HEIGHT],
            "audio": f"aac {AUDIO_BITRATE} b/s {AUDIO_RATE} Hz {AUDIO_CHANNELS} ch",
            "segment_seconds": SEGMENT_SECONDS, "container": "MPEG-TS HLS, one playlist per track",
        },
        "repeats": repeats,
        "median": {name: asdict(m) for name, m in medians.items()},
        "median_short_run": {name: asdict(m) for name, m in short_medians.items()},
        "short_run_seconds": SHORT_SECONDS,
        "cpu_seconds_whole_run_per_minute": whole,
        "cpu_seconds_per_recorded_minute": minute,
        "ratio_per_recorded_minute": minute_ratio,
        "ratio_capstan_over_ffmpeg": ratio,
        "runs": {name: [asdict(s) for s in samples] for name, samples in runs.items()},
        "short_runs": {name: [asdict(s) for s in samples] for name, samples in short_runs.items()},
        "outputs": {name: {**asdict(o), "x264": x264_summary(o.x264, X264_KEYS)} for name, o in outputs.items()},
        "machine": machine(),
        "measured_at": now_utc(),
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {results}\n", flush=True)
    return report


if __name__ == "__main__":  # the capstan side's child process: VIDEO AUDIO OUT
    record(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
