"""The local real stack (DESIGN §9): etcd, kube-apiserver, MinIO, Redis, Janus and LiveKit as local processes.

No container engine is needed. Everything listens on 127.0.0.1 only, except the two room
servers, each in a network namespace of its own reachable from the host through a veth pair
(WebRTC ignores loopback; devstack/netns.py): Janus (VideoRoom plugin) in ``capstan-sfu`` on
10.213.0.1 (devstack/janus_server.py) and LiveKit in ``capstan-lk`` on 10.214.0.1
(devstack/livekit_server.py). State (certificates,
data, logs, pid files, the admin kubeconfig) lives in ``$CAPSTAN_STACK_DIR`` (default
``~/.cache/capstan/stack``), outside the repository; binaries come from ``devstack/build.sh``.

CLI::

    python -m devstack.stack up      # start what is not running (idempotent), print what it did
    python -m devstack.stack env     # export NAME=value lines for a shell (eval "$(...)")
    python -m devstack.stack status  # what runs
    python -m devstack.stack down    # stop everything, keep the state and the build cache

Python::

    from devstack.stack import ensure_up
    env = ensure_up()          # StackEnv; env.env() is a dict of environment variables

This module uses only the standard library (plus the ``openssl``, ``redis-server``, ``janus`` and
``ip`` programs, and the binaries build.sh makes).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from devstack import janus_server, livekit_server
from devstack.log import log
from devstack.netns import Netns, NetnsError, NetnsUnavailable

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"

# Fixed dev credentials for MinIO (loopback only).
S3_ACCESS_KEY = "capstan"
S3_SECRET_KEY = "capstan-secret"

# Default ports, each overridable by the environment variable named next to it.
DEFAULT_PORTS = {
    "etcd": ("CAPSTAN_ETCD_PORT", 42379),
    "etcd_peer": ("CAPSTAN_ETCD_PEER_PORT", 42380),
    "apiserver": ("CAPSTAN_APISERVER_PORT", 46443),
    "minio": ("CAPSTAN_MINIO_PORT", 49000),
    "minio_console": ("CAPSTAN_MINIO_CONSOLE_PORT", 49001),
    "redis": ("CAPSTAN_REDIS_PORT", 46379),
}

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"
API_AUDIENCES = "https://kubernetes.default.svc"

# Timeouts (seconds).
PROBE_TIMEOUT = 3.0
START_TIMEOUTS = {
    "etcd": 60.0,
    "kube-apiserver": 180.0,
    "minio": 90.0,
    "redis": 20.0,
    "janus": 30.0,
    "livekit": 30.0,
}
STOP_TIMEOUT = 15.0
BUILD_TIMEOUT = 3 * 3600.0


class StackError(RuntimeError):
    """The stack could not be started or probed."""


# --------------------------------------------------------------------------------------------
# configuration


def state_dir() -> Path:
    return Path(os.environ.get("CAPSTAN_STACK_DIR") or Path.home() / ".cache" / "capstan" / "stack")


def cache_dir() -> Path:
    return Path(os.environ.get("CAPSTAN_CACHE") or Path.home() / ".cache" / "capstan")


def port(name: str) -> int:
    var, default = DEFAULT_PORTS[name]
    value = os.environ.get(var)
    return int(value) if value else default


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip("'\"")
    return out


def binaries() -> dict[str, Path]:
    v = versions()
    bin_dir = cache_dir() / "bin"
    return {
        "etcd": bin_dir / f"etcd-{v['ETCD_VERSION']}",
        "kube-apiserver": bin_dir / f"kube-apiserver-{v['KUBERNETES_VERSION']}",
        "minio": bin_dir / f"minio-{v['MINIO_VERSION']}",
        "livekit-server": bin_dir / f"livekit-server-{v['LIVEKIT_VERSION']}",
        "helm": bin_dir / f"helm-{v['HELM_VERSION']}",
        "promtool": bin_dir / f"promtool-{v['PROMTOOL_VERSION']}",
        "capstan-lkpublish": bin_dir / f"capstan-lkpublish-{lkpublish_hash()}",
    }


def lkpublish_hash() -> str:
    """What build.sh names the pusher's Go publisher after: its source (go.mod, go.sum, *.go)."""
    src = HERE.parent / "go" / "lkpublish"
    digest = hashlib.sha1()
    for path in [src / "go.mod", src / "go.sum", *sorted(src.glob("*.go"), key=lambda p: p.name.encode())]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class Paths:
    """Files inside the state directory."""

    def __init__(self, root: Path | None = None):
        self.root = root or state_dir()
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.run = self.root / "run"
        self.etcd_data = self.root / "etcd"
        self.minio_data = self.root / "minio"
        self.redis_dir = self.root / "redis"
        self.janus_conf = self.root / "janus"
        self.livekit_conf = self.root / "livekit"
        self.livekit_keys = self.root / "livekit-keys.json"  # kept across restarts and `down`
        self.kubeconfig = self.root / "kubeconfig"
        self.lock = self.root / "lock"

    def pki_file(self, name: str) -> Path:
        return self.pki / name

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def unavailable(self, component: str) -> Path:
        """Written by `up` when a room server could not be started (why), removed when it runs."""
        return self.run / f"{component}.unavailable"

    def mkdirs(self) -> None:
        dirs = (self.root, self.pki, self.logs, self.run, self.etcd_data, self.minio_data, self.redis_dir)
        for d in (*dirs, self.janus_conf, self.livekit_conf):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.etcd_data, 0o700)  # etcd insists on it


