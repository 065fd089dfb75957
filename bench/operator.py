"""The operator under load (issue 11): N CloudRecordings created at once (default 1,000; quota 100),
base-mode workers run by the pod runner, on the local real stack.

Measured: create → accepted / worker Pod / running (the worker's `idle`) p50–p99; admission once a
slot frees (a burst of stops); the operator's HTTP requests by verb and resource, exactly (counted
inside the operator process, `bench/operator_probe.py`) and per task; Events per task; operator CPU
(steady state with `quota` running and the rest queued) and RSS. Checked: every task admitted
exactly once (Admitted Events, Pod creates), no running task ever shows `normal` after its worker
reported (from a watch of every status change), every cleanly stopped task ends `finished`.

`python -m bench operator` (N from BENCH_OPERATOR_TASKS); results in bench/results/operator.json.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.common import ROOT, cpu_model, now_utc

GROUP, VERSION, PLURAL = "capstan.dev", "v1alpha1", "cloudrecordings"
TICKS = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 3)


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99),
            "max": round(max(values), 3) if values else None}


def task_body(name: str) -> dict[str, Any]:
    """One CloudRecording of the load (the namespace's Secrets are made by the benchmark)."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CloudRecording", "metadata": {"name": name},
            "spec": {"room": {"url": "ws://127.0.0.1:7880", "sdkAppId": 1400000000, "roomId": 1234,
                              "credentialsSecretRef": {"name": "livekit-credentials"}},
                     "recorderUserId": f"robot-{name}",
                     "storage": {"endpoint": "127.0.0.1:9000", "bucket": "recordings", "secure": False,
                                 "credentialsSecretRef": {"name": "storage-credentials"}}}}


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class CpuByRole:
    """CPU seconds of the machine's processes by role (API server, etcd, operator, this benchmark,
    pod runner, workers, the rest), read from /proc: which one bounds a window's latency."""

    def __init__(self, operator: int, runner: int) -> None:
        self.operator, self.runner, self.me = operator, runner, os.getpid()

    def role(self, pid: int, ppid: int, name: str) -> str:
        if pid == self.operator:
            return "operator"
        if pid == self.me:
            return "benchmark"
        if pid == self.runner:
            return "pod runner"
        if ppid == self.runner:
            return "workers"
        # comm is the binary's name cut to 15 characters: kube-apiserver-v1.34.4, etcd-v3.6.16
        return next((role for role in ("kube-apiserver", "etcd") if name.startswith(role)), "other")

    def read(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / TICKS
            totals[self.role(int(stat.parent.name), int(fields[1]), name)] += cpu
        return dict(totals)

    @staticmethod
    def cores(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
        """Cores used per role between two reads (a process that ended in between is not counted)."""
        return {k: round(max(0.0, after[k] - before.get(k, 0.0)) / seconds, 3) for k in sorted(after)}


WORKERS_CGROUP = Path("/sys/fs/cgroup/cpu/capstan-bench-workers")  # cgroup v1 `cpu` controller


def _profile(pid: int, work: Path) -> subprocess.Popen | None:
    """With BENCH_OPERATOR_PROFILE=<seconds>: py-spy samples the operator (threads holding the GIL)
    for that long from the first create, into operator-run/profile.txt (collapsed stacks)."""
    seconds = os.environ.get("BENCH_OPERATOR_PROFILE")
    if not seconds:
        return None
    return subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--gil",
                             "--nonblocking", "--format", "raw", "--duration", seconds,
                             "--output", str(work / "profile.txt")], stdout=subprocess.DEVNULL)


