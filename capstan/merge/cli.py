"""``capstan-merge``: merge single-stream recording files into one MP4 per user or per section.

Options follow TRTC's merge script (seed 002); ``-f`` also takes ``s3://bucket/prefix``.
Exit status: 0 all merged; 1 failed (missing directory, no recognisable files, S3 error, an
output that could not be written); 2 bad usage; 3 merged, but some segments were damaged and
left out (each is reported).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import av

from capstan.merge import discovery, plan, s3
from capstan.merge.encode import DamagedSegment, encode, probe
from capstan.merge.progress import Progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DAMAGED = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capstan-merge",
        description="Merge single-stream recording files (HLS/TS, TRTC naming) into MP4 files.",
    )
    parser.add_argument("-f", dest="source", required=True,
                        help="directory of recording files, or s3://bucket/prefix")
    parser.add_argument("-m", dest="mode", type=int, choices=[0, 1], default=0,
                        help="0: one MP4 per section (default); 1: one MP4 per user")
    parser.add_argument("-s", dest="skip_blanks", action="store_true",
                        help="with -m 1, drop the blanks between sections instead of filling them")
    parser.add_argument("-a", dest="audio_with", type=int, choices=[0, 1, 2], default=0,
                        help="audio goes with 0: the main stream (default), 1: main if present "
                             "else aux, 2: the aux stream")
    parser.add_argument("-p", dest="fps", type=int, default=plan.DEFAULT_FPS,
                        help=f"output frame rate, clamped to {plan.MIN_FPS}-{plan.MAX_FPS} (default 15)")
    parser.add_argument("-r", dest="resolution", type=int, nargs=2, metavar=("W", "H"),
                        help="output resolution (default: the first video segment's)")
    parser.add_argument("-o", dest="output",
                        help="output directory (default: the -f directory; the current one for s3://)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on its own; keep main() returning a status
        return int(exc.code or 0)
    out, err = sys.stdout, sys.stderr
    if args.resolution and min(args.resolution) < 2:
        err.write("capstan-merge: error: -r needs a width and height of at least 2\n")
        return EXIT_USAGE
    fps = plan.clamp_fps(args.fps)
    if fps != args.fps:
        err.write(f"capstan-merge: frame rate {args.fps} clamped to {fps}\n")

    if s3.is_s3_url(args.source):
        with tempfile.TemporaryDirectory(prefix="capstan-merge-") as tmp:
            try:
                err.write(f"downloading {args.source} ...\n")
                files = s3.download_recordings(s3.client_from_env(), args.source, tmp)
            except s3.S3Error as exc:
                err.write(f"capstan-merge: error: {exc}\n")
                return EXIT_FAILED
            err.write(f"downloaded {len(files)} files\n")
            return _merge(Path(tmp), Path(args.output or "."), args, fps, out, err)
    source = Path(args.source)
    if not source.is_dir():
        err.write(f"capstan-merge: error: {source} is not a directory\n")
        return EXIT_FAILED
    return _merge(source, Path(args.output) if args.output else source, args, fps, out, err)


def _merge(
    source: Path, output_dir: Path, args: argparse.Namespace, fps: int, out: TextIO, err: TextIO
) -> int:
    found = discovery.discover(source)
    for path in found.missing:
        err.write(f"warning: listed in a playlist but missing: {path}\n")
    for path, reason in found.bad_playlists:
        err.write(f"warning: unreadable playlist {path}: {reason}\n")
    if not found.segments:
        err.write(f"capstan-merge: error: no single-stream recording segments in {args.source}\n")
        return EXIT_FAILED

    damaged: set[str] = set()

    def report(path: str, reason: str) -> None:
        if path not in damaged:
            damaged.add(path)
            err.write(f"damaged segment, skipped: {path}: {reason}\n")

    segments = []
    for item in found.segments:
        assert item.name.track is not None and item.name.start is not None  # single-stream segments
        try:
            info = probe(item.path, item.name.track)
        except DamagedSegment as exc:
            report(item.path, str(exc))
            continue
        segments.append(plan.Segment(item.path, item.name, item.name.start.timestamp(), info.duration,
                                     info.media_start, info.width, info.height))
    plans = plan.plan_outputs(plan.group_by_user(segments), plan.MergeMode(args.mode),
                              plan.AudioWith(args.audio_with), skip_blanks=args.skip_blanks)
    if not plans:
        err.write("capstan-merge: error: nothing to merge (every segment is damaged or filtered by -a)\n")
        return EXIT_FAILED

    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        err.write(f"capstan-merge: error: cannot create {output_dir}: {exc}\n")
        return EXIT_FAILED
    size = (args.resolution[0], args.resolution[1]) if args.resolution else None
    progress = Progress(err)
    failed = 0
    for number, output in enumerate(plans, 1):
        target = output_dir / output.file_name
        progress.start(f"[{number}/{len(plans)}] {output.file_name}", output.duration)
        try:
            encode(output, str(target), fps=fps, size=size,
                   on_damaged=lambda segment, reason: report(segment.path, reason),
                   on_progress=progress.update)
        except (OSError, av.FFmpegError) as exc:
            err.write(f"\ncapstan-merge: error: cannot write {target}: {exc}\n")
            failed += 1
            continue
        progress.finish()
        tracks = ("video" if output.has_video else "") + ("+audio" if output.has_audio else "")
        out.write(f"{target}\t{output.duration:.3f}s\t{tracks.strip('+')}\n")
    if failed:
        return EXIT_FAILED
    return EXIT_DAMAGED if damaged else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
