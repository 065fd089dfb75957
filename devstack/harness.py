"""Runs Capstan on the local stack: installs the generated CRDs and runs the operator as a real
process. Shared by the test fixtures and `make demo`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import yaml

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


def install_crds(api_client: Any) -> list[str]:
    """Create or update crds/*.yaml and wait until the API server serves them."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ext = client.ApiextensionsV1Api(api_client)
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

    def established() -> bool:
        for name in names:
            conds = ext.read_custom_resource_definition(name, _request_timeout=30).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conds):
                return False
        return True

    wait_for(established, 30, what="CRDs established")
    time.sleep(1)  # discovery catches up
    return names


class OperatorProcess:
    """The operator as a real process, optionally scoped to one namespace."""

    def __init__(self, namespace: str | None, env: dict[str, str], log_path: Path):
        self.namespace, self.env, self.log_path = namespace, env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "capstan.operator", "--standalone"]
        if self.namespace:
            args += ["--namespace", self.namespace]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
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


class BackgroundLoop:
    """An asyncio loop in a thread, so synchronous code (tests, the demo) can drive async room clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