def workers_cpu_group() -> str:
    """Put the pod runner and the workers it starts into a CPU cgroup of the least weight
    (cpu.shares 2): they stand in for other nodes. nice 19 alone does not do it: each worker is a
    session of its own (the pod runner's setsid), and with the kernel's autogroups on
    (/proc/sys/kernel/sched_autogroup_enabled) each session weighs as much as the API server
    whatever its nice value — 100 workers took 0.9 of the 2 cores during the creates. What was
    used is in the result ("workers_cpu"): "cgroup cpu.shares=2" or "nice 19" (no writable cgroup)."""
    try:
        WORKERS_CGROUP.mkdir(exist_ok=True)
        (WORKERS_CGROUP / "cpu.shares").write_text("2")
        return "cgroup cpu.shares=2"
    except OSError:
        return "nice 19"


def _into_workers_group() -> None:
    """In the pod runner before exec: the cgroup (if there is one), then nice 19."""
    with contextlib.suppress(OSError):
        (WORKERS_CGROUP / "cgroup.procs").write_text(str(os.getpid()))
    os.nice(19)


class Timeline:
    """Every status change of every task and the first sight of every worker Pod, from watches."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: dict[str, float] = {}
        self.accepted: dict[str, float] = {}
        self.admitted: dict[str, float] = {}
        self.pod: dict[str, float] = {}
        # the API server's own creationTimestamps (whole seconds): a check on the watches' clock
        self.server_created: dict[str, str] = {}
        self.server_pod: dict[str, str] = {}
        self.phases: dict[str, list[tuple[float, str, int]]] = defaultdict(list)
        self.stop = threading.Event()

    def first(self, table: dict[str, float], name: str, t: float) -> None:
        with self.lock:
            table.setdefault(name, t)

    def on_task(self, obj: dict[str, Any], t: float) -> None:
        name, st = obj["metadata"]["name"], obj.get("status") or {}
        if st.get("taskId"):
            self.first(self.accepted, name, t)
        if obj["metadata"].get("creationTimestamp"):
            with self.lock:
                self.server_created.setdefault(name, obj["metadata"]["creationTimestamp"])
        if any(c.get("type") == "Admitted" and c.get("status") == "True" for c in st.get("conditions") or []):
            self.first(self.admitted, name, t)
        phase = st.get("phase")
        with self.lock:
            seen = self.phases[name]
            if phase and (not seen or seen[-1][1:] != (phase, int(st.get("attempt") or 0))):
                seen.append((t, phase, int(st.get("attempt") or 0)))

    def first_phase(self, name: str, phase: str) -> float | None:
        return next((t for t, p, _ in self.phases.get(name, []) if p == phase), None)

    def lies(self) -> list[str]:
        """Tasks that showed `normal` after their worker (same attempt) had reported."""
        bad = []
        for name, seen in self.phases.items():
            reported: set[int] = set()
            for _, phase, attempt in seen:
                if phase in ("idle", "recording", "upload"):
                    reported.add(attempt)
                elif phase == "normal" and attempt in reported:
                    bad.append(name)
                    break
        return bad


def watch(list_fn: Any, on: Any, stop: threading.Event, **kwargs: Any) -> None:
    from kubernetes import watch as kwatch

    rv = None
    while not stop.is_set():
        try:
            if rv is None:
                listed = list_fn(**kwargs, _request_timeout=60)
                rv = listed["metadata"]["resourceVersion"] if isinstance(listed, dict) else \
                    listed.metadata.resource_version
            w = kwatch.Watch()
            for ev in w.stream(list_fn, resource_version=rv, timeout_seconds=30, _request_timeout=60, **kwargs):
                obj = ev["object"]
                obj = obj if isinstance(obj, dict) else obj.to_dict()
                meta = obj.get("metadata") or {}
                rv = meta.get("resourceVersion") or meta.get("resource_version") or rv
                on(ev["type"], obj, time.monotonic())
                if stop.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - keep watching; a 410 lists again
            if "410" in str(exc):
                rv = None
            time.sleep(0.5)


def run(repeats: int, out: Path, tasks: int | None = None, quota: int = 100, steady_seconds: float = 30.0) -> dict:
    from kubernetes import client

    from devstack.harness import install_crds
    from devstack.pytest_plugin import new_api_client, prepare_namespace
    from devstack.stack import ensure_up

    n = tasks or int(os.environ.get("BENCH_OPERATOR_TASKS", "1000"))
    stack = ensure_up()
    api_client = new_api_client(stack.kubeconfig)
    install_crds(api_client)
    core, api = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    prefix = f"bop{uuid.uuid4().hex[:4]}-"
    ns = f"{prefix}load"
    core.create_namespace({"metadata": {"name": ns}})
    prepare_namespace(api_client, ns)
    for name, data in (("livekit-credentials", {"apiKey": "devkey", "apiSecret": "devsecret" * 4}),
                       ("storage-credentials", {"accessKey": "capstan", "secretKey": "capstan-secret"})):
        core.create_namespaced_secret(ns, {"metadata": {"name": name, "labels": {"capstan.dev/use": "true"}},
                                           "stringData": data})
    work = out.parent / "operator-run"
    work.mkdir(parents=True, exist_ok=True)
    counts_file = work / "requests.json"
    # The pod runner (the kubelet's part: 100 workers' bookkeeping) runs as its own process, so it
    # does not share a GIL with the watches that time everything here. It and the workers it starts
    # stand in for other nodes: in a cluster 100 worker interpreters starting do not take the CPU of
    # the operator and the API server, so here they run at the lowest CPU weight (workers_cpu_group).
    workers_cpu = workers_cpu_group()
    runner_log = (work / "podrunner.log").open("wb")
    runner = subprocess.Popen([sys.executable, "-m", "devstack.podrunner", "--kubeconfig", str(stack.kubeconfig),
                               "--namespace", ns, "--state-dir", str(work / "pods")],
                              env={**os.environ, **stack.env()}, stdout=runner_log, stderr=subprocess.STDOUT, cwd=ROOT,
                              preexec_fn=_into_workers_group)
    env = {**os.environ, **stack.env(), "CAPSTAN_METRICS_PORT": "0", "CAPSTAN_MAX_TASKS": str(quota),
           "CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE": "base", "PYTHONUNBUFFERED": "1"}
    with (work / "operator.log").open("wb") as log:
        op = subprocess.Popen([sys.executable, "-m", "bench.operator_probe", str(counts_file), "--standalone",
                               "--namespace", ns], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    timeline = Timeline()
    result: dict[str, Any] = {"tasks": n, "quota": quota, "date": now_utc(), "cpus": os.cpu_count(),
                              "cpu_model": cpu_model(), "workers_cpu": workers_cpu}
    try:
        rss_start = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (counts_file.exists() and "WATCH cloudrecordings" in
                                                   counts_file.read_text()):
            time.sleep(0.5)
        time.sleep(2)
        rss_start = proc_rss_mib(op.pid)

        def on_task(kind: str, obj: dict, t: float) -> None:
            if kind != "DELETED":
                timeline.on_task(obj, t)

        def on_pod(kind: str, obj: dict, t: float) -> None:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if kind == "ADDED" and labels.get("capstan.dev/task"):
                timeline.first(timeline.pod, labels["capstan.dev/task"], t)
                with timeline.lock:
                    timeline.server_pod.setdefault(labels["capstan.dev/task"],
                                                   obj["metadata"].get("creationTimestamp") or "")

        threads = [threading.Thread(target=watch, daemon=True, args=(
            lambda **kw: api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, **kw), on_task,
            timeline.stop)),
            threading.Thread(target=watch, daemon=True, args=(
                lambda **kw: core.list_namespaced_pod(ns, **kw), on_pod, timeline.stop))]
        for t in threads:
            t.start()
        time.sleep(1)
        names = [f"t{i:04d}" for i in range(n)]

        def create(name: str) -> None:
            timeline.first(timeline.created, name, time.monotonic())
            api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, task_body(name), _request_timeout=60)

        by_role = CpuByRole(op.pid, runner.pid)
        profile = _profile(op.pid, work)
        cpu0 = by_role.read()
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(create, names))
        result["create_seconds"] = round(time.monotonic() - t0, 1)
        if profile is not None:
            profile.wait(timeout=120)
        result["cores_by_role"] = {"creates": by_role.cores(cpu0, by_role.read(), time.monotonic() - t0)}
        print(f"operator bench: {n} tasks created in {result['create_seconds']} s", flush=True)

        def running() -> list[str]:
            return [x for x in names if timeline.first_phase(x, "idle") is not None]

        deadline = time.monotonic() + 900
        while len(running()) < min(quota, n) and time.monotonic() < deadline:
            time.sleep(1)
        first = sorted(running(), key=lambda x: timeline.created[x])
        result["cores_by_role"]["create_to_first_running"] = by_role.cores(cpu0, by_role.read(), time.monotonic() - t0)
        print(f"operator bench: {len(first)} running; cores by role {result['cores_by_role']}", flush=True)
        result["first_running"] = len(first)

        def latency(table: dict[str, float] | None, phase: str | None, who: list[str]) -> dict:
            values = []
            for x in who:
                t = table.get(x) if table is not None else timeline.first_phase(x, phase or "")
                if t is not None:
                    values.append(t - timeline.created[x])
            return summary(values)

        result["create_to"] = {"accepted": latency(timeline.accepted, None, names),
                               "pod_first_quota": latency(timeline.pod, None, first),
                               "running_first_quota": latency(None, "idle", first)}

        def stamp(text: str) -> float:
            return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

        result["create_to_pod_server_side_1s_resolution"] = summary([
            stamp(timeline.server_pod[x]) - stamp(timeline.server_created[x]) for x in first
            if timeline.server_pod.get(x) and timeline.server_created.get(x)])
        # The queue settles: every task accepted (the queued ones' first writes come after the
        # admissions: reconcile.state.Backlog), then the steady state is measured.
        deadline = time.monotonic() + 600
        while len(timeline.accepted) < n and time.monotonic() < deadline:
            time.sleep(1)
        result["all_accepted_after_create_seconds"] = round(time.monotonic() - t0, 1)
        time.sleep(5)
        c0, r0 = proc_cpu(op.pid), json.loads(counts_file.read_text())
        time.sleep(steady_seconds)
        c1, r1 = proc_cpu(op.pid), json.loads(counts_file.read_text())
        result["steady"] = {"running": quota, "queued": max(n - quota, 0), "seconds": steady_seconds,
                            "cpu_cores": round((c1 - c0) / steady_seconds, 4),
                            "requests_per_second": round(sum(r1.values()) - sum(r0.values()), 1) / steady_seconds,
                            "rss_mib": proc_rss_mib(op.pid)}
        print(f"operator bench: steady {result['steady']}", flush=True)

        # A burst of stops: each freed slot admits the next queued task.
        burst = first[: min(quota, max(n - quota, 0))]
        stopped_at, cpu_burst = time.monotonic(), by_role.read()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda x: api.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, x, {"spec": {"stop": True}}, _request_timeout=60), burst))
        waiting = [x for x in names if x not in set(first)]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and (
                sum(1 for x in burst if timeline.first_phase(x, "finished") or timeline.first_phase(x, "failed"))
                < len(burst) or sum(1 for x in waiting if x in timeline.admitted) < len(burst)):
            time.sleep(1)
        result["cores_by_role"]["stop_burst"] = by_role.cores(cpu_burst, by_role.read(),
                                                               time.monotonic() - stopped_at)
        freed = sorted(t for x in burst if (t := timeline.first_phase(x, "finished") or timeline.first_phase(
            x, "failed")) is not None)
        admitted_next = sorted(timeline.admitted[x] for x in waiting if x in timeline.admitted)
        result["burst"] = {"stopped": len(burst), "seconds_to_all_ended": round((freed[-1] - stopped_at), 1)
                           if freed else None,
                           "ended_failed": sum(1 for x in burst if timeline.first_phase(x, "failed")),
                           "slot_to_admitted": summary([a - f for f, a in zip(freed, admitted_next, strict=False)])}
        # The same from the API server's own stamps (1 s resolution): the benchmark's watch lags when
        # 200 workers end and start, so its times can say more about this process than the operator.
        items = {o["metadata"]["name"]: o for o in api.list_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, _request_timeout=120)["items"]}
        ended_at = sorted(stamp(st["finishTime"]) for x in burst if (st := items.get(x, {}).get("status") or {})
                          .get("finishTime"))
        admitted_at = sorted(stamp(c["lastTransitionTime"]) for x in waiting
                             for c in (items.get(x, {}).get("status") or {}).get("conditions") or []
                             if c.get("type") == "Admitted" and c.get("status") == "True")
        result["burst"]["slot_to_admitted_server_side_1s_resolution"] = summary(
            [a - f for f, a in zip(ended_at, admitted_at, strict=False)])
        print(f"operator bench: burst {result['burst']}", flush=True)

        # Stop everything, the queued tasks first (they are canceled), then the running ones: stopped
        # the other way, each freed place admits (and starts a worker for) a queued task that is
        # stopped a moment later, and the writes per task measure that churn (941 of 1,000 admitted).
        rest = [x for x in names if x not in set(burst)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda x: api.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, x, {"spec": {"stop": True}}, _request_timeout=60),
                [x for x in rest if x not in timeline.admitted] + [x for x in rest if x in timeline.admitted]))
        terminal = ("finished", "failed", "canceled")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and sum(
                1 for x in names if any(timeline.first_phase(x, p) for p in terminal)) < n:
            time.sleep(2)
        time.sleep(3)
        ends = Counter(next((p for _, p, _ in reversed(timeline.phases.get(x, [])) if p in terminal), "none")
                       for x in names)
        requests = json.loads(counts_file.read_text())
        events = core.list_namespaced_event(ns, _request_timeout=120).items
        reasons = Counter(e.reason for e in events)
        admitted_per_task = Counter(e.involved_object.name for e in events if e.reason == "Admitted")
        ran = [x for x in names if x in timeline.admitted]
        result.update({
            "ends": dict(ends),
            "admitted_events_max_per_task": max(admitted_per_task.values(), default=0),
            "admitted_tasks": len(ran), "pod_creates": requests.get("POST pods", 0),
            "lying_tasks": timeline.lies(),
            "requests": dict(sorted(requests.items())),
            "requests_per_task": {k: round(v / n, 2) for k, v in sorted(requests.items())},
            "writes_per_task": round(sum(v for k, v in requests.items() if k.split()[0] in ("POST", "PATCH", "PUT",
                                                                                           "DELETE")) / n, 2),
            "events_per_task": round(sum(reasons.values()) / n, 2),
            "events_by_reason": dict(reasons.most_common()),
            "operator_cpu_seconds_total": round(proc_cpu(op.pid), 1),
            "rss_mib": {"start": rss_start, "end": proc_rss_mib(op.pid), "peak": proc_rss_mib(op.pid, "VmHWM")},
        })
    finally:
        timeline.stop.set()
        op.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            op.wait(30)
        if op.poll() is None:
            op.kill()
        runner.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            runner.wait(60)
        if runner.poll() is None:
            runner.kill()
        runner_log.close()
        # Without the operator the finalizers would hold the tasks: drop them, delete the namespace.
        with contextlib.suppress(Exception):
            items = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _request_timeout=120)["items"]
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda o: (api.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, o["metadata"]["name"], {"metadata": {"finalizers": None}}),
                    api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, o["metadata"]["name"])), items))
        with contextlib.suppress(Exception):
            core.delete_namespace(ns)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("requests",)}, indent=2))
    return result


if __name__ == "__main__":
    run(1, Path(__file__).resolve().parent / "results" / "operator.json",
        tasks=int(sys.argv[1]) if len(sys.argv) > 1 else None)
