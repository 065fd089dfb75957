"""``python -m bench`` (``make bench``): capstan against plain FFmpeg doing the same work, same run.

Project rule: speed and memory targets are ratios against plain FFmpeg doing the same work on
the same machine in the same run, never absolute timings asserted in tests.

- merge (:mod:`bench.merge`): ``capstan-merge`` vs FFmpeg concatenating and encoding the same
  segments; ``bench/results/merge.json``.
- recorder (:mod:`bench.recorder`): the recorder's HLS writers vs FFmpeg encoding the same raw
  frames to HLS; ``bench/results/recorder.json``.
- operator (:mod:`bench.operator`): the operator with N tasks created at once (BENCH_OPERATOR_TASKS,
  default 1,000; quota 100) on the local stack: latencies, requests per task, CPU, RSS; not a ratio
  (there is no plain-FFmpeg counterpart); ``bench/results/operator.json``.
- operator_floor (:mod:`bench.operator_floor`): the same admissions' writes sent by a plain thread
  pool, no operator: what the API server here needs for them; ``bench/results/operator_floor.json``.
- push (:mod:`bench.push`): one StreamPush of a 720p30 H.264 file into LiveKit, pass-through and
  forced re-encode, beside ``ffmpeg -re`` copying and re-encoding; ``bench/results/push.json``.
- panorama (:mod:`bench.panorama`): one 1280x720@30 web recording, browser included, beside FFmpeg's
  x11grab + pulse capture of the same kind of display with the same settings; ``bench/results/panorama.json``.

Each side runs in a child process reaped with ``os.wait4`` (CPU user+sys, peak RSS), alternately,
three times each; medians and capstan/ffmpeg ratios are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import merge, operator_floor, panorama, push, recorder
from bench import operator as operator_bench
from bench.common import FFMPEG, RESULTS_DIR

BENCHMARKS = {"merge": merge.run, "recorder": recorder.run, "operator": operator_bench.run,
              "operator_floor": operator_floor.run, "push": push.run,
              "panorama": panorama.run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], metavar="NAME",
                        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("-n", "--repeats", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR,
                        help=f"directory for the JSON files (default {RESULTS_DIR})")
    args = parser.parse_args(argv)
    if not Path(FFMPEG).is_file():
        print(f"bench: {FFMPEG} not found (Debian package ffmpeg)", file=sys.stderr)
        return 1
    for name in args.names or BENCHMARKS:
        BENCHMARKS[name](args.repeats, args.results / f"{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
