"""The pod runner: a test harness that plays the kubelet for the local stack (DESIGN §9).

There is no container engine and no kubelet here. The pod runner watches Pods in the API
server and, for every Pod that is unscheduled or bound to the node ``devstack``, binds it,
gives it a distinct loopback pod IP (127.0.0.x), and runs each container's ``command + args``
as a local process (the image is ignored; ``python``/``python3`` become the runner's own
interpreter so the project's code runs). It resolves the container environment like the
kubelet (literal values, Secret/ConfigMap refs, downward API, ``envFrom``, ``$(VAR)``
expansion), hands the Pod its ServiceAccount identity as a kubeconfig holding a token from
the TokenRequest API, maps emptyDir/Secret/ConfigMap volumes onto local directories (and a
PersistentVolumeClaim onto a directory of its own that outlives the Pods mounting it), and
reports phase, container states, exit codes and restarts back to the Pod status. Deletion
honours the grace period (SIGTERM, wait, SIGKILL) and then removes the Pod object.

It is never part of the product.

Layout of the state directory (default ``${CAPSTAN_STACK_DIR:-~/.cache/capstan/stack}/pods``)::

    <state>/<namespace>/<pod>/<container>.log   stdout+stderr of the container (appended)
    <state>/<namespace>/<pod>/<container>.pid   pid while the container process runs
    <state>/<namespace>/<pod>/kubeconfig        ServiceAccount kubeconfig (KUBECONFIG)
    <state>/<namespace>/<pod>/serviceaccount/   token, ca.crt, namespace (CAPSTAN_SERVICEACCOUNT_DIR)
    <state>/<namespace>/<pod>/volumes/<name>/   emptyDir / secret / configMap / projected volumes
    <state>/<namespace>/.claims/<claim>/        a persistentVolumeClaim volume: kept across Pods
                                                (a new claim of the same name gets a fresh one)

CLI: ``python -m devstack.podrunner [--kubeconfig PATH] [--state-dir DIR] [--namespace NS]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("devstack.podrunner")

NODE_NAME = "devstack"
HOST_IP = "127.0.0.1"
#: Annotation a runner puts on the Pods it runs, so two live runners never run the same Pod.
RUNNER_ANNOTATION = "devstack.capstan.dev/pod-runner"
#: (connect, read) timeout of every ordinary API call.
API_TIMEOUT = (5, 20)
#: Server-side timeout of one watch request; the client read timeout is a bit longer.
WATCH_SECONDS = 30
TOKEN_SECONDS = 3600
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 10.0
#: A container that ran at least this long restarts without back-off.
BACKOFF_RESET_AFTER = 30.0
#: Retry interval for containers waiting on a missing Secret/ConfigMap or volume.
CONFIG_RETRY = 1.0
#: How often Terminating namespaces are looked for (their Pods are deleted, see PodRunner._sweep).
SWEEP_INTERVAL = 2.0
SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
_PYTHON_RE = re.compile(r"^python(3(\.\d+)?)?$")
_ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def default_state_dir() -> Path:
    base = os.environ.get("CAPSTAN_STACK_DIR") or os.path.join(Path.home(), ".cache", "capstan", "stack")
    return Path(base) / "pods"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# Pure parts: $(VAR) expansion, downward API, env resolution, path rewriting, exit codes
# --------------------------------------------------------------------------------------------


class ContainerConfigError(Exception):
    """The container cannot start yet (the kubelet's CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"


def expand(text: str, *mappings: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (k8s.io/kubernetes third_party/forked/golang/expansion).

    ``$(VAR)`` is replaced by the first mapping that defines VAR, an undefined reference is
    left as is, ``$$`` is an escaped ``$`` (so ``$$(VAR)`` yields the literal ``$(VAR)``),
    and any other ``$`` is kept.
    """
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            advance = 1
            if nxt == "$":
                out.append("$")
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                else:
                    name = text[cursor + 2 : close]
                    for m in mappings:
                        if name in m:
                            out.append(m[name])
                            break
                    else:
                        out.append(f"$({name})")
                    advance = close - cursor
            else:
                out.append("$" + nxt)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


_SUBSCRIPT_RE = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


def field_ref_value(pod: Mapping[str, Any], field_path: str, *, pod_ip: str = "", host_ip: str = HOST_IP) -> str:
    """The value of a downward-API ``fieldRef`` as the kubelet gives it to a container."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    m = _SUBSCRIPT_RE.match(field_path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: meta.get("name", ""),
        "metadata.namespace": lambda: meta.get("namespace", ""),
        "metadata.uid": lambda: meta.get("uid", ""),
        "spec.nodeName": lambda: spec.get("nodeName") or NODE_NAME,
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName", ""),
        "status.podIP": lambda: pod_ip,
        "status.podIPs": lambda: pod_ip,
        "status.hostIP": lambda: host_ip,
        "status.hostIPs": lambda: host_ip,
    }
    if field_path in simple:
        return str(simple[field_path]() or "")
    if field_path in ("metadata.labels", "metadata.annotations"):
        items = (meta.get(field_path.split(".")[1]) or {}).items()
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items))
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {field_path!r}")


_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_quantity(q: str | int | float) -> float:
    """A Kubernetes resource quantity (``500m``, ``2Gi``, ``1e3``) as a float."""
    m = _QUANTITY_RE.match(str(q).strip())
    if not m or m.group(2) not in _SUFFIXES:
        raise ValueError(f"invalid quantity {q!r}")
    return float(m.group(1)) * _SUFFIXES[m.group(2)]


