"""Fixtures shared by the suite: the real stack (devstack.pytest_plugin), the CRDs installed in it,
the pod runner playing the kubelet, and the operator run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest_plugins = ["devstack.pytest_plugin"]

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.5, what: str = "") -> Any:
    """Poll until predicate() is truthy; fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate} (last: {last!r})")


@pytest.fixture(scope="session")
def crds(kube_api) -> list[str]:
    """Install (or update) the generated CRDs and wait until they are Established."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ext = client.ApiextensionsV1Api(kube_api)
    names = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            ext.create_custom_resource_definition(crd, _request_timeout=30)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = ext.read_custom_resource_definition(name, _request_timeout=30)
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(name, crd, _request_timeout=30)

    def established():
        for name in names:
            conds = ext.read_custom_resource_definition(name, _request_timeout=30).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conds):
                return False
        return True

    wait_for(established, 30, what="CRDs established")
    time.sleep(1)  # discovery catches up
    return names


@pytest.fixture(scope="session")
def pod_runner(stack) -> Iterator[Any]:
    from devstack.podrunner import PodRunner

    runner = PodRunner(kubeconfig=stack.kubeconfig)
    runner.start()
    yield runner
    runner.stop()


class OperatorProcess:
    """The operator as a real process, scoped to one namespace so tests do not see each other's tasks."""

    def __init__(self, namespace: str, env: dict[str, str], log_path: Path):
        self.namespace, self.env, self.log_path = namespace, env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "capstan.operator", "--standalone", "--namespace", self.namespace],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def restart(self, kill: bool = True) -> None:
        self.stop(kill=kill)
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def operator_factory(stack, crds, pod_runner, namespace, tmp_path) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(**settings: str) -> OperatorProcess:
        env = {**os.environ, **stack.env(), "CAPSTAN_METRICS_PORT": "0", "CAPSTAN_RECONCILE_INTERVAL": "1",
               "CAPSTAN_STOP_GRACE_SECONDS": "30", "PYTHONUNBUFFERED": "1", **settings}
        op = OperatorProcess(namespace, env, tmp_path / f"operator-{len(started)}.log")
        op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    failed = [op for op in started if "Traceback" in op.log()]
    for op in failed:
        sys.stderr.write(f"--- operator log {op.log_path}\n{op.log()[-4000:]}\n")


@pytest.fixture
def operator(operator_factory) -> OperatorProcess:
    return operator_factory()
