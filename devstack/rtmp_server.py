"""A real RTMP server on loopback for the pusher's live tests: Debian's nginx with
libnginx-mod-rtmp (devstack/install-system-deps.sh), run in the foreground with a generated
config on a free port, and FFmpeg publishing a file into it as a live stream."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from devstack.stack import LOOPBACK

NGINX = "/usr/sbin/nginx"
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
START_TIMEOUT = 10.0

CONFIG = """daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
load_module {module};
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen {host}:{port};
        application live {{ live on; record off; }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class RtmpServer:
    """nginx-rtmp serving rtmp://127.0.0.1:<port>/live/<stream> until :meth:`stop`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        (root / "nginx.conf").write_text(CONFIG.format(root=root, module=RTMP_MODULE, host=LOOPBACK, port=self.port))
        self.proc = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=(root / "stderr.log").open("wb"))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                socket.create_connection((LOOPBACK, self.port), 0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx-rtmp exited: {(root / 'stderr.log').read_text()[-2000:]}") from None
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("nginx-rtmp did not listen in time")

    def url(self, stream: str) -> str:
        return f"rtmp://{LOOPBACK}:{self.port}/live/{stream}"

    def publish(self, path: Path, stream: str) -> subprocess.Popen[bytes]:
        """FFmpeg feeding `path` (looped, real time, copied) as live stream `stream`."""
        return subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                                 "-i", str(path), "-c", "copy", "-f", "flv", self.url(stream)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