def resource_field_value(pod: Mapping[str, Any], container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """A ``resourceFieldRef``: the container's request/limit, else the node's capacity."""
    name = ref.get("containerName") or container.get("name")
    spec = pod.get("spec") or {}
    target = next((c for c in spec.get("containers", []) if c.get("name") == name), container)
    kind, _, res = str(ref.get("resource", "")).partition(".")
    resources = (target.get("resources") or {}).get(kind) or {}
    if res in resources:
        value = parse_quantity(resources[res])
    elif res == "cpu":
        value = float(os.cpu_count() or 1)
    elif res == "memory":
        value = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    else:
        value = 0.0
    divisor = parse_quantity(ref.get("divisor") or "1")
    if res == "cpu":  # the kubelet rounds CPU up to whole divisor units, at least 1
        return str(max(1, math.ceil(round(value * 1000) / round(divisor * 1000))))
    return str(math.ceil(value / divisor))


Lookup = Callable[[str, str], "dict[str, str] | None"]
"""(namespace, name) -> the object's string data, or None when the object does not exist."""


def resolve_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    get_secret: Lookup,
    get_configmap: Lookup,
    pod_ip: str = "",
    host_ip: str = HOST_IP,
) -> dict[str, str]:
    """The environment a container declares (``envFrom`` then ``env``), resolved as the kubelet does.

    ``envFrom`` entries come first (later ones win; keys that are not valid variable names
    are skipped), then ``env`` entries in order; each ``env`` value has ``$(VAR)``
    references expanded against the variables defined before it. A missing non-optional
    Secret/ConfigMap or key raises :class:`ContainerConfigError` with the kubelet's message.
    """
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = {}

    def fetch(kind: str, lookup: Lookup, name: str, optional: bool) -> dict[str, str] | None:
        data = lookup(ns, name)
        if data is None and not optional:
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        return data

    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for key, kind, lookup in (("configMapRef", "ConfigMap", get_configmap), ("secretRef", "Secret", get_secret)):
            ref = src.get(key)
            if ref is None:
                continue
            data = fetch(kind, lookup, ref.get("name", ""), bool(ref.get("optional")))
            for k, v in (data or {}).items():
                if _ENV_NAME_RE.match(prefix + k):
                    env[prefix + k] = v

    for var in container.get("env") or []:
        name = var["name"]
        if not var.get("valueFrom"):
            env[name] = expand(str(var.get("value") or ""), env)
            continue
        vf = var["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_ref_value(pod, vf["fieldRef"]["fieldPath"], pod_ip=pod_ip, host_ip=host_ip)
        elif "resourceFieldRef" in vf:
            env[name] = resource_field_value(pod, container, vf["resourceFieldRef"])
        elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
            key_ref = "secretKeyRef" if "secretKeyRef" in vf else "configMapKeyRef"
            kind = "Secret" if key_ref == "secretKeyRef" else "ConfigMap"
            lookup = get_secret if kind == "Secret" else get_configmap
            ref = vf[key_ref]
            optional = bool(ref.get("optional"))
            data = fetch(kind, lookup, ref.get("name", ""), optional)
            if data is None:
                continue
            if ref["key"] not in data:
                if optional:
                    continue
                raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref.get('name', '')}")
            env[name] = data[ref["key"]]
        else:
            raise ContainerConfigError(f"unsupported valueFrom for env {name}: {sorted(vf)}")
    return env


class PathRewriter:
    """Maps in-container mount paths onto local directories.

    Local processes cannot see mounts, so a string that starts with a mount path (or a
    ``--flag=`` followed by one) is rewritten to the local directory that backs the mount.
    """

    _FLAG_RE = re.compile(r"^(-{1,2}[\w.-]+=)(/.*)$")

    def __init__(self, mounts: Mapping[str, str | os.PathLike[str]] | None = None):
        self.mounts = sorted(
            ((p.rstrip("/") or "/", str(d)) for p, d in (mounts or {}).items()), key=lambda m: -len(m[0])
        )

    def _path(self, value: str) -> str | None:
        for mount, local in self.mounts:
            if value == mount or value.startswith(mount + "/"):
                return local + value[len(mount) :]
        return None

    def __call__(self, value: str) -> str:
        rewritten = self._path(value)
        if rewritten is not None:
            return rewritten
        m = self._FLAG_RE.match(value)
        if m:
            rewritten = self._path(m.group(2))
            if rewritten is not None:
                return m.group(1) + rewritten
        return value


def build_argv(container: Mapping[str, Any], env: Mapping[str, str], rewrite: Callable[[str], str] = str) -> list[str]:
    """``command + args`` with ``$(VAR)`` expanded and mount paths rewritten.

    ``python``/``python3`` (also ``/usr/bin/python3`` and the like) become the runner's own
    interpreter so that the project's virtualenv runs the project's code.
    """
    command = list(container.get("command") or [])
    if not command:
        raise ContainerConfigError(
            "container has no command: the pod runner cannot use image entrypoints, set `command`"
        )
    argv = [rewrite(expand(str(a), env)) for a in command + list(container.get("args") or [])]
    if _PYTHON_RE.match(os.path.basename(argv[0])):
        argv[0] = sys.executable
    return argv


def exit_code_of(returncode: int) -> int:
    """Popen's returncode (negative for a signal) as a container exit code (128+signal)."""
    return 128 - returncode if returncode < 0 else returncode


def terminated_state(returncode: int, started_at: str | None, finished_at: str, container_id: str = "") -> dict:
    code = exit_code_of(returncode)
    state: dict[str, Any] = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": started_at,
        "finishedAt": finished_at,
    }
    if returncode < 0:
        state["signal"] = -returncode
    if container_id:
        state["containerID"] = container_id
    return state


# --------------------------------------------------------------------------------------------
# Helpers for tests: find and kill container processes through the state directory
# --------------------------------------------------------------------------------------------


def pod_dir(namespace: str, pod: str, state_dir: str | os.PathLike[str] | None = None) -> Path:
    return Path(state_dir or default_state_dir()) / namespace / pod


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not running.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def container_pid(
    namespace: str, pod: str, container: str | None = None, state_dir: str | os.PathLike[str] | None = None
) -> int | None:
    """The pid of a running container process (None if it is not running).

    With ``container=None`` the Pod must have exactly one running container.
    """
    d = pod_dir(namespace, pod, state_dir)
    if container is None:
        pidfiles = sorted(d.glob("*.pid"))
        if len(pidfiles) > 1:
            raise ValueError(f"pod {namespace}/{pod} runs several containers, name one: {[p.stem for p in pidfiles]}")
        if not pidfiles:
            return None
        path = pidfiles[0]
    else:
        path = d / f"{container}.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def kill_container(
    namespace: str,
    pod: str,
    container: str | None = None,
    sig: int = signal.SIGKILL,
    state_dir: str | os.PathLike[str] | None = None,
) -> int:
    """Send ``sig`` to a running container's main process; returns its pid."""
    pid = container_pid(namespace, pod, container, state_dir)
    if pid is None:
        raise ProcessLookupError(f"no running container {container or '(any)'} in pod {namespace}/{pod}")
    os.kill(pid, sig)
    return pid


