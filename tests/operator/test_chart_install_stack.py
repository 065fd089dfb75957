"""`helm install` of the chart into the local stack's API server (the real helm binary, the stack's
kubeconfig), then the chart's own operator Deployments run: the test plays the ReplicaSet controller
(a Pod from each Deployment's template; the pod runner plays the kubelet, with the chart's
ServiceAccount token). A real recording on LiveKit runs end to end under that ServiceAccount and
RBAC, the operator's and the worker's /metrics are scraped while it runs and the series move,
`helm test` passes, and when the main operator goes the standby (a lower kopf priority) takes the
next task.

tests/operator/test_rbac_stack.py runs the operator as a plain process with the chart's RBAC only
(both watch modes, a restricted namespace); this one installs the whole chart and runs its Pods.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from capstan.media import naming
from tests.conftest import wait_for
from tests.operator.chart_rbac import CHART, forbidden_lines
from tests.operator.test_operator_stack import Tasks

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(ip: str, port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape of http://ip:port/metrics: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


class Release:
    """One installed release of the chart and the operator Pods made from its Deployments."""

    def __init__(self, stack: Any, kube_api: Any, pod_runner: Any, namespace: str, tmp: Path) -> None:
        self.stack, self.runner, self.ns, self.tmp = stack, pod_runner, namespace, tmp
        self.core = client.CoreV1Api(kube_api)
        self.apps = client.AppsV1Api(kube_api)
        self.name = f"cs{uuid.uuid4().hex[:6]}"
        self.pods: dict[str, str] = {}  # role -> Pod name

    def helm(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run([self.stack.helm, *args, "--kubeconfig", self.stack.kubeconfig],
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"helm {' '.join(args[:2])}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def install(self, values: dict[str, Any]) -> str:
        path = self.tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        return self.helm("install", self.name, str(CHART), "--namespace", self.ns, "-f", str(path))

    def deployments(self) -> dict[str, Any]:
        found = self.apps.list_namespaced_deployment(
            self.ns, label_selector=f"app.kubernetes.io/instance={self.name}", _request_timeout=30).items
        return {d.metadata.labels["capstan.dev/operator-role"]: d for d in found}

    def start_operator(self, role: str) -> str:
        """What the Deployment's ReplicaSet would do: one Pod from its template."""
        deployment = self.deployments()[role]
        template = client.ApiClient().sanitize_for_serialization(deployment.spec.template)
        name = f"{deployment.metadata.name}-{uuid.uuid4().hex[:5]}"
        self.core.create_namespaced_pod(self.ns, {"metadata": {**template["metadata"], "name": name},
                                                  "spec": template["spec"]}, _request_timeout=30)
        self.pods[role] = name
        return name

    def ip(self, pod: str) -> str:
        return wait_for(lambda: self.core.read_namespaced_pod(pod, self.ns, _request_timeout=30).status.pod_ip, 60,
                        what=f"{pod} IP")

    def log(self, role: str) -> str:
        path = self.runner.pod_dir(self.ns, self.pods[role]) / "operator.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def release(stack, crds, pod_runner, kube_api, namespace, tmp_path):
    rel = Release(stack, kube_api, pod_runner, namespace, tmp_path)
    yield rel
    for pod in rel.pods.values():  # graceful: kopf takes its peering entry away
        with contextlib.suppress(client.exceptions.ApiException):
            rel.core.delete_namespaced_pod(pod, namespace, _request_timeout=30)
    subprocess.run([stack.helm, "uninstall", rel.name, "--namespace", namespace, "--kubeconfig", stack.kubeconfig,
                    "--wait=false"], capture_output=True, timeout=120)


@pytest.fixture
def room(livekit):
    from devstack.harness import BackgroundLoop
    from devstack.rooms import RoomServer
    from tests.recorder.test_recording import Room

    loop = BackgroundLoop()
    r = Room(RoomServer.from_stack("livekit", livekit), loop)
    yield r
    r.close()
    loop.close()


