"""``python -m bench`` (``make bench``): capstan-merge against a plain FFmpeg pipeline, same run.

Project rule: speed and memory targets are ratios against plain FFmpeg doing the same work on
the same machine in the same run, never absolute timings asserted in tests.

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

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av

from tests.merge import tsgen

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "merge.json"
FFMPEG = "/usr/bin/ffmpeg"

USER = "alice"
SIZE = (640, 360)
FPS = 15
SECONDS = 60.0
SEGMENT_SECONDS = 10.0
# Capstan's encoder settings (capstan/merge/encode.py); the FFmpeg pipeline uses the same.
X264_PRESET, X264_CRF = "veryfast", "23"
AUDIO_RATE, AUDIO_CHANNELS, AUDIO_BITRATE = 48000, 2, "128k"


@dataclass(frozen=True)
class Sample:
    cpu_seconds: float
    wall_seconds: float
    peak_rss_mib: float


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


def measure(argv: list[str], log: Path) -> Sample:
    """Run ``argv`` to completion; CPU time and peak RSS of that child alone (``wait4``)."""
    with log.open("wb") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} ... exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
    # Linux reports ru_maxrss in KiB.
    return Sample(round(usage.ru_utime + usage.ru_stime, 3), round(wall, 3), round(usage.ru_maxrss / 1024, 1))


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
    found = re.search(rb"x264 - core [\x20-\x7e\xa9]*", files[0].read_bytes())
    x264 = found.group(0).decode("latin-1") if found else "?"
    return Output(round(duration, 3), video, round(audio_seconds, 3), x264)


def x264_summary(banner: str) -> str:
    """Version plus the options that matter for comparing the two encoders."""
    version = re.search(r"core \d+( r\d+ \w+)?", banner)
    keys = ("threads", "lookahead_threads", "rc", "crf", "ref", "subme", "me", "bframes", "rc_lookahead")
    options = [m.group(0) for k in keys for m in [re.search(rf"\b{k}=\S+", banner)] if m]
    return f"{version.group(0) if version else '?'}: {' '.join(options)}"


def ffmpeg_version() -> str:
    first = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, check=True).stdout
    return first.splitlines()[0]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def median(samples: list[Sample]) -> Sample:
    return Sample(
        round(statistics.median(s.cpu_seconds for s in samples), 3),
        round(statistics.median(s.wall_seconds for s in samples), 3),
        round(statistics.median(s.peak_rss_mib for s in samples), 1),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--repeats", type=int, default=3, help="runs of each pipeline (default 3)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    args = parser.parse_args(argv)
    if not Path(FFMPEG).is_file():
        print(f"bench: {FFMPEG} not found (Debian package ffmpeg)", file=sys.stderr)
        return 1

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
        for repeat in range(1, args.repeats + 1):
            for name, build in builders.items():  # alternate, so load changes hit both alike
                out = work / name / "out"
                shutil.rmtree(out.parent, ignore_errors=True)
                out.mkdir(parents=True)
                sample = measure(build(source, out), out.parent / "log.txt")
                runs[name].append(sample)
                outputs[name] = inspect(out)
                print(f"  run {repeat}/{args.repeats} {name:8} cpu {sample.cpu_seconds:6.2f} s  "
                      f"wall {sample.wall_seconds:6.2f} s  peak RSS {sample.peak_rss_mib:6.1f} MiB", flush=True)

    medians = {name: median(samples) for name, samples in runs.items()}
    cap, ref = medians["capstan"], medians["ffmpeg"]
    ratios = {
        "cpu_seconds": round(cap.cpu_seconds / ref.cpu_seconds, 2),
        "wall_seconds": round(cap.wall_seconds / ref.wall_seconds, 2),
        "peak_rss_mib": round(cap.peak_rss_mib / ref.peak_rss_mib, 2),
    }
    print()
    print(f"{'median of ' + str(args.repeats):16} {'CPU s':>8} {'wall s':>8} {'peak RSS MiB':>13}")
    for name, m in medians.items():
        print(f"{name:16} {m.cpu_seconds:8.2f} {m.wall_seconds:8.2f} {m.peak_rss_mib:13.1f}")
    print(f"{'capstan/ffmpeg':16} {ratios['cpu_seconds']:8.2f} {ratios['wall_seconds']:8.2f} "
          f"{ratios['peak_rss_mib']:13.2f}")
    for name, o in outputs.items():
        print(f"{name} output: {o.duration:.3f} s, {o.video_frames} video frames, "
              f"{o.audio_seconds:.3f} s audio; x264 {x264_summary(o.x264)}")

    load = os.getloadavg()
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
        "repeats": args.repeats,
        "median": {name: asdict(m) for name, m in medians.items()},
        "ratio_capstan_over_ffmpeg": ratios,
        "runs": {name: [asdict(s) for s in samples] for name, samples in runs.items()},
        "outputs": {name: {**asdict(o), "x264": x264_summary(o.x264)} for name, o in outputs.items()},
        "machine": {
            "cpus": os.cpu_count(), "cpu_model": cpu_model(), "load_average_at_end": [round(x, 2) for x in load],
            "python": platform.python_version(), "pyav": av.__version__,
            "pyav_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "ffmpeg": ffmpeg_version(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