def _proc_starttime(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


# Runner identities alive in this process (several runners may live in one test process).
_LIVE_RUNNERS: set[str] = set()


def _runner_alive(runner_id: str) -> bool:
    """Whether the runner that wrote ``runner_id`` (host/pid/starttime/nonce) still runs."""
    try:
        host, pid_s, start, _nonce = runner_id.split("/")
        pid = int(pid_s)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # cannot tell; assume another machine's runner is fine
    if pid == os.getpid():
        return runner_id in _LIVE_RUNNERS
    return _pid_alive(pid) and _proc_starttime(pid) == start


def _killpg(pgid: int, sig: int) -> None:
    if pgid <= 1 or pgid == os.getpgrp():
        return  # never signal our own group (or everyone)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


def _status_code(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def _short(exc: BaseException) -> str:
    """An API error as one line: status code and the Status message."""
    body = getattr(exc, "body", None)
    if body:
        try:
            return f"({exc.status}) {json.loads(body).get('message', '')}"  # type: ignore[attr-defined]
        except (ValueError, AttributeError):
            pass
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass
class _Container:
    spec: dict
    init: bool = False
    proc: subprocess.Popen | None = None
    pgid: int = 0
    started_at: str | None = None
    started_mono: float = 0.0
    restart_count: int = 0
    started_once: bool = False
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    next_start: float = 0.0
    backoff: float = BACKOFF_INITIAL
    done: bool = False  # will not run (again)
    exit_code: int | None = None

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.proc is not None


class _PodWorker(threading.Thread):
    """Owns one Pod: binds it, runs its containers, reports status, handles its deletion."""

    def __init__(self, runner: PodRunner, pod: dict):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.runner = runner
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gone = False
        self.ip = ""
        self.dir = runner.state_dir / self.ns / self.pod_name
        self.containers: list[_Container] = []
        self.init_containers: list[_Container] = []
        self.start_time = ""
        self.token = ""
        self.token_refresh_at = 0.0
        self.mounts: dict[str, dict[str, Path]] = {}  # container -> mountPath -> local dir
        self.volume_dirs: dict[str, Path] = {}
        self.volumes_ready = False
        self.volume_error = ""
        self.automount: bool | None = None
        self._conditions: dict[str, tuple[str, str, str]] = {}
        self._last_status: dict | None = None
        self.status_extra: dict[str, str] = {}
        self._warned: set[str] = set()
        self.admitted = False

    def _warn(self, msg: str, *args: object) -> None:
        """Log a retry warning once; repeats of the same message go to debug."""
        text = f"pod {self.ns}/{self.pod_name}: " + (msg % args if args else msg)
        if text in self._warned:
            log.debug("%s", text)
        else:
            self._warned.add(text)
            log.warning("%s", text)

    # -- fed by the watcher ------------------------------------------------------------------
    def update(self, pod: dict) -> None:
        with self._lock:
            self._pod = pod
        self._wake.set()

    def gone(self) -> None:
        self._gone = True
        self._wake.set()

    @property
    def pod(self) -> dict:
        with self._lock:
            return self._pod

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.admitted = self._admit()
            if self.admitted:
                self._run()
        except Exception:
            log.exception("pod %s/%s: worker failed", self.ns, self.pod_name)
        finally:
            self._kill_all(grace=self.runner.stop_grace if self._stopping() else 0)
            self.runner._worker_done(self)

    def _stopping(self) -> bool:
        return self.runner._stop.is_set()

    def _admit(self) -> bool:
        """Bind and claim the Pod; False when it is not ours to run."""
        r = self.runner
        while not self._stopping() and not self._gone:
            try:
                pod = r._get_pod(self.ns, self.pod_name)
            except Exception as exc:
                if _status_code(exc) == 404:
                    return False
                self._warn("get failed: %s", exc)
                self._wake.wait(1)
                continue
            meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
            if meta["uid"] != self.uid:
                return False
            node = spec.get("nodeName") or ""
            if node and node != r.node_name:
                return False
            if status.get("phase") in ("Succeeded", "Failed"):
                if meta.get("deletionTimestamp"):
                    r._delete_now(self.ns, self.pod_name, self.uid)
                return False
            owner = (meta.get("annotations") or {}).get(RUNNER_ANNOTATION)
            if owner and owner != r.runner_id and _runner_alive(owner):
                return False
            self._kill_orphans()
            if meta.get("deletionTimestamp"):
                # Nothing of ours runs; finish the deletion the kubelet way.
                r._delete_now(self.ns, self.pod_name, self.uid)
                return False
            if status.get("phase") == "Running":
                # Bound here and running, but no process of ours: the node "rebooted".
                self._mark_node_lost(pod)
                return False
            if not node:
                try:
                    r._bind(self.ns, self.pod_name, self.uid)
                except Exception as exc:
                    if _status_code(exc) not in (409, 404):
                        self._warn("bind failed: %s", _short(exc))
                        self._wake.wait(1)
                continue  # bound (by us or someone else): look again, then claim
            # Claim it with an optimistic-concurrency patch, so that only one live runner runs it.
            patch = {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "annotations": {RUNNER_ANNOTATION: r.runner_id},
                }
            }
            try:
                claimed = r._patch_pod(self.ns, self.pod_name, patch)
            except Exception as exc:
                if _status_code(exc) == 404:
                    return False
                if _status_code(exc) != 409:
                    self._warn("claim failed: %s", _short(exc))
                    self._wake.wait(1)
                continue
            self.update(claimed)
            return True
        return False

    def _mark_node_lost(self, pod: dict) -> None:
        now = _now()
        statuses = []
        for c in pod["spec"].get("containers", []):
            prev = next(
                (s for s in (pod.get("status") or {}).get("containerStatuses") or [] if s.get("name") == c["name"]), {}
            )
            statuses.append(
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": prev.get("restartCount", 0),
                    "lastState": prev.get("lastState") or {},
                    "state": {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "ContainerStatusUnknown",
                            "message": "The container could not be located when the pod was terminated: "
                            "the pod runner restarted (node lost)",
                            "startedAt": ((prev.get("state") or {}).get("running") or {}).get("startedAt"),
                            "finishedAt": now,
                        }
                    },
                }
            )
        old_conditions = (pod.get("status") or {}).get("conditions") or []
        conditions = [c for c in old_conditions if c.get("type") not in ("Ready", "ContainersReady")]
        conditions += [
            {"type": "Ready", "status": "False", "reason": "PodFailed", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "PodFailed", "lastTransitionTime": now},
        ]
        status = {
            "phase": "Failed",
            "reason": "NodeLost",
            "message": f"Node {self.runner.node_name} lost its processes: the pod runner restarted",
            "conditions": conditions,
            "containerStatuses": statuses,
        }
        log.info("pod %s/%s: running but not ours any more: marking Failed (NodeLost)", self.ns, self.pod_name)
        with contextlib.suppress(Exception):
            self.runner._patch_status(self.ns, self.pod_name, status)

    def _kill_orphans(self) -> None:
        """Kill processes a dead runner left behind for this Pod (recorded in hidden .proc files)."""
        if not self.dir.is_dir():
            return
        for info in self.dir.glob(".*.proc"):
            try:
                data = json.loads(info.read_text())
                if data.get("uid") == self.uid and _proc_starttime(int(data["pid"])) == data.get("start"):
                    log.info("pod %s/%s: killing orphan process %s", self.ns, self.pod_name, data["pid"])
                    _killpg(int(data["pgid"]), signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                pass
            with contextlib.suppress(OSError):
                info.unlink()

    def _prepare_dir(self) -> None:
        uid_file = self.dir / ".uid"
        if self.dir.exists():
            try:
                same = uid_file.read_text().strip() == self.uid
            except OSError:
                same = False
            if not same:
                shutil.rmtree(self.dir, ignore_errors=True)
        for sub in ("volumes", "serviceaccount", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        uid_file.write_text(self.uid)
        for pidfile in self.dir.glob("*.pid"):
            with contextlib.suppress(OSError):
                pidfile.unlink()

    def _run(self) -> None:
        r = self.runner
        pod = self.pod
        spec = pod["spec"]
        self._prepare_dir()
        self.ip = r._alloc_ip(self.uid, (pod.get("status") or {}).get("podIP"))
        self.start_time = (pod.get("status") or {}).get("startTime") or _now()
        self.init_containers = [_Container(spec=c, init=True) for c in spec.get("initContainers") or []]
        self.containers = [_Container(spec=c) for c in spec.get("containers") or []]
        for c in self.init_containers + self.containers:
            initializing = not c.init and self.init_containers
            c.state = {"waiting": {"reason": "PodInitializing" if initializing else "ContainerCreating"}}
        log.info("pod %s/%s: running on %s with IP %s", self.ns, self.pod_name, r.node_name, self.ip)
        self._report()

        while True:
            if self._stopping():
                return  # the runner stops: _kill_all in run()'s finally
            if self._gone:
                log.info("pod %s/%s: object gone, killing its processes", self.ns, self.pod_name)
                self._kill_all(grace=0)
                return
            pod = self.pod
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate_gracefully()
                return
            self._step()
            phase = self._report()
            if phase in ("Succeeded", "Failed"):
                log.info("pod %s/%s: %s", self.ns, self.pod_name, phase)
                return
            self._wake.wait(0.2)
            self._wake.clear()

    # -- one reconcile step ------------------------------------------------------------------
    def _step(self) -> None:
        now = time.monotonic()
        if self._token_wanted() and (not self.token or now >= self.token_refresh_at):
            self._refresh_token()
            if not self.token:
                return
        if not self.volumes_ready:
            self._setup_volumes()
            if not self.volumes_ready:
                return
        if self._stopping():
            return
        policy = self.pod["spec"].get("restartPolicy") or "Always"
        # Init containers run one after another; the app containers start when all are done.
        for c in self.init_containers:
            self._poll(c, "OnFailure" if policy == "Always" else policy)
            if c.done and c.exit_code == 0:
                continue
            if c.done:  # failed for good
                return
            if not c.running and now >= c.next_start:
                self._start(c)
            return
        for c in self.containers:
            self._poll(c, policy)
            if not c.running and not c.done and now >= c.next_start:
                self._start(c)

    def _poll(self, c: _Container, policy: str) -> None:
        if c.proc is None:
            return
        rc = c.proc.poll()
        if rc is None:
            return
        self._container_exited(c, rc, policy)

    def _container_exited(self, c: _Container, rc: int, policy: str, message: str = "", reason: str = "") -> None:
        _killpg(c.pgid, signal.SIGKILL)  # like the runtime tearing down the container's cgroup
        c.pgid = 0
        with contextlib.suppress(OSError):
            (self.dir / f"{c.name}.pid").unlink()
        with contextlib.suppress(OSError):
            (self.dir / f".{c.name}.proc").unlink()
        pid = c.proc.pid if c.proc else 0
        c.proc = None
        c.exit_code = exit_code_of(rc)
        term = terminated_state(rc, c.started_at, _now(), self._container_id(c, pid))
        if message:
            term["message"] = message
        if reason:
            term["reason"] = reason
        log.info("pod %s/%s: container %s exited with %s", self.ns, self.pod_name, c.name, c.exit_code)
        restart = policy == "Always" or (policy == "OnFailure" and c.exit_code != 0)
        if restart and not self._stopping():
            ran = time.monotonic() - c.started_mono
            if ran >= BACKOFF_RESET_AFTER:
                c.backoff = BACKOFF_INITIAL
            delay = c.backoff
            c.backoff = min(c.backoff * 2, BACKOFF_MAX)
            c.next_start = time.monotonic() + delay
            c.last_state = {"terminated": term}
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:g}s restarting failed container={c.name} "
                    f"pod={self.pod_name}_{self.ns}({self.uid})",
                }
            }
        else:
            c.done = True
            c.state = {"terminated": term}

    def _container_id(self, c: _Container, pid: int) -> str:
        return f"devstack://{self.uid}/{c.name}/{c.restart_count}/{pid}"

    def _start(self, c: _Container) -> None:
        r = self.runner
        pod = self.pod
        try:
            declared = resolve_env(
                pod, c.spec, get_secret=r._get_secret, get_configmap=r._get_configmap, pod_ip=self.ip
            )
            rewrite = PathRewriter(self.mounts.get(c.name, {}))
            argv = build_argv(c.spec, declared, rewrite)
        except ContainerConfigError as exc:
            c.state = {"waiting": {"reason": ContainerConfigError.reason, "message": str(exc)}}
            c.next_start = time.monotonic() + CONFIG_RETRY
            return
        except Exception as exc:  # API trouble: retry like the kubelet
            c.state = {"waiting": {"reason": ContainerConfigError.reason, "message": f"{exc}"}}
            c.next_start = time.monotonic() + CONFIG_RETRY
            return
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        env["HOSTNAME"] = self.pod_name
        tmpdir = self._tmpdir_for(c)
        env["TMPDIR"] = str(tmpdir)
        if self.token:
            env["KUBECONFIG"] = str(self.dir / "kubeconfig")
            env["CAPSTAN_SERVICEACCOUNT_DIR"] = str(self.dir / "serviceaccount")
        env.update({k: rewrite(v) for k, v in declared.items()})
        cwd = os.getcwd()
        if c.spec.get("workingDir"):
            wd = rewrite(c.spec["workingDir"])
            if os.path.isdir(wd):
                cwd = wd
        restarting = c.started_once
        logpath = self.dir / f"{c.name}.log"
        try:
            with open(logpath, "ab") as logf:
                if restarting:
                    logf.write(f"--- podrunner: restarting container {c.name} ---\n".encode())
                    logf.flush()
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            # Like a runtime StartError: the container terminates at once with 128.
            if restarting:
                c.restart_count += 1
            c.started_once = True
            c.started_at = _now()
            c.started_mono = time.monotonic()
            c.proc = None
            c.pgid = 0
            policy = self.pod["spec"].get("restartPolicy") or "Always"
            if c.init and policy == "Always":
                policy = "OnFailure"
            self._container_exited(c, 128, policy, str(exc), reason="StartError")
            return
        if restarting:
            c.restart_count += 1
        c.started_once = True
        c.proc = proc
        c.pgid = proc.pid
        c.started_at = _now()
        c.started_mono = time.monotonic()
        c.state = {"running": {"startedAt": c.started_at}}
        (self.dir / f"{c.name}.pid").write_text(f"{proc.pid}\n")
        (self.dir / f".{c.name}.proc").write_text(
            json.dumps({"uid": self.uid, "pid": proc.pid, "pgid": proc.pid, "start": _proc_starttime(proc.pid),
                        "runner": r.runner_id})
        )
        log.info("pod %s/%s: started container %s (pid %s): %s", self.ns, self.pod_name, c.name, proc.pid, argv)

    def _tmpdir_for(self, c: _Container) -> Path:
        for m in c.spec.get("volumeMounts") or []:
            vol = self._volume_spec(m.get("name"))
            if vol is not None and "emptyDir" in vol:
                local = self.mounts.get(c.name, {}).get(m["mountPath"])
                if local is not None:
                    return local
        return self.dir / "tmp"

    # -- volumes and identity ----------------------------------------------------------------
    def _volume_spec(self, name: str | None) -> dict | None:
        return next((v for v in self.pod["spec"].get("volumes") or [] if v.get("name") == name), None)

    def _setup_volumes(self) -> None:
        """Materialise the Pod's volumes; missing non-optional sources keep the Pod waiting."""
        r = self.runner
        pod = self.pod
        try:
            for vol in pod["spec"].get("volumes") or []:
                d = self.dir / "volumes" / vol["name"]
                d.mkdir(parents=True, exist_ok=True)
                self.volume_dirs[vol["name"]] = d
                if "emptyDir" in vol:
                    continue
                if "persistentVolumeClaim" in vol:
                    self.volume_dirs[vol["name"]] = self._claim_dir(vol["persistentVolumeClaim"].get("claimName", ""))
                    continue
                if "secret" in vol:
                    src = vol["secret"]
                    self._write_keys(d, "Secret", src.get("secretName", ""), r._get_secret, src)
                elif "configMap" in vol:
                    src = vol["configMap"]
                    self._write_keys(d, "ConfigMap", src.get("name", ""), r._get_configmap, src)
                elif "downwardAPI" in vol:
                    self._write_downward(d, vol["downwardAPI"].get("items") or [])
                elif "projected" in vol:
                    self._write_projected(d, vol["projected"].get("sources") or [])
                else:
                    log.warning("pod %s/%s: volume %s of an unsupported kind; an empty dir stands in",
                                self.ns, self.pod_name, vol["name"])
        except ContainerConfigError as exc:
            self.volume_error = str(exc)
            for c in self.init_containers + self.containers:
                c.state = {"waiting": {"reason": "ContainerCreating", "message": f"MountVolume.SetUp failed: {exc}"}}
            self._wake.wait(CONFIG_RETRY)
            return
        for c in self.init_containers + self.containers:
            mounts: dict[str, Path] = {}
            for m in c.spec.get("volumeMounts") or []:
                d = self.volume_dirs.get(m.get("name"))
                if d is None:
                    continue
                local = d / m["subPath"] if m.get("subPath") else d
                if m.get("subPath") and not local.exists() and "emptyDir" in (self._volume_spec(m["name"]) or {}):
                    local.mkdir(parents=True, exist_ok=True)
                mounts[m["mountPath"]] = local
            if self._token_wanted() and SA_MOUNT_PATH not in mounts:
                mounts[SA_MOUNT_PATH] = self.dir / "serviceaccount"
            self.mounts[c.name] = mounts
        self.volume_error = ""
        self.volumes_ready = True

    def _claim_dir(self, claim: str) -> Path:
        """The claim's directory, shared by every Pod that mounts it (a spool that outlives attempts).

        Like a kubelet waiting for its volume, a Pod whose claim does not exist waits."""
        try:
            pvc = self.runner._call("read_namespaced_persistent_volume_claim", claim, self.ns)
        except Exception as exc:
            if _status_code(exc) == 404:
                raise ContainerConfigError(f'persistentvolumeclaim "{claim}" not found') from None
            raise ContainerConfigError(f'persistentvolumeclaim "{claim}": {_short(exc)}') from None
        d = self.runner.state_dir / self.ns / ".claims" / claim
        uid_file = d / ".claim-uid"
        uid = pvc["metadata"]["uid"]
        with contextlib.suppress(OSError):
            if uid_file.read_text().strip() != uid:
                shutil.rmtree(d, ignore_errors=True)  # a new claim of an old name starts empty
        d.mkdir(parents=True, exist_ok=True)
        uid_file.write_text(uid)
        return d

    def _write_keys(self, d: Path, kind: str, name: str, lookup: Lookup, src: dict) -> None:
        data = lookup(self.ns, name)
        if data is None and name == "kube-root-ca.crt" and kind == "ConfigMap":
            data = {"ca.crt": self.runner.ca_pem}  # no root-ca publisher controller runs here
        if data is None:
            if src.get("optional"):
                return
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        items = src.get("items")
        pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
        for key, path in pairs:
            if key not in data:
                if src.get("optional"):
                    continue
                raise ContainerConfigError(f"couldn't find key {key} in {kind} {self.ns}/{name}")
            target = d / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[key])

    def _write_downward(self, d: Path, items: list[dict]) -> None:
        for item in items:
            target = d / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if "fieldRef" in item:
                value = field_ref_value(self.pod, item["fieldRef"]["fieldPath"], pod_ip=self.ip)
            elif "resourceFieldRef" in item:
                ref = item["resourceFieldRef"]
                container = next(
                    (c for c in self.pod["spec"]["containers"] if c["name"] == ref.get("containerName")), {}
                )
                value = resource_field_value(self.pod, container, ref)
            else:
                continue
            target.write_text(value)

    def _write_projected(self, d: Path, sources: list[dict]) -> None:
        r = self.runner
        for src in sources:
            if "secret" in src:
                self._write_keys(d, "Secret", src["secret"].get("name", ""), r._get_secret, src["secret"])
            elif "configMap" in src:
                self._write_keys(d, "ConfigMap", src["configMap"].get("name", ""), r._get_configmap, src["configMap"])
            elif "downwardAPI" in src:
                self._write_downward(d, src["downwardAPI"].get("items") or [])
            elif "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                token = self.token
                if sat.get("audience") or not token:
                    token = r._request_token(
                        self.pod, audiences=[sat["audience"]] if sat.get("audience") else None,
                        seconds=int(sat.get("expirationSeconds") or TOKEN_SECONDS),
                    )
                (d / sat.get("path", "token")).write_text(token)

    def _token_wanted(self) -> bool:
        if self.automount is None:
            spec = self.pod["spec"]
            auto = spec.get("automountServiceAccountToken")
            if auto is None:
                auto = self.runner._sa_automount(self.ns, spec.get("serviceAccountName") or "default")
            self.automount = bool(auto)
        return self.automount

    def _refresh_token(self) -> None:
        r = self.runner
        try:
            token = r._request_token(self.pod)
        except Exception as exc:
            self._warn("token request failed: %s", _short(exc))
            for c in self.init_containers + self.containers:
                if not c.running and not c.started_once:
                    c.state = {"waiting": {"reason": "ContainerCreating",
                                           "message": f"serviceaccount token request failed: {_short(exc)}"}}
            self._wake.wait(CONFIG_RETRY)
            return
        self.token = token
        self.token_refresh_at = time.monotonic() + 0.8 * TOKEN_SECONDS
        sa_dir = self.dir / "serviceaccount"
        sa_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(sa_dir / "token", token)
        _atomic_write(sa_dir / "ca.crt", r.ca_pem)
        _atomic_write(sa_dir / "namespace", self.ns)
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        _atomic_write(self.dir / "kubeconfig", r.kubeconfig_for(self.ns, sa, token))

    # -- status ------------------------------------------------------------------------------
    def _condition(self, ctype: str, status: str, reason: str = "") -> dict:
        prev = self._conditions.get(ctype)
        if prev is None or prev[0] != status or prev[1] != reason:
            prev = (status, reason, _now())
            self._conditions[ctype] = prev
        cond = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": prev[2]}
        if reason:
            cond["reason"] = reason
        return cond

    def _container_status(self, c: _Container) -> dict:
        state = c.state
        pid = c.proc.pid if c.proc else 0
        status: dict[str, Any] = {
            "name": c.name,
            "image": c.spec.get("image", ""),
            "imageID": "",
            "ready": c.running,
            "started": c.running,
            "restartCount": c.restart_count,
            "state": state,
            "lastState": c.last_state,
        }
        if c.running:
            status["containerID"] = self._container_id(c, pid)
        elif "terminated" in state and state["terminated"].get("containerID"):
            status["containerID"] = state["terminated"]["containerID"]
        return status

    def _phase(self) -> str:
        if any(c.done and c.exit_code != 0 for c in self.init_containers):
            return "Failed"
        if not all(c.done for c in self.init_containers):
            return "Pending"
        if all(c.done for c in self.containers):
            return "Succeeded" if all(c.exit_code == 0 for c in self.containers) else "Failed"
        if any(c.running or c.started_once for c in self.containers):
            return "Running"
        return "Pending"

    def _build_status(self, phase: str) -> dict:
        init_done = all(c.done and c.exit_code == 0 for c in self.init_containers)
        all_ready = bool(self.containers) and all(c.running for c in self.containers)
        terminal = phase in ("Succeeded", "Failed")
        ready_reason = "PodCompleted" if terminal else ("" if all_ready else "ContainersNotReady")
        conditions = [
            self._condition("PodReadyToStartContainers", "True" if self.volumes_ready else "False"),
            self._condition("Initialized", "True" if init_done else "False",
                            "" if init_done else "ContainersNotInitialized"),
            self._condition("Ready", "True" if all_ready and not terminal else "False", ready_reason),
            self._condition("ContainersReady", "True" if all_ready and not terminal else "False", ready_reason),
            self._condition("PodScheduled", "True"),
        ]
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "containerStatuses": [self._container_status(c) for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [self._container_status(c) for c in self.init_containers]
        status.update(self.status_extra)
        return status

    def _report(self, phase: str | None = None) -> str:
        phase = phase or self._phase()
        if self._stopping():
            return "Unknown"  # a stopping runner reports nothing: its successor sorts the Pods out
        status = self._build_status(phase)
        if status != self._last_status:
            try:
                self.runner._patch_status(self.ns, self.pod_name, status)
                self._last_status = status
            except Exception as exc:
                if _status_code(exc) == 404:
                    self._gone = True
                else:
                    self._warn("status update failed: %s", _short(exc))
                return "Unknown"  # not reported yet: keep going
        return phase

    # -- termination -------------------------------------------------------------------------
    def _grace_seconds(self) -> float:
        pod = self.pod
        g = pod["metadata"].get("deletionGracePeriodSeconds")
        if g is None:
            g = pod["spec"].get("terminationGracePeriodSeconds")
        return float(30 if g is None else g)

    def _terminate_gracefully(self) -> None:
        t0 = time.monotonic()
        running = [c for c in self.init_containers + self.containers if c.running]
        log.info("pod %s/%s: deleting: SIGTERM to %d container(s), grace %gs",
                 self.ns, self.pod_name, len(running), self._grace_seconds())
        for c in running:
            _killpg(c.pgid, signal.SIGTERM)
        while any(c.proc.poll() is None for c in running if c.proc) and not self._gone:
            if time.monotonic() - t0 >= self._grace_seconds() or self._stopping():
                break
            self._wake.wait(0.1)
            self._wake.clear()
        for c in running:
            if c.proc and c.proc.poll() is None:
                _killpg(c.pgid, signal.SIGKILL)
        for c in running:
            if c.proc:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(5)
                self._container_exited(c, c.proc.returncode if c.proc.returncode is not None else -9, "Never")
        for c in self.init_containers + self.containers:
            if not c.done and "terminated" not in c.state:
                c.done = True
                c.exit_code = c.exit_code or 0
        if self._gone:
            return
        codes = [c.exit_code for c in self.containers if c.started_once]
        phase = "Failed" if any(code != 0 for code in codes) or not codes else "Succeeded"
        self._report(phase)
        self.runner._delete_now(self.ns, self.pod_name, self.uid)

    def _kill_all(self, grace: float) -> None:
        running = [c for c in self.init_containers + self.containers if c.proc is not None]
        if not running:
            return
        if grace > 0:
            for c in running:
                _killpg(c.pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(c.proc.poll() is None for c in running if c.proc):
                time.sleep(0.05)
        for c in running:
            _killpg(c.pgid, signal.SIGKILL)
            if c.proc:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(5)
            with contextlib.suppress(OSError):
                (self.dir / f"{c.name}.pid").unlink()
            with contextlib.suppress(OSError):
                (self.dir / f".{c.name}.proc").unlink()
            c.proc = None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class PodRunner:
    """The kubelet stand-in. ``start()``/``stop()`` run it in background threads; also a context manager."""

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        namespace: str | None = None,
        node_name: str = NODE_NAME,
        stop_grace: float = 5.0,
        namespace_prefix: str = "",
    ):
        self.kubeconfig = str(kubeconfig or os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
        self.state_dir = Path(state_dir or default_state_dir())
        self.namespace = namespace
        # Several test sessions (pytest-xdist workers, engineers side by side) share one API server and
        # node name: each runner runs only the Pods of its own namespaces, or one that stops would take
        # another session's Pods down with it.
        self.namespace_prefix = namespace_prefix
        self.node_name = node_name
        self.stop_grace = stop_grace
        self.runner_id = f"{socket.gethostname()}/{os.getpid()}/{_proc_starttime(os.getpid())}/{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, _PodWorker] = {}
        self._finished: dict[str, float] = {}  # uid -> when its worker ended
        self._ips: dict[str, str] = {}  # uid -> ip
        self._pods: dict[str, dict] = {}  # uid -> latest Pod seen
        self._watch_thread: threading.Thread | None = None
        self._sweep_thread: threading.Thread | None = None
        self._swept: set[str] = set()
        self._resp: Any = None
        self._api: Any = None
        self.host = ""
        self.ca_pem = ""
        self.insecure = False
        self.ready = threading.Event()

    # -- API plumbing ------------------------------------------------------------------------
    def _connect(self) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=self.kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 64
        cfg.retries = 1
        self.host = cfg.host
        if cfg.ssl_ca_cert:
            self.ca_pem = Path(cfg.ssl_ca_cert).read_text()
        self.insecure = not cfg.verify_ssl
        self._api = client.CoreV1Api(client.ApiClient(cfg))

    @staticmethod
    def _json(resp: Any) -> dict:
        try:
            return json.loads(resp.data or b"{}")
        finally:
            with contextlib.suppress(Exception):
                resp.release_conn()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> dict:
        fn = getattr(self._api, method)
        return self._json(fn(*args, _preload_content=False, _request_timeout=API_TIMEOUT, **kwargs))

    def _get_pod(self, ns: str, name: str) -> dict:
        return self._call("read_namespaced_pod", name, ns)

    def _patch_pod(self, ns: str, name: str, body: dict) -> dict:
        return self._call("patch_namespaced_pod", name, ns, body, _content_type="application/merge-patch+json")

    def _patch_status(self, ns: str, name: str, status: dict) -> dict:
        return self._call(
            "patch_namespaced_pod_status", name, ns, {"status": status}, _content_type="application/merge-patch+json"
        )

    def _bind(self, ns: str, name: str, uid: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        self._call("create_namespaced_pod_binding", name, ns, body)

    def _delete_now(self, ns: str, name: str, uid: str) -> None:
        """The kubelet's final delete: grace 0, only this incarnation of the Pod."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self._call("delete_namespaced_pod", name, ns, grace_period_seconds=0, body=body)
            log.info("pod %s/%s: deleted", ns, name)
        except Exception as exc:
            if _status_code(exc) not in (404, 409):
                log.warning("pod %s/%s: final delete failed: %s", ns, name, _short(exc))

    def _get_data(self, method: str, ns: str, name: str, binary: bool) -> dict[str, str] | None:
        try:
            obj = self._call(method, name, ns)
        except Exception as exc:
            if _status_code(exc) == 404:
                return None
            raise
        if binary:
            return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})

    def _get_secret(self, ns: str, name: str) -> dict[str, str] | None:
        return self._get_data("read_namespaced_secret", ns, name, binary=True)

    def _get_configmap(self, ns: str, name: str) -> dict[str, str] | None:
        return self._get_data("read_namespaced_config_map", ns, name, binary=False)

    def _sa_automount(self, ns: str, sa: str) -> bool:
        try:
            obj = self._call("read_namespaced_service_account", sa, ns)
        except Exception:
            return True
        return obj.get("automountServiceAccountToken") is not False

    def _request_token(self, pod: dict, audiences: list[str] | None = None, seconds: int = TOKEN_SECONDS) -> str:
        meta = pod["metadata"]
        spec: dict[str, Any] = {
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
        }
        if audiences:
            spec["audiences"] = audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        sa = pod["spec"].get("serviceAccountName") or "default"
        out = self._call("create_namespaced_service_account_token", sa, meta["namespace"], body)
        return out["status"]["token"]

    def kubeconfig_for(self, namespace: str, sa: str, token: str) -> str:
        cluster: dict[str, Any] = {"server": self.host}
        if self.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem.encode()).decode()
        elif self.insecure:
            cluster["insecure-skip-tls-verify"] = True
        user = f"system:serviceaccount:{namespace}:{sa}"
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "devstack", "cluster": cluster}],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": user,
                                                               "namespace": namespace}}],
                "current-context": "devstack",
            },
            indent=2,
        )

    def _register_node(self) -> None:
        """Create the Node object ``devstack`` (as a kubelet registers itself); best effort."""
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": {
                "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64" if os.uname().machine == "x86_64" else os.uname().machine}},
        }
        try:
            self._call("create_node", body)
        except Exception as exc:
            if _status_code(exc) != 409:
                log.warning("could not register node %s: %s", self.node_name, _short(exc))
                return
        now = _now()
        mem_ki = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_ki}Ki", "pods": "250"}
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": self.node_name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "devstack pod runner is posting ready status",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"kubeletVersion": "devstack-podrunner", "operatingSystem": "linux",
                         "architecture": os.uname().machine, "containerRuntimeVersion": "devstack://process",
                         "kernelVersion": os.uname().release, "osImage": "", "kubeProxyVersion": "",
                         "machineID": "", "systemUUID": "", "bootID": ""},
        }
        try:
            self._call("patch_node_status", self.node_name, {"status": status},
                       _content_type="application/merge-patch+json")
        except Exception as exc:
            log.warning("could not update node %s status: %s", self.node_name, _short(exc))

    # -- IPs -----------------------------------------------------------------------------------
    def _alloc_ip(self, uid: str, wanted: str | None = None) -> str:
        with self._lock:
            if uid in self._ips:
                return self._ips[uid]
            taken = set(self._ips.values())
            for other_uid, pod in self._pods.items():
                st = pod.get("status") or {}
                if (
                    other_uid != uid
                    and st.get("phase") not in ("Succeeded", "Failed")
                    and st.get("podIP")
                    and (pod.get("spec") or {}).get("nodeName") == self.node_name
                ):
                    taken.add(st["podIP"])
            if wanted and wanted.startswith("127.0.0.") and wanted not in taken:
                self._ips[uid] = wanted
                return wanted
            for x in range(2, 255):
                ip = f"127.0.0.{x}"
                if ip not in taken:
                    self._ips[uid] = ip
                    return ip
            raise RuntimeError("no free pod IP in 127.0.0.2-254")

    # -- workers ---------------------------------------------------------------------------------
    def _worker_done(self, w: _PodWorker) -> None:
        with self._lock:
            if self._workers.get(w.uid) is w:
                del self._workers[w.uid]
            self._ips.pop(w.uid, None)
            if w.admitted:
                self._finished[w.uid] = time.monotonic()
            if len(self._finished) > 4096:
                for uid, _ in sorted(self._finished.items(), key=lambda kv: kv[1])[:1024]:
                    del self._finished[uid]

    def _handle(self, pod: dict) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        node = (pod.get("spec") or {}).get("nodeName") or ""
        if node and node != self.node_name:
            return
        with self._lock:
            self._pods[uid] = pod
            worker = self._workers.get(uid)
            finished = uid in self._finished
        if worker is not None:
            worker.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            if meta.get("deletionTimestamp") and node == self.node_name:
                self._delete_now(meta["namespace"], meta["name"], uid)
            return
        if finished and not meta.get("deletionTimestamp"):
            return  # a stale event for a Pod our worker already finished
        owner = (meta.get("annotations") or {}).get(RUNNER_ANNOTATION)
        if owner and owner != self.runner_id and _runner_alive(owner):
            return
        if self._stop.is_set():
            return
        w = _PodWorker(self, pod)
        with self._lock:
            if uid in self._workers:
                return
            self._workers[uid] = w
        w.start()

    def _handle_deleted(self, pod: dict) -> None:
        uid = (pod.get("metadata") or {}).get("uid")
        with self._lock:
            self._pods.pop(uid, None)
            self._swept.discard(uid)
            worker = self._workers.get(uid)
        if worker is not None:
            worker.gone()

    # -- watch -----------------------------------------------------------------------------------
    def _list(self) -> tuple[list[dict], str]:
        if self.namespace:
            out = self._call("list_namespaced_pod", self.namespace)
        else:
            out = self._call("list_pod_for_all_namespaces")
        return out.get("items") or [], out["metadata"]["resourceVersion"]

    def _mine(self, pod: dict) -> bool:
        return ((pod.get("metadata") or {}).get("namespace") or "").startswith(self.namespace_prefix)

    def _watch_stream(self, rv: str) -> Iterator[dict]:
        from kubernetes.watch.watch import iter_resp_lines

        kwargs = dict(
            watch=True, resource_version=rv, timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True,
            _preload_content=False, _request_timeout=(5, WATCH_SECONDS + 10),
        )
        if self.namespace:
            resp = self._api.list_namespaced_pod(self.namespace, **kwargs)
        else:
            resp = self._api.list_pod_for_all_namespaces(**kwargs)
        self._resp = resp
        try:
            for line in iter_resp_lines(resp):
                if self._stop.is_set():
                    return
                yield json.loads(line)
        finally:
            self._resp = None
            with contextlib.suppress(Exception):
                resp.release_conn()

    def _watch_loop(self) -> None:
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    items, rv = self._list()
                    items = [p for p in items if self._mine(p)]
                    seen = set()
                    for pod in items:
                        # List items lack kind/apiVersion; nothing here needs them.
                        seen.add(pod["metadata"]["uid"])
                        self._handle(pod)
                    with self._lock:
                        vanished = [w for uid, w in self._workers.items() if uid not in seen]
                        for uid in [u for u in self._pods if u not in seen]:
                            del self._pods[uid]
                    for w in vanished:
                        w.gone()
                    self.ready.set()
                for ev in self._watch_stream(rv):
                    etype, obj = ev.get("type"), ev.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            log.info("watch expired (410): relisting")
                        else:
                            log.warning("watch error: %s", obj.get("message"))
                        rv = ""
                        break
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if not self._mine(obj):
                        continue
                    if etype in ("ADDED", "MODIFIED"):
                        self._handle(obj)
                    elif etype == "DELETED":
                        self._handle_deleted(obj)
            except Exception as exc:
                if self._stop.is_set():
                    return
                if _status_code(exc) == 410:
                    rv = ""
                    continue
                log.warning("pod watch failed (%s): retrying", exc)
                rv = ""
                self._stop.wait(1)

    # -- Terminating namespaces --------------------------------------------------------------------
    def _sweep(self) -> None:
        """Delete the Pods of Terminating namespaces, as the namespace controller would.

        No controllers run in the stack, so a deleted namespace stays Terminating for good; without
        this its Pods would run on (or wait to be bound) forever. Each Pod gets an ordinary delete
        with its own grace period, so the usual SIGTERM/grace/SIGKILL path ends its processes.
        """
        if self.namespace:
            try:
                obj = self._call("read_namespace", self.namespace)
            except Exception as exc:
                if _status_code(exc) == 404:
                    return
                raise
            items = [obj]
        else:
            items = self._call("list_namespace").get("items") or []
        terminating = {
            n["metadata"]["name"] for n in items if (n.get("status") or {}).get("phase") == "Terminating"
        }
        if not terminating:
            return
        with self._lock:
            victims = [
                p for uid, p in self._pods.items()
                if p["metadata"].get("namespace") in terminating
                and not p["metadata"].get("deletionTimestamp")
                and uid not in self._swept
            ]
            self._swept.update(p["metadata"]["uid"] for p in victims)
        for p in victims:
            meta = p["metadata"]
            log.info("pod %s/%s: namespace is Terminating: deleting the pod", meta["namespace"], meta["name"])
            try:
                self._call("delete_namespaced_pod", meta["name"], meta["namespace"],
                           body={"preconditions": {"uid": meta["uid"]}})
            except Exception as exc:
                if _status_code(exc) not in (404, 409):
                    log.warning("pod %s/%s: delete failed: %s", meta["namespace"], meta["name"], _short(exc))
                    with self._lock:
                        self._swept.discard(meta["uid"])

    def _sweep_loop(self) -> None:
        while not self._stop.wait(SWEEP_INTERVAL):
            try:
                self._sweep()
            except Exception as exc:
                log.debug("namespace sweep failed: %s", exc)

    # -- public ------------------------------------------------------------------------------------
    def reap_orphans(self) -> list[int]:
        """Kill container processes that runners which are gone (e.g. SIGKILLed) left running.

        Every container process is recorded in ``<pod dir>/.<container>.proc`` with its pid, start
        time and runner; a process still alive under a dead runner is killed with its group.
        """
        killed = []
        for info in self.state_dir.glob("*/*/.*.proc"):
            try:
                data = json.loads(info.read_text())
                pid, owner = int(data["pid"]), str(data.get("runner") or "")
            except (OSError, ValueError, KeyError):
                continue
            if owner and _runner_alive(owner):
                continue
            if _proc_starttime(pid) == data.get("start"):
                log.info("killing orphan process %s of %s (its runner is gone)", pid, info.parent)
                _killpg(int(data.get("pgid") or pid), signal.SIGKILL)
                killed.append(pid)
            with contextlib.suppress(OSError):
                info.unlink()
            with contextlib.suppress(OSError):
                info.with_name(info.name[1:].removesuffix(".proc") + ".pid").unlink()
        return killed

    def start(self, wait: float = 30.0) -> PodRunner:
        """Connect, register the node, and start watching; returns once the first list is done."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.reap_orphans()
        self._connect()
        _LIVE_RUNNERS.add(self.runner_id)
        self._register_node()
        self._stop.clear()
        self._watch_thread = threading.Thread(target=self._watch_loop, name="podrunner-watch", daemon=True)
        self._watch_thread.start()
        self._sweep_thread = threading.Thread(target=self._sweep_loop, name="podrunner-sweep", daemon=True)
        self._sweep_thread.start()
        if not self.ready.wait(wait):
            log.warning("pod runner: first pod list not done after %ss", wait)
        log.info("pod runner %s watching %s (state %s)", self.runner_id, self.namespace or "all namespaces",
                 self.state_dir)
        return self

    def stop(self) -> None:
        """Stop watching and terminate every process started (SIGTERM, then SIGKILL)."""
        self._stop.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()
        with self._lock:
            workers = list(self._workers.values())
        # Each worker terminates its processes (SIGTERM, stop_grace, SIGKILL) in parallel.
        for w in workers:
            w._wake.set()
        for w in workers:
            w.join(self.stop_grace + 10)
        for t in (self._watch_thread, self._sweep_thread):
            if t is not None:
                t.join(5)
        _LIVE_RUNNERS.discard(self.runner_id)

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pod_dir(self, namespace: str, pod: str) -> Path:
        return pod_dir(namespace, pod, self.state_dir)

    def container_pid(self, namespace: str, pod: str, container: str | None = None) -> int | None:
        return container_pid(namespace, pod, container, self.state_dir)

    def kill_container(self, namespace: str, pod: str, container: str | None = None, sig: int = signal.SIGKILL) -> int:
        return kill_container(namespace, pod, container, sig, self.state_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.podrunner", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", help="admin kubeconfig (default: $KUBECONFIG)")
    ap.add_argument("--state-dir", help=f"where pod dirs, logs and pid files go (default: {default_state_dir()})")
    ap.add_argument("--namespace", help="only run Pods of this namespace (default: all)")
    ap.add_argument("--node-name", default=NODE_NAME, help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runner = PodRunner(args.kubeconfig, args.state_dir, args.namespace, node_name=args.node_name)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.start()
    try:
        while not stop.wait(1):
            pass
    finally:
        runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
