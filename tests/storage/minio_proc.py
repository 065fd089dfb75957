"""A private MinIO process for outage tests: own data dir, own free loopback port, and
start/pause/kill controlled by the test (the shared stack MinIO is never disturbed)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from devstack.stack import LOOPBACK, S3_ACCESS_KEY, S3_SECRET_KEY, binaries


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class MinioProcess:
    def __init__(self, root: Path) -> None:
        self.binary = binaries()["minio"]
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "minio.log"
        self.port, self.console_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "MINIO_ROOT_USER": S3_ACCESS_KEY, "MINIO_ROOT_PASSWORD": S3_SECRET_KEY,
               "MINIO_UPDATE": "off", "MINIO_BROWSER": "off"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "server", str(self.data), "--address", self.endpoint,
                 "--console-address", f"{LOOPBACK}:{self.console_port}", "--quiet"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"minio exited: {self.log_path.read_text()[-2000:]}")
            url = f"http://{self.endpoint}/minio/health/ready"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("minio did not become ready")

    def make_bucket(self, client: Any, name: str, timeout: float = 30.0) -> None:
        """Right after start MinIO may still answer 503 (XMinioServerNotInitialized): retry."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.make_bucket(name)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