# --------------------------------------------------------------------------------------------
# the environment tests and the demo use


@dataclasses.dataclass
class StackEnv:
    kubeconfig: str
    s3_endpoint: str  # host:port
    s3_access_key: str
    s3_secret_key: str
    s3_secure: bool
    redis_url: str
    apiserver_url: str
    ca_file: str
    state_dir: str
    helm: str  # path of the helm binary build.sh made
    promtool: str  # path of the promtool binary build.sh made
    livekit_url: str = livekit_server.URL
    # made by the first `up` (None before it)
    livekit_api_key: str | None = None
    livekit_api_secret: str | None = None
    janus_url: str = janus_server.URL
    janus_admin_url: str = janus_server.ADMIN_URL
    janus_admin_secret: str = janus_server.ADMIN_SECRET
    janus_admin_key: str = janus_server.ADMIN_KEY
    room_host_address: str = janus_server.NET.host_address
    # why Janus / LiveKit does not run (e.g. not root: no network namespace); None when it runs or is unknown
    janus_error: str | None = dataclasses.field(default=None, compare=False)
    livekit_error: str | None = dataclasses.field(default=None, compare=False)
    # what the `up` call that produced this did (empty when the value was only computed)
    started: list[str] = dataclasses.field(default_factory=list, compare=False)
    reused: list[str] = dataclasses.field(default_factory=list, compare=False)

    def env(self) -> dict[str, str]:
        out = {
            "KUBECONFIG": self.kubeconfig,
            "S3_ENDPOINT": self.s3_endpoint,
            "S3_ACCESS_KEY": self.s3_access_key,
            "S3_SECRET_KEY": self.s3_secret_key,
            "S3_SECURE": "1" if self.s3_secure else "0",
            "REDIS_URL": self.redis_url,
            "JANUS_URL": self.janus_url,
            "JANUS_ADMIN_URL": self.janus_admin_url,
            "JANUS_ADMIN_SECRET": self.janus_admin_secret,
            "JANUS_ADMIN_KEY": self.janus_admin_key,
            "ROOM_HOST_ADDRESS": self.room_host_address,
            "HELM": self.helm,
            "PROMTOOL": self.promtool,
        }
        if self.livekit_api_key and self.livekit_api_secret:
            # the names LiveKit's own CLI and SDKs read
            out["LIVEKIT_URL"] = self.livekit_url
            out["LIVEKIT_API_KEY"] = self.livekit_api_key
            out["LIVEKIT_API_SECRET"] = self.livekit_api_secret
        return out


