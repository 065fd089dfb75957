"""The floor under the operator benchmark's create → Pod (issue 11): the writes one admission makes
(status ‖ ServiceAccount ‖ Role ‖ spool PVC ‖ Secret, then finalizer ‖ RoleBinding ‖ Pod, then its
Events), sent for the first `quota` of N CloudRecordings by a plain thread pool as soon as each
create returns — no operator, no kopf, no watch, no workers, nothing decided. The N creates are made
as `bench.operator` makes them (8 at a time). What this takes is what the API server and etcd on
this machine need for those writes: no operator can put the Pods there sooner.

`python -m bench operator_floor` (N from BENCH_OPERATOR_TASKS, default 1,000; quota 100); results in
bench/results/operator_floor.json. Also measured: the API server's write rate alone (ServiceAccounts
created 64 at a time) and the cores by role while the admissions ran.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import cpu_model, now_utc
from bench.operator import GROUP, PLURAL, VERSION, CpuByRole, summary, task_body

ADMISSION_THREADS = 64  # as many as the operator's handler threads (settings.execution.max_workers)


def _admit(kube: Any, api: Any, core: Any, info: Any, config: Any, body: dict[str, Any]) -> float:
    """One admission's writes in the operator's two rounds; the moment its Pod POST returned."""
    from capstan.operator import children

    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    status = {"taskId": str(uuid.uuid4()), "phase": "normal", "attempt": 1, "failovers": 0,
              "workerPod": children.pod_name(info, name, 1),
              "conditions": [{"type": "Admitted", "status": "True", "reason": "QuotaAvailable"},
                             {"type": "Queued", "status": "False", "reason": "Admitted"}]}
    body = {**body, "status": status}
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": f"{name}-token", "namespace": ns,
                           "ownerReferences": [children.owner_reference(body)]},
              "stringData": {"token": "t" * 400}}
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda call: call(), [
            lambda: api.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name, {"status": status},
                                                              _request_timeout=30),
            lambda: kube.ensure_service_account(info, body), lambda: kube.ensure_role(info, body),
            lambda: kube.ensure_spool(children.spool_claim(info, body, config)),
            lambda: kube.create_secret(secret)]))
        list(pool.map(lambda call: call(), [
            lambda: api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                                       {"metadata": {"finalizers": ["capstan.dev/floor"]}},
                                                       _request_timeout=30),
            lambda: kube.ensure_role_binding(info, body),
            lambda: kube.create_pod(children.worker_pod(info, body, 1, config, []))]))
    done = time.monotonic()
    for reason in ("Accepted", "Admitted", "WorkerCreated"):
        core.create_namespaced_event(ns, {
            "metadata": {"generateName": f"{name}.", "namespace": ns},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CloudRecording", "name": name,
                               "namespace": ns, "uid": body["metadata"]["uid"]},
            "reason": reason, "message": reason, "type": "Normal", "source": {"component": "floor"}},
            _request_timeout=30)
    return done


def _write_rate(core: Any, ns: str, count: int = 600) -> float:
    """ServiceAccounts created 64 at a time: the API server's rate for small writes, nothing else running."""
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        list(pool.map(lambda i: core.create_namespaced_service_account(
            ns, {"metadata": {"name": f"rate-{i:04d}"}}, _request_timeout=30, _preload_content=False).read(),
            range(count)))
    return round(count / (time.monotonic() - t0), 1)


def run(repeats: int, out: Path, tasks: int | None = None, quota: int = 100) -> dict:
    from kubernetes import client

    from capstan.api import KINDS_BY_PLURAL
    from capstan.operator.config import OperatorConfig
    from devstack.harness import install_crds
    from devstack.pytest_plugin import new_api_client, prepare_namespace
    from devstack.stack import ensure_up

    n = tasks or int(os.environ.get("BENCH_OPERATOR_TASKS", "1000"))
    stack = ensure_up()
    os.environ.update(stack.env())  # capstan.operator.kube reads KUBECONFIG
    from capstan.operator import kube

    api_client = new_api_client(stack.kubeconfig)
    install_crds(api_client)
    core, api = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    info, config = KINDS_BY_PLURAL[PLURAL], OperatorConfig.from_env()
    ns = f"bfl{uuid.uuid4().hex[:4]}-load"
    core.create_namespace({"metadata": {"name": ns}})
    prepare_namespace(api_client, ns)
    kube.warm()
    result: dict[str, Any] = {"tasks": n, "quota": quota, "date": now_utc(), "cpus": os.cpu_count(),
                              "cpu_model": cpu_model()}
    created: dict[str, float] = {}
    pod_at: dict[str, float] = {}
    lock = threading.Lock()
    try:
        result["service_account_creates_per_second"] = _write_rate(core, ns)
        print(f"operator floor: {result['service_account_creates_per_second']} ServiceAccount creates/s", flush=True)
        names = [f"t{i:04d}" for i in range(n)]
        admissions = concurrent.futures.ThreadPoolExecutor(ADMISSION_THREADS)
        pending: list[concurrent.futures.Future] = []

        def create(name: str) -> None:
            with lock:
                created[name] = time.monotonic()
            made = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, task_body(name), _request_timeout=60)
            if int(name[1:]) < quota:
                future = admissions.submit(_admit, kube, api, core, info, config, made)
                future.add_done_callback(lambda f, name=name: pod_at.__setitem__(name, f.result()))
                with lock:
                    pending.append(future)

        by_role = CpuByRole(-1, -1)  # no operator, no pod runner
        cpu0, t0 = by_role.read(), time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(create, names))
        result["create_seconds"] = round(time.monotonic() - t0, 1)
        concurrent.futures.wait(pending)
        for f in pending:
            f.result()  # an admission's error is the benchmark's
        admissions.shutdown()
        result["cores_by_role"] = by_role.cores(cpu0, by_role.read(), time.monotonic() - t0)
        result["create_to_pod_first_quota"] = summary([pod_at[x] - created[x] for x in pod_at])
        result["writes_per_admission"] = 11  # 5 + 3 + 3 Events
        print(f"operator floor: {json.dumps(result)}", flush=True)
    finally:
        with contextlib.suppress(Exception):
            items = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _request_timeout=120)["items"]
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda o: api.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, o["metadata"]["name"], {"metadata": {"finalizers": None}}),
                    [o for o in items if o["metadata"].get("finalizers")]))
        with contextlib.suppress(Exception):
            core.delete_namespace(ns)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    run(1, Path(__file__).resolve().parent / "results" / "operator_floor.json",
        tasks=int(sys.argv[1]) if len(sys.argv) > 1 else None)
