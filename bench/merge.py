"""capstan-merge against a plain FFmpeg pipeline, same run.

One segment set is generated once (one user, main video 640x360@15 fps with a flash every
second, a 440 Hz tone, 60 s in 10 s TS segments, made by ``tests/merge/tsgen.py``). Then, in
turn, three times each:

- ``capstan-merge -f DIR -o OUT`` in a child process;
- Debian's ``ffmpeg`` concatenating the same video and audio segments (concat demuxer) and
  encoding them with capstan's settings (libx264 preset veryfast crf 23, yuv420p, 640x360,
  15 fps; AAC 128 kb/s 48 kHz stereo) into an MP4.

Each child is reaped with ``os.wait4``: CPU seconds are its user+sys time (threads included),
peak RSS its ``ru_maxrss``. Medians and the capstan/ffmpeg ratios are printed and written to
``bench/results/merge.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av

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
from tests.merge import tsgen

USER = "alice"
SIZE = (640, 360)
FPS = 15
SECONDS = 60.0
SEGMENT_SECONDS = 10.0
# Capstan's encoder settings (capstan/merge/encode.py); the FFmpeg pipeline uses the same.
X264_PRESET, X264_CRF = "veryfast", "23"
AUDIO_RATE, AUDIO_CHANNELS, AUDIO_BITRATE = 48000, 2, "128k"


@dataclass(frozen=True)
class Output:
    duration: float
    video_frames: int
    audio_seconds: float
    x264: str  # the x264 version and options the encoder wrote into the stream


def generate(directory: Path) -> None:
    runs = [tsgen.Run(0.0, SECONDS)]
    flashes = tuple(float(s) for s in range(int(SECONDS)))  # some changing pictures, not one still
    tsgen.write_video(directory, USER, "main", runs, color=(30, 90, 160), size=SIZE, fps=FPS,
                      segment_seconds=SEGMENT_SECONDS, flashes=flashes)
    tsgen.write_audio(directory, USER, runs, tone_hz=440.0, segment_seconds=SEGMENT_SECONDS)


def capstan_argv(source: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "capstan.merge.cli", "-f", str(source), "-o", str(out)]


def ffmpeg_argv(source: Path, out: Path) -> list[str]:
    lists = []
    for track in ("video", "audio"):
        listing = out.parent / f"{track}.txt"
        segments = sorted(source.glob(f"*_{track}_*.ts"))  # <utc> in the name: sorted = in time order
        listing.write_text("".join(f"file '{p}'\n" for p in segments))
        lists.append(listing)
    return [
        FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "concat", "-safe", "0", "-i", str(lists[0]),
        "-f", "concat", "-safe", "0", "-i", str(lists[1]),
        "-map", "0:v:0", "-map", "1:a:0",
        "-vf", f"fps={FPS},scale={SIZE[0]}:{SIZE[1]},format=yuv420p",
        "-c:v", "libx264", "-preset", X264_PRESET, "-crf", X264_CRF,
        "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ar", str(AUDIO_RATE), "-ac", str(AUDIO_CHANNELS),
        "-f", "mp4", str(out / "ffmpeg.mp4"),
    ]


def inspect(directory: Path) -> Output:
    """Check the run did the whole job: one MP4 of the full length with video and audio."""
    files = sorted(directory.glob("*.mp4"))
    if len(files) != 1:
        raise RuntimeError(f"expected one MP4 in {directory}, found {[f.name for f in files]}")
    with av.open(str(files[0])) as container:
        duration = (container.duration or 0) / av.time_base
        video = sum(1 for p in container.demux(video=0) if p.size)
    with av.open(str(files[0])) as container:
        audio = sum((p.duration or 0) for p in container.demux(audio=0) if p.size)
        audio_seconds = float(audio * container.streams.audio[0].time_base)
    return Output(round(duration, 3), video, round(audio_seconds, 3), x264_banner(files[0].read_bytes()))


def run(repeats: int, results: Path) -> dict[str, object]:
    print("== merge: capstan-merge vs ffmpeg concat + encode", flush=True)
    with tempfile.TemporaryDirectory(prefix="capstan-bench-") as tmp:
        work = Path(tmp)
        source = work / "segments"
        source.mkdir()
        started = time.perf_counter()
        generate(source)
        print(f"generated {len(list(source.glob('*.ts')))} TS segments ({SECONDS:.0f} s of "
              f"{SIZE[0]}x{SIZE[1]}@{FPS} video + audio) in {time.perf_counter() - started:.1f} s", flush=True)

        runs: dict[str, list[Sample]] = {"capstan": [], "ffmpeg": []}
        outputs: dict[str, Output] = {}
        builders = {"capstan": capstan_argv, "ffmpeg": ffmpeg_argv}
        for repeat in range(1, repeats + 1):
            for name, build in builders.items():  # alternate, so load changes hit both alike
                out = work / name / "out"
                shutil.rmtree(out.parent, ignore_errors=True)
                out.mkdir(parents=True)
                sample = measure(build(source, out), out.parent / "log.txt")
                runs[name].append(sample)
                outputs[name] = inspect(out)
                print_run(repeat, repeats, name, sample)

    medians = {name: median(samples) for name, samples in runs.items()}
    ratio = ratios(medians["capstan"], medians["ffmpeg"])
    print_table(medians, ratio, repeats)
    for name, o in outputs.items():
        print(f"{name} output: {o.duration:.3f} s, {o.video_frames} video frames, "
              f"{o.audio_seconds:.3f} s audio; x264 {x264_summary(o.x264)}")

    report = {
        "benchmark": "merge",
        "workload": {
            "users": 1, "video": f"{SIZE[0]}x{SIZE[1]}@{FPS} H.264 (solid colour, flash every second)",
            "audio": "AAC mono 48 kHz, 440 Hz tone", "media_seconds": SECONDS,
            "segment_seconds": SEGMENT_SECONDS,
        },
        "settings": {
            "x264_preset": X264_PRESET, "x264_crf": int(X264_CRF), "fps": FPS, "size": list(SIZE),
            "audio": f"aac {AUDIO_BITRATE} {AUDIO_RATE} Hz {AUDIO_CHANNELS} ch",
        },
        "repeats": repeats,
        "median": {name: asdict(m) for name, m in medians.items()},
        "ratio_capstan_over_ffmpeg": ratio,
        "runs": {name: [asdict(s) for s in samples] for name, samples in runs.items()},
        "outputs": {name: {**asdict(o), "x264": x264_summary(o.x264)} for name, o in outputs.items()},
        "machine": machine(),
        "measured_at": now_utc(),
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {results}\n", flush=True)
    return report