def stack_env(paths: Paths | None = None) -> StackEnv:
    """The values for the configured stack (computed; does not check that it runs)."""
    paths = paths or Paths()
    keys = livekit_server.read_keys(paths.livekit_keys)
    bins = binaries()
    return StackEnv(
        kubeconfig=str(paths.kubeconfig),
        s3_endpoint=f"{LOOPBACK}:{port('minio')}",
        s3_access_key=S3_ACCESS_KEY,
        s3_secret_key=S3_SECRET_KEY,
        s3_secure=False,
        redis_url=f"redis://{LOOPBACK}:{port('redis')}/0",
        apiserver_url=f"https://{LOOPBACK}:{port('apiserver')}",
        ca_file=str(paths.pki_file("ca.crt")),
        state_dir=str(paths.root),
        helm=str(bins["helm"]),
        promtool=str(bins["promtool"]),
        livekit_api_key=keys[0] if keys else None,
        livekit_api_secret=keys[1] if keys else None,
        janus_error=_read_unavailable(paths, "janus"),
        livekit_error=_read_unavailable(paths, "livekit"),
    )


def _read_unavailable(paths: Paths, component: str) -> str | None:
    try:
        return paths.unavailable(component).read_text().strip() or None
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# building


def build(timeout: float = BUILD_TIMEOUT) -> None:
    """Run devstack/build.sh (a no-op when the binaries exist), with progress lines."""
    missing = [name for name, path in binaries().items() if not os.access(path, os.X_OK)]
    if missing:
        log(f"building {', '.join(missing)} into {cache_dir() / 'bin'} (first run only; can take 30-40 min)")
    started = time.monotonic()
    proc = subprocess.Popen(["bash", str(HERE / "build.sh")], stdin=subprocess.DEVNULL)
    last_note = started
    while True:
        try:
            rc = proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if now - started > timeout:
                proc.kill()
                proc.wait(timeout=10)
                raise StackError(f"build.sh did not finish within {timeout:.0f} s") from None
            if now - last_note >= 30:
                log(f"still building ({(now - started) / 60:.1f} min so far)")
                last_note = now
    if rc != 0:
        raise StackError(f"devstack/build.sh failed with exit code {rc}")
    if missing:
        log(f"build finished in {(time.monotonic() - started) / 60:.1f} min")
    still = [name for name, path in binaries().items() if not os.access(path, os.X_OK)]
    if still:
        raise StackError(f"build.sh finished but these binaries are missing: {', '.join(still)}")


# --------------------------------------------------------------------------------------------
# certificates (openssl)


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise StackError(f"openssl {' '.join(args)} failed:\n{res.stderr}")


PKI_FILES = (
    "ca.crt",
    "ca.key",
    "apiserver.crt",
    "apiserver.key",
    "admin.crt",
    "admin.key",
    "sa.key",
    "sa.pub",
)


def ensure_pki(paths: Paths) -> bool:
    """Create the CA, serving cert, admin client cert and service-account keys once.

    Returns True when they were created now.
    """
    if all(paths.pki_file(f).exists() for f in PKI_FILES):
        return False
    paths.root.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(dir=paths.root, prefix=".pki-"))
    try:
        days = "3650"
        _openssl("genrsa", "-out", "ca.key", "2048", cwd=d)
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha256",
            "-days",
            days,
            "-subj",
            "/CN=capstan-devstack-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out",
            "ca.crt",
            cwd=d,
        )
        leafs = {
            "apiserver": (
                "/CN=kube-apiserver",
                "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                "DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n",
            ),
            "admin": ("/O=system:masters/CN=admin", "extendedKeyUsage=clientAuth\n"),
        }
        for i, (name, (subj, ext)) in enumerate(leafs.items(), start=1):
            (d / f"{name}.ext").write_text(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" + ext
            )
            _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=d)
            _openssl("req", "-new", "-key", f"{name}.key", "-subj", subj, "-out", f"{name}.csr", cwd=d)
            _openssl(
                "x509",
                "-req",
                "-in",
                f"{name}.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                str(1000 + i),
                "-sha256",
                "-days",
                days,
                "-extfile",
                f"{name}.ext",
                "-out",
                f"{name}.crt",
                cwd=d,
            )
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
        for f in d.iterdir():
            os.chmod(f, 0o600)
        for f in list(d.iterdir()):
            if f.suffix in (".csr", ".ext", ".srl"):
                f.unlink()
        if paths.pki.exists():  # partial: replace it as a whole
            shutil.rmtree(paths.pki)
        d.rename(paths.pki)
    finally:
        if d.exists():
            shutil.rmtree(d)
    os.chmod(paths.pki, 0o700)
    return True