def test_helm_install_runs_a_recording_with_metrics_then_the_standby_takes_over(
        release, room, kube_api, namespace, s3, bucket, stack):
    from tests.recorder.test_recording import SDKAPPID, objects
    from tests.recorder.test_recording import recording as media_recording

    op_port, worker_port = free_port(), free_port()
    server = room.server
    out = release.install({
        "watchNamespaces": [namespace],
        "metrics": {"port": op_port, "bindAddress": "podIP", "workerPort": worker_port},
        "reconcileInterval": 1, "stopGraceSeconds": 30,
        "workerEnv": {k.removeprefix("CAPSTAN_WORKER_ENV_"): v for k, v in server.worker_env().items()},
        # the task below names neither room server nor storage: the chart's defaults give them
        "defaults": {"room": {"url": server.url, "credentialsSecret": "room-credentials"},
                     "storage": {"endpoint": stack.s3_endpoint, "bucket": bucket, "secure": False,
                                 "credentialsSecret": "storage"}},
    })
    assert "STATUS: deployed" in out
    deployments = release.deployments()
    assert sorted(deployments) == ["main", "standby"]
    sa = f"{release.name}-capstan"
    assert all(d.spec.template.spec.service_account_name == sa for d in deployments.values())

    tasks = Tasks(kube_api, namespace)
    use = {"capstan.dev/use": "true"}
    for name, data in (("storage", {"accessKey": stack.s3_access_key, "secretKey": stack.s3_secret_key}),
                       ("room-credentials", server.secret_data())):
        tasks.core.create_namespaced_secret(namespace, {"metadata": {"name": name, "labels": use},
                                                        "stringData": data}, _request_timeout=30)
    main_ip = release.ip(release.start_operator("main"))
    standby_ip = release.ip(release.start_operator("standby"))
    operator = wait_for(lambda: _try_scrape(main_ip, op_port), 90, what="the main operator's /metrics")
    assert sample(operator, "capstan_queue_length", kind="cloudrecordings") == 0
    # kopf peering: until the standby has seen the main operator's higher priority, both are active
    # (writes are conditional, so that is safe); the figures below count on the standby being paused
    wait_for(lambda: "Pausing operations in favour of" in release.log("standby"), 90, what="the standby paused")

    # a real recording under the chart's ServiceAccount and RBAC, on the chart's default room server
    # and storage (the Secrets of those names in the task's namespace); both /metrics move while it runs
    room.start("alice")
    live = media_recording("live", room, bucket)
    del live["spec"]["storage"]
    live["spec"]["room"] = {k: live["spec"]["room"][k] for k in ("sdkAppId", "strRoomId")}
    tasks.create(live)
    st = tasks.wait_phase("live", "recording", timeout=120)
    task_id = st["taskId"]
    operator = scrape_until(main_ip, op_port, lambda m: sample(
        m, "capstan_tasks", kind="cloudrecordings", phase="recording") == 1, "tasks gauge shows it recording")
    assert sample(operator, "capstan_tasks_accepted_total", kind="cloudrecordings") == 1
    assert sample(operator, "capstan_queue_wait_seconds_count", kind="cloudrecordings") == 1
    worker_pod = tasks.pod("live-crec-a1")
    (port,) = worker_pod.spec.containers[0].ports  # what the chart's PodMonitor selects
    assert (port.name, port.container_port) == ("metrics", worker_port)
    first = wait_for(lambda: _try_scrape(worker_pod.status.pod_ip, worker_port), 30, what="the worker's /metrics")
    time.sleep(4)
    second = scrape(worker_pod.status.pod_ip, worker_port)
    for name in ("capstan_worker_frames_received_total", "capstan_worker_frames_encoded_total",
                 "capstan_worker_encode_seconds_total"):
        for track in ("video", "audio"):
            assert sample(second, name, track=track) > sample(first, name, track=track), (name, track)
    assert sample(second, "capstan_worker_uploaded_objects_total", type="segment") > 0
    assert sample(second, "capstan_worker_uploaded_bytes_total") > 0

    tasks.patch_spec("live", {"stop": True})
    st = tasks.wait_phase("live", "finished", timeout=180)
    stored = objects(s3, bucket, task_id)
    for name in (naming.single_playlist_name(SDKAPPID, room.name, "alice", "main", "video"),
                 naming.single_mp4_name(SDKAPPID, room.name, "alice", "main", 1)):
        assert name in stored, f"{name} missing; stored: {sorted(stored)}"
    # the result body names the files by URLs of the default storage: signed and announced, not refused
    wait_for(lambda: any(r == "Result" for r, _ in tasks.events("live")), 30, what="the Result Event")
    assert not [m for r, m in tasks.events("live") if r == "EventRefused"]
    generation = tasks.get("live")["metadata"]["generation"]
    conditions = {c["type"]: c for c in st["conditions"]}
    assert st["observedGeneration"] == generation
    assert (conditions["Ready"]["status"], conditions["Reconciling"]["status"], conditions["Stalled"]["status"]) == \
        ("True", "False", "False")
    operator = scrape_until(main_ip, op_port, lambda m: sample(
        m, "capstan_task_duration_seconds_count", kind="cloudrecordings", phase="finished") == 1,
        "task duration observed")
    assert sample(operator, "capstan_tasks_ended_total", kind="cloudrecordings", phase="finished") == 1
    assert sample(operator, "capstan_tasks", kind="cloudrecordings", phase="recording") == 0
    assert sample(operator, "capstan_tasks", kind="cloudrecordings", phase="finished") == 1
    # the standby paused: it serves /metrics, and has accepted nothing
    standby = scrape(standby_ip, op_port)
    assert sample(standby, "capstan_tasks_accepted_total", kind="cloudrecordings") == 0
    # a paused operator says so and exports no (stale) task gauges; the main one does
    assert sample(standby, "capstan_operator_active") == 0
    assert not any(name == "capstan_tasks" for name, _ in standby)
    assert sample(scrape(main_ip, op_port), "capstan_operator_active") == 1

    # helm test: the chart's test Pod reads the operator's /metrics
    release.helm("upgrade", release.name, str(CHART), "--namespace", namespace, "--reuse-values",
                 "--set", f"tests.metricsUrl=http://{main_ip}:{op_port}/metrics")
    tested = release.helm("test", release.name, "--namespace", namespace, "--timeout", "2m", timeout=180)
    assert "Phase:          Succeeded" in tested or "Succeeded" in tested, tested

    # the main operator goes: the standby takes the next task
    assert forbidden_lines(release.log("main")) == [], release.log("main")[-3000:]
    main_pod = release.pods.pop("main")
    release.core.delete_namespaced_pod(main_pod, namespace, _request_timeout=30)
    wait_for(lambda: tasks.pod(main_pod) is None, 60, what="the main operator gone")  # it works until it exits
    wait_for(lambda: "Resuming operations" in release.log("standby"), 90, what="the standby resuming")
    tasks.create(media_recording("next", room, bucket))
    tasks.wait_phase("next", "recording", timeout=150)
    standby = scrape(standby_ip, op_port)
    assert sample(standby, "capstan_tasks_accepted_total", kind="cloudrecordings") == 1
    assert sample(standby, "capstan_operator_active") == 1
    tasks.patch_spec("next", {"stop": True})
    tasks.wait_phase("next", "finished", timeout=180)
    for name in ("live", "next"):
        tasks.delete(name)
        wait_for(lambda n=name: tasks.get(n) is None, 60, what=f"{name} deleted")
    assert forbidden_lines(release.log("standby")) == [], release.log("standby")[-3000:]


def scrape_until(ip: str, port: int, done: Callable[[dict], bool], what: str, timeout: float = 30) -> dict:
    def check() -> dict | None:
        metrics = scrape(ip, port)
        return metrics if done(metrics) else None
    return wait_for(check, timeout, what=what)


def _try_scrape(ip: str, port: int) -> dict | None:
    try:
        return scrape(ip, port)
    except OSError:
        return None
