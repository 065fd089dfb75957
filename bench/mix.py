"""Mixed-stream recording vs FFmpeg's xstack + amix: 4 anchors at 640x360@15 into 1280x720@15 H.264 + AAC HLS.

- capstan: the mixed recorder's media path in one child process -- raw frames of 4 anchors ->
  Compositor (grid of 4; pictures scaled by swscale, pasted with numpy) + AudioMixer -> one
  HlsWriter (libx264 + AAC, HLS segments), no room and no uploader.
- ffmpeg: Debian's ``ffmpeg`` reading the same raw files, ``scale`` each to 640x360 (a no-op size,
  as the grid tile is the input size), ``xstack`` of 4, ``amix`` of 4, the same encoder settings.

Run: ``.venv/bin/python -m bench.mix [-n REPEATS]`` (``BENCH_MIX_SECONDS``: the media length, 60 s).
Writes ``bench/results/mix.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.common import FFMPEG, RESULTS_DIR, Sample, measure, median, print_table, ratios

SECONDS = int(os.environ.get("BENCH_MIX_SECONDS", "60"))  # long enough that start-up is a small part
IN_W, IN_H, OUT_W, OUT_H, FPS = 640, 360, 1280, 720, 15
RATE, CHUNK = 48000, 480  # 10 ms mono s16, as WebRTC delivers it
VIDEO_BITRATE, AUDIO_BITRATE, GOP_SECONDS, PRESET, SEGMENT_SECONDS = 1200000, 64000, 10, "veryfast", 10
TONES = (440.0, 660.0, 1000.0, 1320.0)
T0 = 1_700_000_000.0
STARTUP_FILE = "startup.json"  # the capstan child's CPU seconds before its first picture


def generate(directory: Path) -> list[tuple[Path, Path]]:
    """4 anchors: moving test pictures of distinct hues and a tone each, as raw yuv420p and s16le."""
    inputs = []
    for i, tone in enumerate(TONES):
        video, audio = directory / f"a{i}.yuv", directory / f"a{i}.pcm"
        subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={IN_W}x{IN_H}:rate={FPS}:duration={SECONDS}", "-vf", f"hue=h={90 * i}",
                        "-pix_fmt", "yuv420p", "-f", "rawvideo", str(video)], check=True)
        t = np.arange(SECONDS * RATE) / RATE
        audio.write_bytes((0.2 * np.sin(2 * np.pi * tone * t) * 32767).astype("<i2").tobytes())
        inputs.append((video, audio))
    return inputs


def ffmpeg_argv(inputs: list[tuple[Path, Path]], out: Path, *, x264_threads: str = "auto") -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    argv = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    for video, _ in inputs:
        argv += ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{IN_W}x{IN_H}", "-r", str(FPS), "-i", str(video)]
    for _, audio in inputs:
        argv += ["-f", "s16le", "-ar", str(RATE), "-ac", "1", "-i", str(audio)]
    graph = ";".join(f"[{i}:v]scale={OUT_W // 2}:{OUT_H // 2}[v{i}]" for i in range(4))
    graph += ";[v0][v1][v2][v3]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0[v]"
    graph += ";[4:a][5:a][6:a][7:a]amix=inputs=4:normalize=0[a]"
    return argv + ["-filter_complex", graph, "-map", "[v]", "-map", "[a]",
                   "-c:v", "libx264", "-threads", x264_threads, "-preset", PRESET, "-b:v", str(VIDEO_BITRATE),
                   "-g", str(GOP_SECONDS * FPS),
                   "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", str(AUDIO_BITRATE), "-ar", str(RATE),
                   "-ac", "1", "-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_list_size", "0",
                   "-hls_segment_filename", str(out / "%03d.ts"), str(out / "mix.m3u8")]


def ffmpeg_one_thread_argv(inputs: list[tuple[Path, Path]], out: Path) -> list[str]:
    """FFmpeg with x264 on one thread, as capstan runs it at this size (the fairest like for like)."""
    return ffmpeg_argv(inputs, out, x264_threads="1")


def capstan_argv(inputs: list[tuple[Path, Path]], out: Path) -> list[str]:
    return [sys.executable, "-m", "bench.mix", "--child", str(out), *(str(p) for pair in inputs for p in pair)]


def mix(out: Path, inputs: list[tuple[Path, Path]]) -> None:
    """The capstan side, in the measured child: what MixRecordingSession does per canvas."""
    import av

    from capstan.media.layouts import Feed, grid
    from capstan.media.pipeline.compose import AudioMixer, Compositor
    from capstan.media.pipeline.encoding import AudioEncoding, VideoEncoding
    from capstan.media.pipeline.processing import AudioConverter
    from capstan.recorder.hls import HlsOutput, HlsWriter, StreamNames

    writer = HlsWriter(StreamNames.mixed(1400000001, 1234), HlsOutput(out, segment_seconds=SEGMENT_SECONDS),
                       video=VideoEncoding(bitrate=VIDEO_BITRATE, gop_seconds=GOP_SECONDS, size=(OUT_W, OUT_H),
                                           max_fps=FPS, preset=PRESET),
                       audio=AudioEncoding(RATE, 1, AUDIO_BITRATE))
    feeds = [Feed(f"a{i}") for i in range(4)]
    windows = grid((OUT_W, OUT_H), feeds)
    compositor, mixer = Compositor((OUT_W, OUT_H), reuse=True), AudioMixer(1, tolerance=RATE // 10)
    converters = [AudioConverter(RATE, "mono") for _ in feeds]
    videos = [v.open("rb") for v, _ in inputs]
    audios = [a.open("rb") for _, a in inputs]
    mixer.start(round(T0 * RATE))
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the interpreter, imports and set-up: paid once per task
    (out / STARTUP_FILE).write_text(json.dumps({"cpu_seconds": usage.ru_utime + usage.ru_stime}))
    for n in range(SECONDS * FPS):
        moment = T0 + n / FPS
        pictures = {}
        for feed, source in zip(feeds, videos, strict=True):
            frame = av.VideoFrame(IN_W, IN_H, "yuv420p")  # a decoded picture, as a room delivers it
            for plane in frame.planes:  # read straight into it (one copy, as ffmpeg's rawvideo input)
                assert plane.line_size == plane.width and source.readinto(memoryview(plane)) == plane.buffer_size
            pictures[feed] = frame
        for i, source in enumerate(audios):  # the 10 ms frames up to this canvas, as a room delivers them
            while (position := source.tell() // 2) < (n + 1) * RATE // FPS:
                pcm = source.read(CHUNK * 2)
                sound = av.AudioFrame.from_ndarray(np.frombuffer(pcm, "<i2").reshape(1, -1), format="s16",
                                                   layout="mono")
                sound.sample_rate = RATE
                mixer.place(i, round(T0 * RATE) + position, converters[i](sound))
        taken = mixer.take(round(moment * RATE))
        if taken is not None:
            writer.write_samples(taken[1], taken[0] / RATE)
        writer.write_video(compositor.compose(windows, pictures), moment)
    writer.close()


def check(out: Path) -> dict[str, object]:
    """Duration, size and the tones in the output (both sides must produce the same thing)."""
    import av

    segments = sorted(out.glob("*.ts"))
    samples, pictures, size = [], 0, None
    for segment in segments:
        with av.open(str(segment)) as container:
            for frame in container.decode():
                if isinstance(frame, av.VideoFrame):
                    pictures, size = pictures + 1, (frame.width, frame.height)
                else:
                    samples.append(frame.to_ndarray().mean(axis=0))
    sound = np.concatenate(samples)[-RATE * 2:]
    spectrum = np.abs(np.fft.rfft(sound * np.hanning(len(sound))))
    freqs = np.fft.rfftfreq(len(sound), 1 / RATE)
    tones = all(spectrum[np.abs(freqs - t) < 4].max() > spectrum.max() / 8 for t in TONES)
    return {"pictures": pictures, "size": size, "every_tone": tones}


def run(repeats: int, results: Path) -> dict[str, object]:
    print(f"== mix: 4 x {IN_W}x{IN_H}@{FPS} + tones, {SECONDS} s -> {OUT_W}x{OUT_H}@{FPS} H.264 + AAC HLS")
    with tempfile.TemporaryDirectory(prefix="bench-mix-") as tmp:
        directory = Path(tmp)
        inputs = generate(directory)
        runs: dict[str, list[Sample]] = {"capstan": [], "ffmpeg": [], "ffmpeg-1thread": []}
        steady: list[float] = []  # capstan's CPU from its first picture on (whole minus start-up)
        checks = {}
        for r in range(repeats):
            for name, build in (("capstan", capstan_argv), ("ffmpeg", ffmpeg_argv),
                                ("ffmpeg-1thread", ffmpeg_one_thread_argv)):
                out = directory / f"{name}-{r}"
                runs[name].append(measure(build(inputs, out), directory / f"{name}-{r}.log"))
                checks[name] = check(out)
                if name == "capstan":
                    startup = json.loads((out / STARTUP_FILE).read_text())["cpu_seconds"]
                    steady.append(round(runs[name][-1].cpu_seconds - startup, 3))
    medians = {name: median(samples) for name, samples in runs.items()}
    ratio = ratios(medians["capstan"], medians["ffmpeg"])
    ratio_one_thread = ratios(medians["capstan"], medians["ffmpeg-1thread"])
    print_table(medians, ratio, repeats)
    print(f"capstan/ffmpeg-1thread CPU {ratio_one_thread['cpu_seconds']:.2f}")
    cores = {name: round(m.cpu_seconds / SECONDS, 3) for name, m in medians.items()}
    steady_cpu = round(statistics.median(steady), 3)
    # FFmpeg's whole process (its start-up included) against capstan's steady state: the comparison
    # that holds for a recording longer than this 20 s one, and it does not favour capstan
    steady_report = {"cpu_seconds": steady_cpu, "samples": steady, "cores": round(steady_cpu / SECONDS, 3),
                     "ratio_over_ffmpeg_whole": round(steady_cpu / medians["ffmpeg"].cpu_seconds, 2),
                     "ratio_over_ffmpeg_1thread_whole": round(steady_cpu / medians["ffmpeg-1thread"].cpu_seconds, 2)}
    print(f"cores used while recording ({SECONDS} s of media): {cores}; capstan steady (from its first "
          f"picture): {steady_report}; output checks: {checks}")
    report = {"workload": {"seconds": SECONDS, "inputs": f"4 x {IN_W}x{IN_H}@{FPS}", "output": f"{OUT_W}x{OUT_H}"},
              "samples": {n: [s.__dict__ for s in v] for n, v in runs.items()},
              "medians": {n: m.__dict__ for n, m in medians.items()}, "cores": cores,
              "ratio_capstan_over_ffmpeg": ratio, "ratio_capstan_over_ffmpeg_1thread": ratio_one_thread,
              "capstan_steady": steady_report, "checks": checks,
              "load_average": [round(x, 2) for x in os.getloadavg()]}
    results.mkdir(parents=True, exist_ok=True)
    (results / "mix.json").write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        paths = [Path(p) for p in sys.argv[3:]]
        mix(Path(sys.argv[2]), list(zip(paths[::2], paths[1::2], strict=True)))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    run(args.n, args.results)


if __name__ == "__main__":
    main()