def write_kubeconfig(paths: Paths) -> None:
    def b64(name: str) -> str:
        return base64.b64encode(paths.pki_file(name).read_bytes()).decode()

    server = f"https://{LOOPBACK}:{port('apiserver')}"
    # JSON is valid YAML; no YAML library needed.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "capstan", "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")},
            }
        ],
        "contexts": [{"name": "capstan", "context": {"cluster": "capstan", "user": "admin"}}],
        "current-context": "capstan",
        "preferences": {},
    }
    text = json.dumps(config, indent=2) + "\n"
    if paths.kubeconfig.exists() and paths.kubeconfig.read_text() == text:
        return
    tmp = paths.kubeconfig.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(paths.kubeconfig)


# --------------------------------------------------------------------------------------------
# probes


def _admin_ssl_context(paths: Paths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(paths.pki_file("ca.crt")))
    ctx.load_cert_chain(str(paths.pki_file("admin.crt")), str(paths.pki_file("admin.key")))
    return ctx


def http_get(
    url: str, ctx: ssl.SSLContext | None = None, timeout: float = PROBE_TIMEOUT
) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _ok(fn: Callable[[], bool]) -> bool:
    try:
        return fn()
    except (OSError, ssl.SSLError, ValueError):
        return False


def probe_etcd() -> bool:
    def check() -> bool:
        status, body = http_get(f"http://{LOOPBACK}:{port('etcd')}/health")
        return status == 200 and json.loads(body).get("health") == "true"

    return _ok(check)


def probe_apiserver(paths: Paths) -> bool:
    def check() -> bool:
        ctx = _admin_ssl_context(paths)
        base = f"https://{LOOPBACK}:{port('apiserver')}"
        status, _ = http_get(f"{base}/readyz", ctx)
        if status != 200:
            return False
        status, _ = http_get(f"{base}/api/v1/namespaces/default", ctx)
        return status == 200

    return _ok(check)


def probe_minio() -> bool:
    return _ok(lambda: http_get(f"http://{LOOPBACK}:{port('minio')}/minio/health/ready")[0] == 200)


def probe_redis() -> bool:
    def check() -> bool:
        with socket.create_connection((LOOPBACK, port("redis")), timeout=PROBE_TIMEOUT) as s:
            s.settimeout(PROBE_TIMEOUT)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    return _ok(check)


