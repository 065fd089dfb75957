"""Push benchmark: CPU of one StreamPush of a 1280x720@30 H.264 file into a real LiveKit room, with
pass-through and with forced re-encode, beside ``ffmpeg -re -i FILE -c copy -f null -`` and
``ffmpeg -re`` re-encoding to the same settings, alternately, in the same run.

The pusher runs as its own process (``python -m bench.push child ...``): the session of the worker
(capstan/pusher/session.py) with a stand-in for the worker's Kubernetes side, so what is measured
is the media path: HTTP reads, demux, Annex B, pacing, audio decode and resample, the LiveKit SDK
(and, re-encoding with the Python SDK, decode plus libwebrtc's encoder); with the Go data plane
(capstan/pusher/external.py) the CPU of its FFmpeg and capstan-lkpublish children is counted too
(all processes of a push).
Results: ``bench/results/push.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import FFMPEG, ROOT, Sample, cpu_model, measure, median, now_utc, print_run

SECONDS = 20.0
# The pusher's sides: pass-through through FFmpeg + capstan-lkpublish (the default), pass-through with
# the LiveKit Python SDK in the pusher's process (CAPSTAN_PUSH_DATAPLANE=python), forced re-encode
# through FFmpeg's libx264 + capstan-lkpublish (the default), forced re-encode with the Python SDK's VP8.
PUSHERS = ("pass-through", "pass-through python", "re-encode", "re-encode python")


class _Worker:
    """What the session needs of capstan.worker.base.Worker, without Kubernetes."""

    def __init__(self) -> None:
        from capstan.worker.base import WorkerContext

        self.ctx = WorkerContext(plural="streampushes", name="bench", namespace="bench", task_id="bench", attempt=1,
                                 pod_name="bench", work_dir=Path(tempfile.gettempdir()))
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.messages: list[str] = []
        self.pushing_since: tuple[float, float] | None = None  # (wall, CPU s) when pushing began

    def report(self, **status: Any) -> None:
        if status.get("phase") == "pushing":
            self.pushing_since = (time.monotonic(), _cpu())
        if "message" in status:
            self.messages.append(status["message"])

    def emit(self, event_type: int, payload: dict[str, Any]) -> None:
        pass


def child(src: str, room: str) -> int:
    """One push of `src` into `room` (LiveKit of the local stack) to the end of the file."""
    from capstan.api.streampush import StreamPushSpec
    from capstan.net.urlpolicy import UrlPolicy
    from capstan.pusher.session import PushSession
    from devstack.rooms import RoomServer
    from devstack.stack import ensure_up

    server = RoomServer.from_stack("livekit", ensure_up())
    spec = StreamPushSpec.model_validate({"videoSrc": src, "room": server.room_spec(room, 1400000000),
                                          "userId": "pusher"})
    worker = _Worker()
    session = PushSession(worker, spec, server.connector(), room_url=server.url, room_name=room,  # type: ignore[arg-type]
                          room_token=server.token(room, "pusher"),
                          policy=UrlPolicy.from_env({"CAPSTAN_URL_ALLOW_CIDRS": "127.0.0.0/8"}))
    code = asyncio.run(session.run())
    print("\n".join(worker.messages))
    if worker.pushing_since is not None:  # steady state: from the first pushed frame to the end
        wall, cpu = time.monotonic() - worker.pushing_since[0], _cpu() - worker.pushing_since[1]
        print("STEADY " + json.dumps({"wall": round(wall, 2), "cpu": round(cpu, 3), "cores": round(cpu / wall, 4)}))
    return code


def _cpu() -> float:
    """CPU seconds of the whole push: this process, its children that ended (FFmpeg runs, the Go
    publisher, once waited for) and those still running (from /proc)."""
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # ppid; utime and stime are fields 14 and 15 of stat
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run(repeats: int, out: Path) -> None:
    from devstack import pushmedia
    from devstack.mediaserver import MediaServer

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        root = Path(tmp)
        source = pushmedia.make(root / "source.mp4", SECONDS)
        server = MediaServer(root)
        try:
            url = f"{server.url}/source.mp4"
            py = [sys.executable, "-m", "bench.push", "child", url]
            x264 = ["-c:v", "libx264", "-preset", "veryfast", "-b:v", "2500k", "-bf", "0", "-g", "15",
                    "-c:a", "libopus", "-b:a", "64k", "-ar", "48000"]
            sides: dict[str, tuple[list[str], dict[str, str]]] = {
                "pass-through": ([*py, f"bench-{uuid.uuid4().hex[:6]}"], {"CAPSTAN_PUSH_DATAPLANE": "go"}),
                "pass-through python": ([*py, f"bench-{uuid.uuid4().hex[:6]}"], {"CAPSTAN_PUSH_DATAPLANE": "python"}),
                "re-encode": ([*py, f"bench-{uuid.uuid4().hex[:6]}"],
                              {"CAPSTAN_PUSH_REENCODE": "1", "CAPSTAN_PUSH_REENCODE_DATAPLANE": "go"}),
                "re-encode python": ([*py, f"bench-{uuid.uuid4().hex[:6]}"],
                                     {"CAPSTAN_PUSH_REENCODE": "1", "CAPSTAN_PUSH_REENCODE_DATAPLANE": "python"}),
                "ffmpeg copy": ([FFMPEG, "-nostdin", "-re", "-i", str(source), "-c", "copy", "-f", "null", "-"], {}),
                "ffmpeg encode": ([FFMPEG, "-nostdin", "-re", "-i", str(source), *x264, "-f", "null", "-"], {}),
            }
            samples: dict[str, list[Sample]] = {name: [] for name in sides}
            for repeat in range(1, repeats + 1):
                for name, (argv, extra) in sides.items():
                    saved = dict(os.environ)
                    os.environ.update(extra)
                    try:
                        sample = measure(argv, root / f"{name.replace(' ', '-')}-{repeat}.log")
                    finally:
                        os.environ.clear()
                        os.environ.update(saved)
                    samples[name].append(sample)
                    print_run(repeat, repeats, name, sample)
            logs = {name: (root / f"{name.replace(' ', '-')}-1.log").read_text(errors="replace")[-600:]
                    for name in PUSHERS}
            steady = {name: [json.loads(line[7:]) for r in range(1, repeats + 1)
                             for line in (root / f"{name.replace(' ', '-')}-{r}.log").read_text().splitlines()
                             if line.startswith("STEADY ")] for name in PUSHERS}
        finally:
            server.close()
    medians = {name: median(s) for name, s in samples.items()}
    cores = {name: round(m.cpu_seconds / m.wall_seconds, 3) for name, m in medians.items()}
    print()
    # ffmpeg's cores are CPU / wall of the whole command (it starts in milliseconds); the pusher's
    # whole-process figure includes its interpreter, imports and room join, so its steady state
    # (first pushed frame to the end) is the comparable one.
    for name, runs in steady.items():
        cores[name + " (steady)"] = sorted(r["cores"] for r in runs)[len(runs) // 2] if runs else float("nan")
    print(f"{'median of ' + str(repeats):16} {'CPU s':>8} {'wall s':>8} {'cores':>7} {'peak RSS MiB':>13}")
    for name, m in medians.items():
        print(f"{name:16} {m.cpu_seconds:8.2f} {m.wall_seconds:8.2f} {cores[name]:7.3f} {m.peak_rss_mib:13.1f}")
    for name in steady:
        print(f"{name + ' steady':24} cores {cores[name + ' (steady)']:.3f}")
    result = {"when": now_utc(), "cpu": cpu_model(),
              "source": f"{SECONDS:.0f} s 1280x720@30 H.264 (no B-frames, GOP 15) + AAC mono 48 kHz, MP4 over HTTP",
              "room": "LiveKit of the local stack, no subscriber", "steady": steady,
              "medians": {k: vars(v) for k, v in medians.items()}, "cores": cores,
              "samples": {k: [vars(s) for s in v] for k, v in samples.items()}, "pusher_messages": logs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        code = child(sys.argv[2], sys.argv[3])
        sys.stdout.flush()
        # measured: skip the interpreter's teardown, where the LiveKit Python SDK's runtime sometimes
        # panics ("panic in a function that cannot unwind") after a push that ended well
        os._exit(code)
    from bench.common import RESULTS_DIR

    run(int(sys.argv[1]) if len(sys.argv) > 1 else 3, RESULTS_DIR / "push.json")
