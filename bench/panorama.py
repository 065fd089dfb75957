"""Web recording (issue 14): one 1280x720@30 recording of the test page, browser included, beside
FFmpeg capturing and encoding the same kind of Xvfb display with the same settings, in the same run.

- capstan: the panorama worker's whole session in one child process (:class:`WebRecordingSession`
  with a stand-in for the API side): Xvfb + PulseAudio + Chromium (Playwright) + the URL-policy
  proxy, x11grab + parec into the shared HlsWriter (libx264 veryfast, 2 Mbit/s, GOP 2 s, no
  B-frames; AAC 128 kbit/s stereo; TS segments), then the MP4 of copied packets.
- ffmpeg: the same stage and browser on the same page (started by the same code), and Debian's
  ``ffmpeg -f x11grab -f pulse`` encoding the display and the sink's monitor with the same encoder
  settings straight into an MP4.

Each side's whole process tree (the child, Chromium and its renderers, Xvfb, PulseAudio, parec or
ffmpeg) is sampled from /proc every 0.25 s: CPU seconds (user+sys, summed over every process seen)
and the peak of the summed PSS (proportional set size: shared pages split between the processes
that share them; summed RSS would count Chromium's shared memory once per process). Cores = CPU
seconds / recording seconds (start-up and the MP4 at the end included). Reported per part too (the
recorder or ffmpeg with the Python process driving the browser, the browser, the stage), so the
encoder comparison is visible beside the browser's share.

Run: ``.venv/bin/python -m bench.panorama [-n REPEATS] [--seconds S]``. Writes ``bench/results/panorama.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import FFMPEG, RESULTS_DIR, ROOT

SIZE, FPS = (1280, 720), 30
SECONDS = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


# --- measuring a process tree --------------------------------------------------------------------


def _read_proc(pid: int) -> tuple[int, float, int, str] | None:
    """(ppid, cpu seconds, rss KiB, name) of one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        memory = _pss_kib(pid)
        if memory is None:
            memory = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE_KIB
    except (OSError, ValueError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK, memory, name


def _pss_kib(pid: int) -> int | None:
    """Proportional set size: Chromium's processes share much of their memory, which summed RSS would
    count once per process."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def part_of(name: str) -> str:
    if name.startswith(("chromium", "chrome", "node")):  # node: Playwright's driver
        return "browser"
    if name.startswith(("Xvfb", "pulseaudio")):
        return "stage"
    return "recorder"  # the Python worker (capture, encoders, muxers), parec, or ffmpeg


class TreeSampler:
    """CPU and summed RSS of ``root`` and every descendant, sampled until :meth:`stop`."""

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.root, self.interval = root, interval
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (part, last CPU seconds seen)
        self.peak_rss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            procs = {}
            for entry in os.listdir("/proc"):
                if entry.isdigit() and (info := _read_proc(int(entry))) is not None:
                    procs[int(entry)] = info
            tree, frontier = {self.root}, [self.root]
            children: dict[int, list[int]] = {}
            for pid, (ppid, *_rest) in procs.items():
                children.setdefault(ppid, []).append(pid)
            while frontier:
                for child in children.get(frontier.pop(), []):
                    if child not in tree:
                        tree.add(child)
                        frontier.append(child)
            rss = 0
            for pid in tree:
                if pid in procs:
                    _, cpu, rss_kib, name = procs[pid]
                    self.cpu[pid] = (part_of(name), cpu)
                    rss += rss_kib
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(5)
        parts: dict[str, float] = {}
        for part, cpu in self.cpu.values():
            parts[part] = parts.get(part, 0.0) + cpu
        return {"cpu_seconds": round(sum(parts.values()), 2), "parts": {k: round(v, 2) for k, v in parts.items()},
                "peak_pss_mib": round(self.peak_rss_kib / 1024, 1)}


# --- the two sides (each in its own child process) -----------------------------------------------


class _Worker:
    """What the session needs of capstan.worker.base.Worker, without an API server."""

    def __init__(self, work: Path) -> None:
        from capstan.worker.base import WorkerContext

        self.ctx = WorkerContext(plural="webrecordings", name="bench", namespace="bench", task_id="bench",
                                 attempt=1, pod_name="bench", work_dir=work)
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.stop_requested_at: float | None = None
        self.started = threading.Event()

    def request_stop(self, reason: str) -> None:
        self.stop_reason, self.stop_requested_at = reason, time.time()
        self.stop_event.set()

    def on_spec_change(self, listener: Any) -> None:
        pass

    def on_annotations_change(self, listener: Any) -> None:
        pass

    def report(self, **status: Any) -> None:
        if status.get("phase") == "recording":
            self.started.set()

    def emit(self, event_type: int, payload: dict[str, Any]) -> None:
        pass


class _Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    def fput_object(self, bucket: str, key: str, path: str, content_type: str = "") -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)

    def stat_object(self, bucket: str, key: str) -> Any:
        return type("Stat", (), {"size": (self.root / key).stat().st_size})()


def _page() -> Any:
    sys.path.insert(0, str(ROOT))
    from tests.panorama.page import PAGE_HOST, PageServer

    return PageServer(), PAGE_HOST


def side_capstan(work: Path, seconds: float) -> None:
    os.environ["CAPSTAN_PANORAMA_FPS"] = str(FPS)
    from capstan.api.webrecording import WebRecordingSpec
    from capstan.net.urlpolicy import UrlPolicy
    from capstan.panorama.session import WebRecordingSession
    from capstan.storage.uploader import Uploader

    server, host = _page()
    worker = _Worker(work)
    spec = WebRecordingSpec.model_validate({
        "recordUrl": server.url, "width": SIZE[0], "height": SIZE[1],
        "output": {"storage": {"endpoint": "127.0.0.1:9", "bucket": "bench", "credentialsSecretRef": {"name": "s"}}}})
    uploader = Uploader(_Store(work / "store"), "b", work / "spool")
    session = WebRecordingSession(worker, spec, uploader=uploader,  # type: ignore[arg-type]
                                  policy=UrlPolicy.from_env({"CAPSTAN_URL_ALLOW_CIDRS": f"{host}/32"}), env={},
                                  resolve=_no_dns)
    def stop_later() -> None:
        worker.started.wait(60)
        time.sleep(seconds)
        worker.request_stop("the benchmark's time is up")

    timer = threading.Thread(target=stop_later, daemon=True)
    timer.start()
    code = session.run()
    uploader.stop()
    server.close()
    if code != 0:
        raise SystemExit(f"the session ended with {code}")
    (work / "output.path").write_text(str(next((work / "store").rglob("*.mp4"))))


def _probe(path: Path) -> dict[str, Any]:
    """Frames and seconds of what a side wrote, read by the parent after the side's tree was measured.
    FFmpeg's MP4 is constant-rate (pictures repeated or dropped to 30/s); capstan keeps grab times, so
    the page's own counter tells how many different pictures of the page each side caught."""
    import av

    sys.path.insert(0, str(ROOT))
    from tests.panorama.page import read_counter

    with av.open(str(path)) as c:
        seconds = float(c.duration / av.time_base) if c.duration else 0.0
        counters = [read_counter(frame.to_ndarray(format="rgb24")) for frame in c.decode(video=0)]
    distinct = len(set(counters))
    return {"frames": len(counters), "seconds": round(seconds, 2),
            "fps": round(len(counters) / seconds, 1) if seconds else 0,
            "distinct_page_frames": distinct, "distinct_fps": round(distinct / seconds, 1) if seconds else 0}


def _no_dns(host: str, port: int) -> list[str]:
    raise OSError(f"{host}: the bench resolves no names")


def ffmpeg_argv(display: str, monitor: str, out: Path, seconds: float) -> list[str]:
    from capstan.panorama.session import AUDIO, video_encoding

    video = video_encoding(SIZE, FPS)
    return [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "x11grab", "-video_size", f"{SIZE[0]}x{SIZE[1]}", "-framerate", str(FPS), "-draw_mouse", "0",
            "-i", display, "-f", "pulse", "-i", monitor, "-t", str(seconds),
            "-c:v", "libx264", "-preset", video.preset, "-b:v", str(video.bitrate), "-g", str(video.gop_seconds * FPS),
            "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", str(AUDIO.bitrate), "-ar", str(AUDIO.sample_rate),
            "-ac", str(AUDIO.channels), str(out)]


def side_ffmpeg(work: Path, seconds: float) -> None:
    from capstan.net.urlpolicy import UrlPolicy
    from capstan.panorama.browser import Browser
    from capstan.panorama.guard import EgressGuard
    from capstan.panorama.stage import Stage

    server, host = _page()
    stage = Stage(work, SIZE).open()
    guard = EgressGuard(UrlPolicy.from_env({"CAPSTAN_URL_ALLOW_CIDRS": f"{host}/32"}), resolve=_no_dns).start()
    browser = Browser(work / "profile", SIZE, stage.env, guard.proxy_url).open(on_start=lambda _t: None)
    try:
        browser.goto(server.url)
        proc = subprocess.Popen(ffmpeg_argv(stage.env["DISPLAY"], stage.monitor, work / "ffmpeg.mp4", seconds),
                                env={**os.environ, **stage.env})
        while proc.poll() is None:
            browser.wait(0.25)
        if proc.returncode != 0:
            raise SystemExit(f"ffmpeg exited {proc.returncode}")
        (work / "output.path").write_text(str(work / "ffmpeg.mp4"))
    finally:
        browser.close()
        guard.stop()
        stage.close()
        server.close()


# --- the run ------------------------------------------------------------------------------------


def measure_side(name: str, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-panorama-{name}-") as tmp:
        began = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "bench.panorama", "--side", name, "--seconds", str(seconds),
                                 "--work", tmp], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sampler = TreeSampler(proc.pid).start()
        _, err = proc.communicate(timeout=seconds + 180)
        result = sampler.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"{name} side exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
        result["wall_seconds"] = round(time.monotonic() - began, 2)
        result["output"] = _probe(Path((Path(tmp) / "output.path").read_text()))
        result["cores"] = round(result["cpu_seconds"] / seconds, 3)
        result["cores_by_part"] = {k: round(v / seconds, 3) for k, v in result["parts"].items()}
        return result


def run(repeats: int, out: Path, seconds: float = SECONDS) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"capstan": [], "ffmpeg": []}
    for i in range(repeats):
        for name in ("capstan", "ffmpeg"):
            sample = measure_side(name, seconds)
            runs[name].append(sample)
            print(f"  run {i + 1}/{repeats} {name:8} cores {sample['cores']:.3f} {sample['cores_by_part']} "
                  f"peak PSS {sample['peak_pss_mib']:.0f} MiB, wrote {sample['output']}", flush=True)

    def med(name: str, key: str, part: str | None = None) -> float:
        values = [r["cores_by_part"].get(part, 0.0) if part else r[key] for r in runs[name]]
        return round(statistics.median(values), 3)

    summary: dict[str, Any] = {name: {"cores": med(name, "cores"), "peak_pss_mib": med(name, "peak_pss_mib"),
                      "cores_by_part": {p: med(name, "", p) for p in ("recorder", "browser", "stage")}}
               for name in runs}
    cap, ref = summary["capstan"], summary["ffmpeg"]
    result = {
        "what": f"one {SIZE[0]}x{SIZE[1]}@{FPS} recording of the test page for {seconds:g} s, browser included",
        "repeats": repeats, "seconds": seconds, "runs": runs, "median": summary,
        "ratio": {"cores": round(cap["cores"] / ref["cores"], 2),
                  "recorder_vs_ffmpeg_process": round(cap["cores_by_part"]["recorder"]
                                                      / max(ref["cores_by_part"]["recorder"], 1e-9), 2),
                  "peak_pss_mib": round(cap["peak_pss_mib"] / ref["peak_pss_mib"], 2)},
        "target_cores": 1.5, "machine": {"cpus": os.cpu_count(), "loadavg_after": os.getloadavg()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median": summary, "ratio": result["ratio"]}, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.panorama", description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "panorama.json")
    parser.add_argument("--side", choices=["capstan", "ffmpeg"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        (side_capstan if args.side == "capstan" else side_ffmpeg)(args.work, args.seconds)
        return 0
    run(args.repeats, args.results, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