def _api_create(paths: Paths, path: str, body: dict[str, object]) -> None:
    """POST an object as admin; an existing one (409) is fine."""
    req = urllib.request.Request(
        f"https://{LOOPBACK}:{port('apiserver')}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=_admin_ssl_context(paths)):  # noqa: S310
            pass
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise StackError(f"POST {path} failed: {e.code} {e.read()[:300]!r}") from e


def prepare_builtin_namespaces(paths: Paths) -> None:
    """Do what kube-controller-manager would for the built-in namespaces (it does not run here):
    a ``default`` ServiceAccount (ServiceAccount admission refuses Pods without one) and the
    ``kube-root-ca.crt`` ConfigMap. Test namespaces get the same from the ``namespace`` fixture."""
    ca_pem = paths.pki_file("ca.crt").read_text()
    for ns in ("default", "kube-system", "kube-public"):
        _api_create(paths, f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "default"}})
        _api_create(
            paths,
            f"/api/v1/namespaces/{ns}/configmaps",
            {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": ca_pem}},
        )


def probe_janus() -> bool:
    """Janus answers ``info`` on its HTTP API and has the VideoRoom plugin loaded."""

    def check() -> bool:
        status, body = http_get(f"{janus_server.URL}/info")
        info = json.loads(body)
        return (
            status == 200
            and info.get("janus") == "server_info"
            and "janus.plugin.videoroom" in info.get("plugins", {})
        )

    return _ok(check)


def probe_livekit() -> bool:
    """livekit-server answers ``GET /`` with ``OK`` (its health check)."""
    return _ok(lambda: http_get(f"{livekit_server.HTTP_URL}/") == (200, b"OK"))


def port_in_use(p: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((LOOPBACK, p)) == 0


# --------------------------------------------------------------------------------------------
# processes


@dataclasses.dataclass
class Component:
    name: str
    argv: Callable[[Paths], list[str]]
    probe: Callable[[Paths], bool]
    ports: tuple[str, ...]
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    # the program the pid runs when argv[0] execs another one (`ip netns exec ... janus`)
    program_name: str | None = None

    def program(self) -> str:
        return self.program_name or self.argv(Paths())[0]


def _etcd_argv(paths: Paths) -> list[str]:
    client = f"http://{LOOPBACK}:{port('etcd')}"
    peer = f"http://{LOOPBACK}:{port('etcd_peer')}"
    return [
        str(binaries()["etcd"]),
        "--name=capstan",
        f"--data-dir={paths.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=capstan={peer}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync=true",  # as envtest does: a throw-away dev store
        "--log-level=warn",
    ]


def _apiserver_argv(paths: Paths) -> list[str]:
    pki = paths.pki
    return [
        str(binaries()["kube-apiserver"]),
        f"--etcd-servers=http://{LOOPBACK}:{port('etcd')}",
        f"--secure-port={port('apiserver')}",
        f"--bind-address={LOOPBACK}",
        f"--advertise-address={LOOPBACK}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--api-audiences={API_AUDIENCES}",
        "--allow-privileged=true",
        # The `kubernetes` Service's endpoints would be 127.0.0.1, which Endpoints validation refuses.
        "--endpoint-reconciler-type=none",
        "--v=1",
    ]


def _minio_argv(paths: Paths) -> list[str]:
    return [
        str(binaries()["minio"]),
        "server",
        str(paths.minio_data),
        "--address",
        f"{LOOPBACK}:{port('minio')}",
        "--console-address",
        f"{LOOPBACK}:{port('minio_console')}",
    ]


def _redis_argv(paths: Paths) -> list[str]:
    return [
        "redis-server",
        "--bind",
        LOOPBACK,
        "--port",
        str(port("redis")),
        "--protected-mode",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(paths.redis_dir),
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]


# --------------------------------------------------------------------------------------------
# the room servers, each in its own network namespace (devstack/netns.py)


def write_config_files(folder: Path, files: dict[str, str]) -> bool:
    """Write a server's configuration folder (files may hold secrets: 0600); True when one changed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed = False
    for name, text in files.items():
        f = folder / name
        if f.exists() and f.read_text() == text:
            continue
        tmp = f.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        tmp.replace(f)
        changed = True
    return changed


def _write_janus_config(paths: Paths) -> bool:
    return write_config_files(paths.janus_conf, janus_server.config_files(paths.janus_conf))


def _write_livekit_config(paths: Paths) -> bool:
    key, secret = livekit_server.load_or_create_keys(paths.livekit_keys)
    return write_config_files(paths.livekit_conf, livekit_server.config_files(key, secret))


def _livekit_missing() -> str | None:
    binary = binaries()["livekit-server"]
    if not os.access(binary, os.X_OK):
        return f"{binary} is missing; run devstack/build.sh livekit"
    return None


@dataclasses.dataclass(frozen=True)
class RoomServer:
    """What `up` needs to know of a room server beyond its Component."""

    component: str
    title: str  # for messages
    net: Netns
    url: str  # where it answers (for the "not ours" message)
    missing: Callable[[], str | None]  # why it cannot be started here, or None
    write_config: Callable[[Paths], bool]  # True when the configuration changed


ROOM_SERVERS = {
    r.component: r
    for r in (
        RoomServer("janus", "Janus", janus_server.NET, janus_server.URL, janus_server.missing, _write_janus_config),
        RoomServer(
            "livekit", "LiveKit", livekit_server.NET, livekit_server.URL, _livekit_missing, _write_livekit_config
        ),
    )
}


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component("etcd", _etcd_argv, lambda p: probe_etcd(), ("etcd", "etcd_peer")),
        Component("kube-apiserver", _apiserver_argv, probe_apiserver, ("apiserver",)),
        Component(
            "minio",
            _minio_argv,
            lambda p: probe_minio(),
            ("minio", "minio_console"),
            env={
                "MINIO_ROOT_USER": S3_ACCESS_KEY,
                "MINIO_ROOT_PASSWORD": S3_SECRET_KEY,
                "MINIO_UPDATE": "off",
                "MINIO_BROWSER": "off",
            },
        ),
        Component("redis", _redis_argv, lambda p: probe_redis(), ("redis",)),
        Component(
            "janus",
            lambda p: janus_server.argv(p.janus_conf),
            lambda p: probe_janus(),
            (),
            program_name="janus",
        ),
        Component(
            "livekit",
            lambda p: livekit_server.argv(binaries()["livekit-server"], p.livekit_conf),
            lambda p: probe_livekit(),
            (),
            program_name=str(binaries()["livekit-server"]),
        ),
    )
}
START_ORDER = ("etcd", "redis", "minio", "kube-apiserver")  # on loopback
ALL_COMPONENTS = (*START_ORDER, *ROOM_SERVERS)


def _read_pid(paths: Paths, name: str) -> int | None:
    try:
        return int(paths.pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap our own children
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _pid_is(pid: int, comp: Component) -> bool:
    """The pid still runs the program we started (guards against pid reuse).

    Compares the command line, not /proc/<pid>/exe, so a rebuilt binary does not orphan a
    process started from the previous one (redis-server rewrites its title, hence the split).
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    argv0 = cmdline.split(b"\0", 1)[0].decode(errors="replace").split(" ", 1)[0]
    expected = comp.program()
    return argv0 == expected or os.path.basename(argv0) == os.path.basename(expected)


def running_pid(paths: Paths, name: str) -> int | None:
    pid = _read_pid(paths, name)
    if pid and _pid_alive(pid) and _pid_is(pid, COMPONENTS[name]):
        return pid
    return None


def _tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return "(no log)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _start(paths: Paths, comp: Component) -> tuple[int, int]:
    """Start a component in its own session; returns (pid, log offset)."""
    for pname in comp.ports:
        if port_in_use(port(pname)):
            var = DEFAULT_PORTS[pname][0]
            raise StackError(
                f"port {LOOPBACK}:{port(pname)} for {comp.name} is taken by another program; "
                f"stop it or choose another port with {var}=..."
            )
    logf = paths.log_file(comp.name)
    with logf.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {comp.name} ===\n".encode())
        out.flush()
        offset = out.tell()
        argv = comp.argv(paths)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            env={**os.environ, **comp.env},
            start_new_session=True,
        )
    paths.pid_file(comp.name).write_text(f"{proc.pid}\n")
    log(f"started {comp.name} (pid {proc.pid}), log {logf}")
    return proc.pid, offset


def _wait_healthy(paths: Paths, comp: Component, pid: int, offset: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if comp.probe(paths) and _pid_alive(pid):
            return
        if not _pid_alive(pid):
            raise StackError(
                f"{comp.name} exited during start-up; last lines of {paths.log_file(comp.name)}:\n"
                + _tail(paths.log_file(comp.name), offset)
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{comp.name} did not become healthy within {timeout:.0f} s; last lines of "
                f"{paths.log_file(comp.name)}:\n" + _tail(paths.log_file(comp.name), offset)
            )
        time.sleep(0.25)


def _stop_pid(pid: int, name: str, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group we started, then SIGKILL after a timeout."""

    def send(sig: int) -> None:
        try:
            os.killpg(pid, sig)  # started with start_new_session: pgid == pid
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            log(f"{name} (pid {pid}) ignored SIGTERM for {timeout:.0f} s; sending SIGKILL")
            send(signal.SIGKILL)
            kill_deadline = time.monotonic() + 5
            while _pid_alive(pid) and time.monotonic() < kill_deadline:
                time.sleep(0.1)
            break
        time.sleep(0.1)


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    paths.root.mkdir(parents=True, exist_ok=True)
    with paths.lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# up / down / status


def _ensure_component(
    paths: Paths, name: str, started: list[str], reused: list[str]
) -> tuple[int, int] | None:
    """Reuse a healthy running component, or start it; returns (pid, offset) when started."""
    comp = COMPONENTS[name]
    pid = running_pid(paths, name)
    if pid is not None:
        # A process of ours runs: give it a moment if it is still starting, else replace it.
        deadline = time.monotonic() + min(START_TIMEOUTS[name], 30.0)
        while time.monotonic() < deadline and _pid_alive(pid):
            if comp.probe(paths):
                reused.append(name)
                log(f"reusing {name} (pid {pid})")
                return None
            time.sleep(0.5)
        log(f"{name} (pid {pid}) runs but is not healthy; restarting it")
        _stop_pid(pid, name)
    paths.pid_file(name).unlink(missing_ok=True)
    started.append(name)
    return _start(paths, comp)


def _ensure_room_server(
    paths: Paths, server: RoomServer, started: list[str], reused: list[str]
) -> tuple[int, int] | None:
    """Namespace, configuration and process of a room server; returns (pid, offset) when started.

    When it cannot run (not root, not installed or built, another one holds the namespace), says
    so loudly, records why in ``run/<component>.unavailable`` (tests that need it fail with it)
    and returns None."""
    name, marker = server.component, paths.unavailable(server.component)
    try:
        server.net.ensure()
        pid = running_pid(paths, name)
        if pid is None and COMPONENTS[name].probe(paths):
            # not ours (no pid file of this stack): leave it alone, and do not block the rest
            raise NetnsUnavailable(
                f"something that is not this stack's {server.title} already answers at {server.url} "
                f"(pids in network namespace {server.net.name}: {server.net.pids()}); stop it "
                "(or use another CAPSTAN_SFU_NET) and run `up` again"
            )
        why = server.missing()
        if why:
            raise NetnsUnavailable(why)
    except NetnsUnavailable as e:
        marker.write_text(f"{e}\n")
        log(f"WARNING: {server.title} (room server) skipped: {e}")
        return None
    marker.unlink(missing_ok=True)
    if server.write_config(paths) and pid is not None:
        log(f"{server.title} configuration changed; restarting {name} (pid {pid})")
        _stop_pid(pid, name)
        paths.pid_file(name).unlink(missing_ok=True)
    return _ensure_component(paths, name, started, reused)


def ensure_up(build_first: bool = True) -> StackEnv:
    """Start whatever part of the stack is not running (idempotent) and wait until it is healthy."""
    paths = Paths()
    t0 = time.monotonic()
    if build_first:
        build()
    with _locked(paths):
        paths.mkdirs()
        if ensure_pki(paths):
            log(f"created certificates and service-account keys in {paths.pki}")
        write_kubeconfig(paths)
        started: list[str] = []
        reused: list[str] = []
        pending: dict[str, tuple[int, int]] = {}
        for name in START_ORDER:
            if name == "kube-apiserver" and "etcd" in pending:
                pid, offset = pending.pop("etcd")
                _wait_healthy(paths, COMPONENTS["etcd"], pid, offset, START_TIMEOUTS["etcd"])
                log("etcd is healthy")
            res = _ensure_component(paths, name, started, reused)
            if res:
                pending[name] = res
        for server in ROOM_SERVERS.values():
            res = _ensure_room_server(paths, server, started, reused)
            if res:
                pending[server.component] = res
        for name, (pid, offset) in pending.items():
            _wait_healthy(paths, COMPONENTS[name], pid, offset, START_TIMEOUTS[name])
            log(f"{name} is healthy")
        prepare_builtin_namespaces(paths)
        if started:
            log(
                f"stack up in {time.monotonic() - t0:.1f} s (started: {', '.join(started)}"
                + (f"; reused: {', '.join(reused)})" if reused else ")")
            )
        else:
            log("stack already up; nothing started")
    env = stack_env(paths)
    env.started, env.reused = started, reused
    return env


def down() -> list[str]:
    """Stop every component (reverse start order). State and build cache are kept."""
    paths = Paths()
    stopped = []
    with _locked(paths):
        for name in reversed(ALL_COMPONENTS):
            pid = running_pid(paths, name)
            if pid is not None:
                log(f"stopping {name} (pid {pid})")
                _stop_pid(pid, name)
                stopped.append(name)
            paths.pid_file(name).unlink(missing_ok=True)
        for server in ROOM_SERVERS.values():
            server.net.delete_if_unused()
    if not stopped:
        log("nothing was running")
    return stopped


def status() -> dict[str, dict[str, object]]:
    paths = Paths()
    out: dict[str, dict[str, object]] = {}
    for name in ALL_COMPONENTS:
        comp = COMPONENTS[name]
        pid = running_pid(paths, name)
        out[name] = {
            "pid": pid,
            "healthy": comp.probe(paths) if pid else False,
            "addresses": [f"{LOOPBACK}:{port(p)}" for p in comp.ports],
            "log": str(paths.log_file(name)),
        }
    jnet, lknet = janus_server.NET, livekit_server.NET
    out["janus"]["addresses"] = [
        f"{jnet.address}:{janus_server.PORT}",
        f"{jnet.address}:{janus_server.ADMIN_PORT} (netns {jnet.name})",
    ]
    out["livekit"]["addresses"] = [
        f"{lknet.address}:{livekit_server.PORT}",
        f"{lknet.address}:{livekit_server.RTC_TCP_PORT} (netns {lknet.name})",
    ]
    for server in ROOM_SERVERS.values():
        out[server.component]["unavailable"] = _read_unavailable(paths, server.component)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "env", "status"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            env = ensure_up()
            errors = {"janus": env.janus_error, "livekit": env.livekit_error}
            for name in ALL_COMPONENTS:
                if errors.get(name):
                    print(f"{name}: NOT RUNNING: {errors[name]}")
                    continue
                what = "started" if name in env.started else "reused"
                print(f"{name}: {what}")
            print(f'KUBECONFIG={env.kubeconfig}  (eval "$(python -m devstack.stack env)" to export)')
        elif args.command == "down":
            down()
        elif args.command == "env":
            for key, value in stack_env().env().items():
                print(f"export {key}={shlex.quote(value)}")
        else:
            any_down = False
            for name, st in status().items():
                ports = ", ".join(st["addresses"])  # type: ignore[arg-type]
                if st["pid"]:
                    state = "healthy" if st["healthy"] else "UNHEALTHY"
                    print(f"{name:15} running  pid {st['pid']:<8} {state:9} {ports}")
                else:
                    any_down = True
                    print(f"{name:15} stopped  {'':12} {'':9} {ports}")
                    if st.get("unavailable"):
                        print(f"{'':15} ({st['unavailable']})")
            return 3 if any_down else 0
    except (StackError, NetnsError) as e:
        print(f"[devstack] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
