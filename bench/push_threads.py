"""Where a push's CPU goes: one pass-through and one forced re-encode push of the benchmark's file
(bench/push.py), each reporting its CPU per thread over the steady state (first pushed frame to
the end) from /proc/self/task/*/stat, and the LiveKit FFI requests and events per second.

    python -m bench.push_threads            # both sides, printed (nothing written)

Python threads are named by their ``threading`` name (``py:push-reader``, ``py:push-pacer``,
``python-main`` for the event loop); the others are the native ones of the LiveKit SDK and
libwebrtc (``tokio-rt-worker``, ``network_thread``, ``AudioEncoderQue`` …). A native thread that
runs a Python callback of the SDK (its FFI events) counts that Python time as its own. The
sampler reading /proc every 0.5 s costs about 0.001 of a core and is left out of the table.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import ROOT

TICK = os.sysconf("SC_CLK_TCK")


def _threads(names: dict[int, str]) -> dict[int, tuple[str, float]]:
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        comm = stat[stat.index("(") + 1:stat.rindex(")")].strip()
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (names.get(int(tid), comm), (int(fields[11]) + int(fields[12])) / TICK)
    return out


def child(src: str, room: str) -> int:
    """bench.push's child with the per-thread sampler and FFI counters."""
    from livekit.rtc import _ffi_client

    from bench import push
    from capstan.pusher import session as session_module

    events: collections.Counter[str] = collections.Counter()
    requests: collections.Counter[str] = collections.Counter()
    queue_put, client_request = _ffi_client.FfiQueue.put, _ffi_client.FfiClient.request

    def put(self: Any, item: Any) -> None:
        events[item.WhichOneof("message")] += 1
        queue_put(self, item)

    def request(self: Any, req: Any) -> Any:
        requests[req.WhichOneof("message")] += 1
        return client_request(self, req)

    _ffi_client.FfiQueue.put = put  # type: ignore[method-assign]
    _ffi_client.FfiClient.request = request  # type: ignore[method-assign]

    names = {os.getpid(): "python-main"}
    thread_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        names[threading.get_native_id()] = "py:" + self.name
        thread_run(self)

    threading.Thread.run = run  # type: ignore[method-assign]
    seen: dict[int, tuple[str, float]] = {}

    def sample() -> None:
        while True:
            seen.update(_threads(names))
            time.sleep(0.5)

    threading.Thread(target=sample, name="sampler", daemon=True).start()
    marks: dict[str, tuple[float, dict[int, tuple[str, float]], dict[str, int], dict[str, int]]] = {}
    report = push._Worker.report

    def reported(self: Any, **status: Any) -> None:
        if status.get("phase") == "pushing":
            marks["start"] = (time.monotonic(), _threads(names), dict(events), dict(requests))
        report(self, **status)

    push._Worker.report = reported  # type: ignore[method-assign]
    end = session_module.PushSession._end

    async def ended(self: Any, outcome: Any) -> int:
        marks["end"] = (time.monotonic(), {**seen, **_threads(names)}, dict(events), dict(requests))
        return await end(self, outcome)

    session_module.PushSession._end = ended  # type: ignore[method-assign]
    code = push.child(src, room)
    (t0, a, e0, r0), (t1, b, e1, r1) = marks["start"], marks["end"]
    wall = t1 - t0
    per: collections.Counter[str] = collections.Counter()
    for tid, (name, cpu) in b.items():
        if name != "py:sampler":
            per[name] += cpu - a.get(tid, (name, 0.0))[1]
    print("THREADS " + json.dumps({
        "wall": round(wall, 2), "cores": round(sum(per.values()) / wall, 4),
        "threads": {n: round(c / wall, 4) for n, c in per.most_common() if c > 0},
        "ffi_requests_per_s": {k: round((v - r0.get(k, 0)) / wall, 1) for k, v in r1.items() if v > r0.get(k, 0)},
        "ffi_events_per_s": {k: round((v - e0.get(k, 0)) / wall, 1) for k, v in e1.items() if v > e0.get(k, 0)}}))
    return code


def main() -> None:
    from bench.push import SECONDS
    from devstack import pushmedia
    from devstack.mediaserver import MediaServer

    with tempfile.TemporaryDirectory(prefix="bench-push-threads-") as tmp:
        root = Path(tmp)
        pushmedia.make(root / "source.mp4", SECONDS)
        server = MediaServer(root)
        try:
            for side, extra in (("pass-through", {}), ("re-encode", {"CAPSTAN_PUSH_REENCODE": "1"})):
                out = subprocess.run([sys.executable, "-m", "bench.push_threads", "child", f"{server.url}/source.mp4",
                                      f"bench-{uuid.uuid4().hex[:6]}"], env={**os.environ, **extra}, cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout
                found = [json.loads(line[8:]) for line in out.splitlines() if line.startswith("THREADS ")]
                if not found:
                    raise RuntimeError(f"{side}: no THREADS line:\n{out[-2000:]}")
                figures = found[0]
                print(f"{side}: {figures['cores']:.3f} cores over {figures['wall']:.1f} s "
                      f"(load average {os.getloadavg()[0]:.2f})")
                for name, cores in figures["threads"].items():
                    print(f"  {name:20} {cores:.4f}")
                print(f"  FFI requests/s {figures['ffi_requests_per_s']}")
                print(f"  FFI events/s   {figures['ffi_events_per_s']}")
        finally:
            server.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.exit(child(sys.argv[2], sys.argv[3]))
    main()
