"""What the benchmarks share: measuring one child process, medians, machine facts."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
FFMPEG = "/usr/bin/ffmpeg"


@dataclass(frozen=True)
class Sample:
    cpu_seconds: float
    wall_seconds: float
    peak_rss_mib: float


# The measured child is started from this small, fresh interpreter and reaped there: on Linux a
# child's ru_maxrss starts at the peak RSS of the process it was forked from (the hiwater mark
# survives fork and exec), so spawning it from the benchmark process itself -- which has imported
# PyAV and generated the media -- would report that process's peak for both sides. The launcher's
# own peak (a few MiB) is the floor instead.
LAUNCHER = """
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(out, "w") as f:
    json.dump({"exit": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime,
               "wall": wall, "maxrss_kib": usage.ru_maxrss}, f)
"""


def measure(argv: list[str], log: Path) -> Sample:
    """Run ``argv`` to completion; CPU time (user+sys, all threads), wall time and peak RSS of that
    child alone, from ``os.wait4`` in a small launcher process (see :data:`LAUNCHER`)."""
    usage_file = log.with_name(log.name + ".usage.json")
    with log.open("wb") as sink:
        subprocess.run([sys.executable, "-S", "-c", LAUNCHER, str(usage_file), *argv], stdin=subprocess.DEVNULL,
                       stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, check=True)
    usage = json.loads(usage_file.read_text())
    if usage["exit"] != 0:
        raise RuntimeError(f"{argv[0]} ... exited {usage['exit']}:\n{log.read_text(errors='replace')[-3000:]}")
    # Linux reports ru_maxrss in KiB.
    return Sample(round(usage["cpu"], 3), round(usage["wall"], 3), round(usage["maxrss_kib"] / 1024, 1))


def median(samples: list[Sample]) -> Sample:
    return Sample(
        round(statistics.median(s.cpu_seconds for s in samples), 3),
        round(statistics.median(s.wall_seconds for s in samples), 3),
        round(statistics.median(s.peak_rss_mib for s in samples), 1),
    )


def ratios(cap: Sample, ref: Sample) -> dict[str, float]:
    return {
        "cpu_seconds": round(cap.cpu_seconds / ref.cpu_seconds, 2),
        "wall_seconds": round(cap.wall_seconds / ref.wall_seconds, 2),
        "peak_rss_mib": round(cap.peak_rss_mib / ref.peak_rss_mib, 2),
    }


def print_table(medians: dict[str, Sample], ratio: dict[str, float], repeats: int) -> None:
    print()
    print(f"{'median of ' + str(repeats):16} {'CPU s':>8} {'wall s':>8} {'peak RSS MiB':>13}")
    for name, m in medians.items():
        print(f"{name:16} {m.cpu_seconds:8.2f} {m.wall_seconds:8.2f} {m.peak_rss_mib:13.1f}")
    print(f"{'capstan/ffmpeg':16} {ratio['cpu_seconds']:8.2f} {ratio['wall_seconds']:8.2f} "
          f"{ratio['peak_rss_mib']:13.2f}")


def print_run(repeat: int, repeats: int, name: str, sample: Sample) -> None:
    print(f"  run {repeat}/{repeats} {name:8} cpu {sample.cpu_seconds:6.2f} s  "
          f"wall {sample.wall_seconds:6.2f} s  peak RSS {sample.peak_rss_mib:6.1f} MiB", flush=True)


def x264_banner(data: bytes) -> str:
    """The x264 version and options an encoder wrote into its stream (SEI user data)."""
    found = re.search(rb"x264 - core [\x20-\x7e\xa9]*", data)
    return found.group(0).decode("latin-1") if found else "?"


def x264_summary(banner: str, keys: tuple[str, ...] = ("threads", "lookahead_threads", "rc", "crf", "ref",
                                                        "subme", "me", "bframes", "rc_lookahead")) -> str:
    """Version plus the options that matter for comparing the two encoders."""
    version = re.search(r"core \d+( r\d+ \w+)?", banner)
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


def machine() -> dict[str, object]:
    import av

    return {
        "cpus": os.cpu_count(), "cpu_model": cpu_model(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "pyav": av.__version__,
        "pyav_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "ffmpeg": ffmpeg_version(),
    }


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
