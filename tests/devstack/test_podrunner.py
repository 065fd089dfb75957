"""The pod runner (devstack/podrunner.py): pure env/expansion logic, and the kubelet stand-in
against the real local API server (uses the session ``pod_runner`` from tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from devstack.harness import wait_for
from devstack.podrunner import (
    ContainerConfigError,
    PathRewriter,
    PodRunner,
    build_argv,
    container_pid,
    exit_code_of,
    expand,
    field_ref_value,
    resolve_env,
    resource_field_value,
    terminated_state,
)

# --------------------------------------------------------------------------------------------
# pure parts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "a"),
        ("x-$(A)-$(B)-y", "x-a-b b-y"),
        ("$(UNDEFINED)", "$(UNDEFINED)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$$$(A)", "$a"),
        ("a$", "a$"),
        ("$x $(A", "$x $(A"),
        ("$()", "$()"),
        ("plain", "plain"),
        ("$(A)$(A)", "aa"),
    ],
)
def test_expand_like_kubernetes(text: str, expected: str) -> None:
    assert expand(text, {"A": "a", "B": "b b"}) == expected


def test_expand_uses_first_mapping_that_defines_the_name() -> None:
    assert expand("$(X)", {"Y": "1"}, {"X": "2"}, {"X": "3"}) == "2"


POD: dict[str, Any] = {
    "metadata": {
        "name": "p",
        "namespace": "ns1",
        "uid": "u-1",
        "labels": {"app": "rec"},
        "annotations": {"capstan.dev/task": "t1"},
    },
    "spec": {"serviceAccountName": "sa1", "nodeName": "devstack", "containers": [{"name": "c"}]},
}

SECRETS = {("ns1", "creds"): {"user": "alice", "pass": "s3cr3t"}}
CONFIGMAPS = {("ns1", "cfg"): {"mode": "fast", "bad-name!": "x", "level": "2"}}


def _resolve(container: dict[str, Any], **kw: Any) -> dict[str, str]:
    return resolve_env(
        POD,
        container,
        get_secret=lambda ns, n: SECRETS.get((ns, n)),
        get_configmap=lambda ns, n: CONFIGMAPS.get((ns, n)),
        pod_ip="127.0.0.7",
        **kw,
    )


def test_resolve_env_values_refs_and_expansion() -> None:
    env = _resolve(
        {
            "name": "c",
            "env": [
                {"name": "A", "value": "lit"},
                {"name": "B", "value": "$(A)-b-$(LATER)"},
                {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "URL", "value": "http://$(USER)@$(POD_IP):80"},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "LATER", "value": "later"},
                {"name": "ESC", "value": "$$(A)"},
            ],
        }
    )
    assert env == {
        "A": "lit",
        "B": "lit-b-$(LATER)",  # only variables defined before are expanded
        "USER": "alice",
        "MODE": "fast",
        "URL": "http://alice@$(POD_IP):80",
        "POD_IP": "127.0.0.7",
        "LATER": "later",
        "ESC": "$(A)",
    }


def test_resolve_env_field_refs() -> None:
    paths = {
        "N": "metadata.name",
        "NS": "metadata.namespace",
        "UID": "metadata.uid",
        "L": "metadata.labels['app']",
        "AN": "metadata.annotations['capstan.dev/task']",
        "SA": "spec.serviceAccountName",
        "NODE": "spec.nodeName",
        "IP": "status.podIP",
        "HOST": "status.hostIP",
    }
    env = _resolve(
        {"name": "c", "env": [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in paths.items()]}
    )
    assert env == {
        "N": "p",
        "NS": "ns1",
        "UID": "u-1",
        "L": "rec",
        "AN": "t1",
        "SA": "sa1",
        "NODE": "devstack",
        "IP": "127.0.0.7",
        "HOST": "127.0.0.1",
    }
    assert field_ref_value(POD, "metadata.labels['missing']") == ""


def test_resolve_env_envfrom_prefix_order_and_invalid_names() -> None:
    env = _resolve(
        {
            "name": "c",
            "envFrom": [
                {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                {"secretRef": {"name": "creds"}},
                {"configMapRef": {"name": "cfg"}},
                {"secretRef": {"name": "absent", "optional": True}},
            ],
            "env": [{"name": "user", "value": "overridden by env"}],
        }
    )
    assert env == {
        "CFG_mode": "fast",
        "CFG_level": "2",
        "user": "overridden by env",
        "pass": "s3cr3t",
        "mode": "fast",
        "level": "2",
    }  # "bad-name!" is not a valid variable name and is skipped


def test_resolve_env_optional_and_missing() -> None:
    env = _resolve(
        {
            "name": "c",
            "env": [
                {"name": "O1", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", "optional": True}}},
                {"name": "O2", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nokey", "optional": True}}},
            ],
        }
    )
    assert env == {}
    cases = [
        ({"secretKeyRef": {"name": "absent", "key": "k"}}, 'secret "absent" not found'),
        ({"secretKeyRef": {"name": "creds", "key": "nokey"}}, "couldn't find key nokey in Secret ns1/creds"),
        ({"configMapKeyRef": {"name": "gone", "key": "k"}}, 'configmap "gone" not found'),
        ({"configMapKeyRef": {"name": "cfg", "key": "nokey"}}, "couldn't find key nokey in ConfigMap ns1/cfg"),
    ]
    for value_from, message in cases:
        with pytest.raises(ContainerConfigError, match=message):
            _resolve({"name": "c", "env": [{"name": "X", "valueFrom": value_from}]})
    with pytest.raises(ContainerConfigError, match='configmap "gone" not found'):
        _resolve({"name": "c", "envFrom": [{"configMapRef": {"name": "gone"}}]})


def test_resource_field_ref() -> None:
    container = {"name": "c", "resources": {"limits": {"cpu": "1500m", "memory": "256Mi"}}}
    pod = {**POD, "spec": {**POD["spec"], "containers": [container]}}
    assert resource_field_value(pod, container, {"resource": "limits.cpu"}) == "2"
    assert resource_field_value(pod, container, {"resource": "limits.cpu", "divisor": "1m"}) == "1500"
    assert resource_field_value(pod, container, {"resource": "limits.memory", "divisor": "1Mi"}) == "256"


def test_path_rewriting_and_argv() -> None:
    rw = PathRewriter({"/data": "/tmp/pod/volumes/data", "/data/sub": "/tmp/pod/volumes/sub", "/etc/creds/": "/x"})
    assert rw("/data") == "/tmp/pod/volumes/data"
    assert rw("/data/a/b.txt") == "/tmp/pod/volumes/data/a/b.txt"
    assert rw("/data/sub/f") == "/tmp/pod/volumes/sub/f"  # the longest mount wins
    assert rw("/database") == "/database"
    assert rw("--out=/data/o.mp4") == "--out=/tmp/pod/volumes/data/o.mp4"
    assert rw("/etc/creds/key") == "/x/key"
    assert rw("relative/data") == "relative/data"

    container = {"name": "c", "command": ["python3", "-m", "mod"], "args": ["--dir", "$(OUT)/x", "$(NOPE)"]}
    argv = build_argv(container, {"OUT": "/data"}, rw)
    assert argv == [sys.executable, "-m", "mod", "--dir", "/tmp/pod/volumes/data/x", "$(NOPE)"]
    assert build_argv({"name": "c", "command": ["/bin/echo", "hi"]}, {})[0] == "/bin/echo"
    assert build_argv({"name": "c", "command": ["/usr/local/bin/python"]}, {})[0] == sys.executable
    with pytest.raises(ContainerConfigError, match="no command"):
        build_argv({"name": "c", "args": ["x"]}, {})


def test_exit_codes() -> None:
    assert exit_code_of(0) == 0
    assert exit_code_of(3) == 3
    assert exit_code_of(-signal.SIGKILL) == 137
    assert exit_code_of(-signal.SIGTERM) == 143
    t = terminated_state(-9, "s", "f")
    assert (t["exitCode"], t["reason"], t["signal"]) == (137, "Error", 9)
    assert terminated_state(0, "s", "f")["reason"] == "Completed"


# --------------------------------------------------------------------------------------------
# against the stack
# --------------------------------------------------------------------------------------------


def _wait(predicate: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    return wait_for(predicate, timeout, interval=0.2, what=what)


@pytest.fixture
def core(kube_api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(kube_api)


def _pod(name: str, script: str, *, restart: str = "Never", sa: str = "default", **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "capstan/test:dev", "command": ["python", "-c", script]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"serviceAccountName": sa, "restartPolicy": restart, "containers": [container], **spec},
    }


def _read(core: Any, ns: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return json.loads(core.read_namespaced_pod(name, ns, _preload_content=False).data)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _phase(core: Any, ns: str, name: str, *phases: str) -> Callable[[], dict | None]:
    def check() -> dict | None:
        pod = _read(core, ns, name)
        return pod if pod and pod.get("status", {}).get("phase") in phases else None

    return check


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


def _log(runner: PodRunner, ns: str, pod: str, container: str = "main") -> str:
    return (runner.pod_dir(ns, pod) / f"{container}.log").read_text()


ENV_SCRIPT = r"""
import json, os
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
config.load_kube_config()  # KUBECONFIG from the pod runner: the ServiceAccount's token
core = client.CoreV1Api()
out = {k: os.environ.get(k) for k in ("LIT", "SECRET", "CONFIG", "NAME", "NS", "IP", "URL")}
me = client.AuthenticationV1Api().create_self_subject_review({"apiVersion": "authentication.k8s.io/v1",
                                                              "kind": "SelfSubjectReview"})
out["user"] = me.status.user_info.username
out["own_pod"] = core.read_namespaced_pod(os.environ["NAME"], os.environ["NS"]).metadata.name
try:
    core.list_namespaced_secret(os.environ["NS"])
    out["secrets"] = "listed"
except ApiException as e:
    out["secrets"] = e.status
sa = os.environ["CAPSTAN_SERVICEACCOUNT_DIR"]
out["sa_files"] = sorted(os.listdir(sa))
out["sa_ns"] = open(os.path.join(sa, "namespace")).read()
print("RESULT " + json.dumps(out), flush=True)
"""


def test_env_identity_and_distinct_ips(core: Any, kube_api: Any, namespace: str, pod_runner: PodRunner) -> None:
    from kubernetes import client

    ns = namespace
    core.create_namespaced_secret(ns, {"metadata": {"name": "creds"}, "stringData": {"key": "from-secret"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"key": "from-configmap"}})
    core.create_namespaced_service_account(ns, {"metadata": {"name": "worker"}})
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(ns, {
        "metadata": {"name": "own-pod"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["env-a", "env-b"]}],
    })
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "own-pod"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "own-pod"},
        "subjects": [{"kind": "ServiceAccount", "name": "worker", "namespace": ns}],
    })
    env = [
        {"name": "LIT", "value": "literal"},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
        {"name": "CONFIG", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "key"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "URL", "value": "http://$(IP):8080/$(NAME)"},
    ]
    for name in ("env-a", "env-b"):
        core.create_namespaced_pod(ns, _pod(name, ENV_SCRIPT, sa="worker", container={"env": env}))

    results = {}
    for name in ("env-a", "env-b"):
        pod = _wait(_phase(core, ns, name, "Succeeded", "Failed"), 60, f"{name} to finish")
        log = _log(pod_runner, ns, name)
        assert pod["status"]["phase"] == "Succeeded", log
        assert pod["spec"]["nodeName"] == "devstack"
        line = next(line for line in log.splitlines() if line.startswith("RESULT "))
        out = json.loads(line.removeprefix("RESULT "))
        assert out["IP"] == pod["status"]["podIP"]
        assert out["IP"].startswith("127.0.0.") and out["IP"] != "127.0.0.1"
        assert out["URL"] == f"http://{out['IP']}:8080/{name}"
        assert {k: out[k] for k in ("LIT", "SECRET", "CONFIG", "NAME", "NS")} == {
            "LIT": "literal", "SECRET": "from-secret", "CONFIG": "from-configmap", "NAME": name, "NS": ns,
        }
        assert out["user"] == f"system:serviceaccount:{ns}:worker"
        assert out["own_pod"] == name
        assert out["secrets"] == 403
        assert out["sa_files"] == ["ca.crt", "namespace", "token"]
        assert out["sa_ns"] == ns
        results[name] = out
    assert results["env-a"]["IP"] != results["env-b"]["IP"]


def test_missing_secret_waits_then_starts(core: Any, namespace: str, pod_runner: PodRunner) -> None:
    ns = namespace
    env = [{"name": "V", "valueFrom": {"secretKeyRef": {"name": "later", "key": "v"}}}]
    core.create_namespaced_pod(ns, _pod("waits", "import os; print('V=' + os.environ['V'])", container={"env": env}))

    def waiting() -> dict | None:
        pod = _read(core, ns, "waits") or {}
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        w = statuses[0].get("state", {}).get("waiting") or {}
        return w if w.get("reason") == "CreateContainerConfigError" else None

    w = _wait(waiting, 15, "CreateContainerConfigError")
    assert w["message"] == 'secret "later" not found'
    assert (_read(core, ns, "waits") or {})["status"]["phase"] == "Pending"
    core.create_namespaced_secret(ns, {"metadata": {"name": "later"}, "stringData": {"v": "now"}})
    pod = _wait(_phase(core, ns, "waits", "Succeeded", "Failed"), 15, "pod to run once the secret exists")
    assert pod["status"]["phase"] == "Succeeded"
    assert "V=now" in _log(pod_runner, ns, "waits")


def test_exit_code_fails_pod(core: Any, namespace: str, pod_runner: PodRunner) -> None:
    core.create_namespaced_pod(namespace, _pod("exit3", "import sys; sys.exit(3)"))
    pod = _wait(_phase(core, namespace, "exit3", "Succeeded", "Failed"), 15, "exit3 to finish")
    assert pod["status"]["phase"] == "Failed"
    term = _terminated(pod)
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    assert term["finishedAt"]
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


RESTART_SCRIPT = r"""
import os, sys
path = os.environ["COUNTER"]
n = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(n))
print("attempt", n, "tmp", os.environ["TMPDIR"], flush=True)
sys.exit(0 if n >= 3 else 1)
"""


def test_on_failure_restarts_and_counts(core: Any, namespace: str, pod_runner: PodRunner) -> None:
    spec = {
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "container": {
            "env": [{"name": "COUNTER", "value": "/scratch/count"}],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        },
    }
    core.create_namespaced_pod(namespace, _pod("flaky", RESTART_SCRIPT, restart="OnFailure", **spec))
    pod = _wait(_phase(core, namespace, "flaky", "Succeeded", "Failed"), 25, "flaky to finish")
    status = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Succeeded", _log(pod_runner, namespace, "flaky")
    assert status["restartCount"] == 2
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["exitCode"] == 0
    volume = pod_runner.pod_dir(namespace, "flaky") / "volumes" / "scratch"
    assert (volume / "count").read_text() == "3"
    assert f"tmp {volume}" in _log(pod_runner, namespace, "flaky")  # TMPDIR is the first emptyDir


TERM_SCRIPT = r"""
import os, signal, sys, time
marker = os.environ["MARKER"]
def on_term(signum, frame):
    open(marker, "w").write("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""


def test_graceful_delete_sends_sigterm_and_removes_pod(core: Any, namespace: str, pod_runner: PodRunner) -> None:
    spec = {
        "volumes": [{"name": "data", "emptyDir": {}}],
        "container": {
            "env": [{"name": "MARKER", "value": "/data/terminated"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        },
    }
    core.create_namespaced_pod(namespace, _pod("graceful", TERM_SCRIPT, **spec))
    pod = _wait(_phase(core, namespace, "graceful", "Running"), 15, "graceful to run")
    status = pod["status"]
    assert status["containerStatuses"][0]["ready"] is True
    assert status["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    _wait(lambda: "ready" in _log(pod_runner, namespace, "graceful"), 10, "handler installed")
    pid = pod_runner.container_pid(namespace, "graceful")
    assert pid

    core.delete_namespaced_pod("graceful", namespace, grace_period_seconds=20)
    _wait(lambda: _read(core, namespace, "graceful") is None, 10, "the pod to disappear")
    marker = pod_runner.pod_dir(namespace, "graceful") / "volumes" / "data" / "terminated"
    assert marker.read_text() == "SIGTERM"
    assert pod_runner.container_pid(namespace, "graceful") is None


def test_delete_kills_after_grace_period(core: Any, namespace: str, pod_runner: PodRunner) -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"
    )
    core.create_namespaced_pod(namespace, _pod("stubborn", script))
    _wait(_phase(core, namespace, "stubborn", "Running"), 15, "stubborn to run")
    _wait(lambda: "up" in _log(pod_runner, namespace, "stubborn"), 10, "SIGTERM ignored")
    pid = pod_runner.container_pid(namespace, "stubborn")
    t0 = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace, grace_period_seconds=2)
    _wait(lambda: _read(core, namespace, "stubborn") is None, 10, "the pod to disappear")
    assert 1.5 <= time.monotonic() - t0 < 8
    assert pid is not None and not os.path.exists(f"/proc/{pid}")


def test_kill_container_fails_pod_with_137(core: Any, namespace: str, pod_runner: PodRunner) -> None:
    core.create_namespaced_pod(namespace, _pod("victim", "import time; time.sleep(600)"))
    _wait(_phase(core, namespace, "victim", "Running"), 15, "victim to run")
    pid = _wait(lambda: pod_runner.container_pid(namespace, "victim"), 5, "pid file")
    assert pod_runner.kill_container(namespace, "victim") == pid
    pod = _wait(_phase(core, namespace, "victim", "Failed", "Succeeded"), 10, "victim to fail")
    assert pod["status"]["phase"] == "Failed"
    assert _terminated(pod)["exitCode"] == 137
    assert pod_runner.container_pid(namespace, "victim") is None


def _cleanup(core: Any, namespace: str, pod: str, node: str) -> None:
    """No runner serves a test's private node any more: remove its Pod and Node outright."""
    from kubernetes.client.exceptions import ApiException

    with contextlib.suppress(ApiException):
        core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
    with contextlib.suppress(ApiException):
        core.delete_node(node)


def test_restarted_runner_marks_orphaned_running_pod_failed(
    core: Any, namespace: str, stack: Any, tmp_path: Any
) -> None:
    # A node of its own, so that the session runner (node "devstack") leaves this Pod alone.
    node = f"devstack-{uuid.uuid4().hex[:6]}"
    pod = _pod("orphan", "import time; time.sleep(600)", nodeName=node)
    try:
        with PodRunner(stack.kubeconfig, tmp_path, namespace, node_name=node, stop_grace=2) as first:
            core.create_namespaced_pod(namespace, pod)
            _wait(_phase(core, namespace, "orphan", "Running"), 15, "orphan to run")
            pid = _wait(lambda: first.container_pid(namespace, "orphan"), 5, "pid file")
        assert not os.path.exists(f"/proc/{pid}"), "stopping the runner must not leave the process behind"
        assert container_pid(namespace, "orphan", state_dir=tmp_path) is None
        assert (_read(core, namespace, "orphan") or {})["status"]["phase"] == "Running"

        with PodRunner(stack.kubeconfig, tmp_path, namespace, node_name=node):
            failed = _wait(_phase(core, namespace, "orphan", "Failed"), 15, "orphan to be marked Failed")
        assert failed["status"]["reason"] == "NodeLost"
        assert _terminated(failed)["exitCode"] == 137
    finally:
        _cleanup(core, namespace, "orphan", node)


def test_force_delete_kills_processes(core: Any, namespace: str, pod_runner: PodRunner) -> None:
    core.create_namespaced_pod(namespace, _pod("forced", "import time; time.sleep(600)"))
    _wait(_phase(core, namespace, "forced", "Running"), 15, "forced to run")
    pid = _wait(lambda: pod_runner.container_pid(namespace, "forced"), 5, "pid file")
    core.delete_namespaced_pod("forced", namespace, grace_period_seconds=0)  # the object goes at once
    _wait(lambda: not os.path.exists(f"/proc/{pid}"), 10, "the process to be killed")
    assert pod_runner.container_pid(namespace, "forced") is None


def test_cli_runs_pods_and_leaves_no_orphans_on_sigterm(
    core: Any, namespace: str, stack: Any, tmp_path: Any
) -> None:
    import subprocess

    node = f"devstack-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KUBECONFIG": stack.kubeconfig}
    cmd = [sys.executable, "-m", "devstack.podrunner", "--state-dir", str(tmp_path), "--namespace", namespace,
           "--node-name", node]
    log = (tmp_path / "runner.log").open("wb")
    runner = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        core.create_namespaced_pod(namespace, _pod("cli", "import time; time.sleep(600)", nodeName=node))
        _wait(_phase(core, namespace, "cli", "Running"), 20, "the CLI runner to run the pod")
        pid = _wait(lambda: container_pid(namespace, "cli", state_dir=tmp_path), 5, "pid file")
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(15) == 0
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        if runner.poll() is None:
            runner.kill()
        _cleanup(core, namespace, "cli", node)


def test_pods_of_a_terminating_namespace_are_deleted(core: Any, namespace: str, pod_runner: PodRunner) -> None:
    # No namespace controller runs in the stack: the runner deletes the Pods of a Terminating namespace.
    core.create_namespaced_pod(namespace, _pod("doomed", "import time; time.sleep(600)",
                                               terminationGracePeriodSeconds=5))
    _wait(_phase(core, namespace, "doomed", "Running"), 15, "doomed to run")
    pid = _wait(lambda: pod_runner.container_pid(namespace, "doomed"), 5, "pid file")
    core.delete_namespace(namespace)
    _wait(lambda: _read(core, namespace, "doomed") is None, 15, "the pod to be deleted")
    assert not os.path.exists(f"/proc/{pid}")


def test_init_container_and_secret_configmap_volumes(core: Any, namespace: str, pod_runner: PodRunner) -> None:
    ns = namespace
    core.create_namespaced_secret(ns, {"metadata": {"name": "files"}, "stringData": {"token": "t0k3n"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "conf"}, "data": {"a.ini": "x=1"}})
    # Arguments that start with a mount path are rewritten to the local directory behind it.
    init = {
        "name": "init",
        "image": "i",
        "command": ["python", "-c", "import sys; open(sys.argv[1], 'w').write('seeded')", "/work/seed"],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
    }
    script = "import sys; print(*(open(p).read() for p in sys.argv[1:]))"
    pod = _pod(
        "vols",
        script,
        initContainers=[init],
        volumes=[
            {"name": "work", "emptyDir": {}},
            {"name": "creds", "secret": {"secretName": "files"}},
            {"name": "conf", "configMap": {"name": "conf"}},
        ],
        container={
            "args": ["/work/seed", "/etc/creds/token", "/etc/conf/a.ini"],
            "volumeMounts": [
                {"name": "work", "mountPath": "/work"},
                {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
                {"name": "conf", "mountPath": "/etc/conf"},
            ],
        },
    )
    core.create_namespaced_pod(ns, pod)
    done = _wait(_phase(core, ns, "vols", "Succeeded", "Failed"), 20, "vols to finish")
    assert done["status"]["phase"] == "Succeeded", _log(pod_runner, ns, "vols")
    assert done["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert {c["type"]: c["status"] for c in done["status"]["conditions"]}["Initialized"] == "True"
    assert "seeded t0k3n x=1" in _log(pod_runner, ns, "vols")


def test_runner_killed_hard_its_successor_reaps_the_orphans(
    core: Any, namespace: str, stack: Any, tmp_path: Any
) -> None:
    import subprocess

    node = f"devstack-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KUBECONFIG": stack.kubeconfig}
    cmd = [sys.executable, "-m", "devstack.podrunner", "--state-dir", str(tmp_path), "--namespace", namespace,
           "--node-name", node]
    runner = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        core.create_namespaced_pod(namespace, _pod("survivor", "import time; time.sleep(600)", nodeName=node))
        _wait(_phase(core, namespace, "survivor", "Running"), 20, "the CLI runner to run the pod")
        pid = _wait(lambda: container_pid(namespace, "survivor", state_dir=tmp_path), 5, "pid file")
        runner.kill()  # no chance to clean up: the container process lives on
        runner.wait(5)
        assert os.path.exists(f"/proc/{pid}")
        with PodRunner(stack.kubeconfig, tmp_path, namespace, node_name=node):
            failed = _wait(_phase(core, namespace, "survivor", "Failed"), 15, "survivor to be marked Failed")
            assert failed["status"]["reason"] == "NodeLost"
            _wait(lambda: not os.path.exists(f"/proc/{pid}"), 5, "the orphan to be killed")
    finally:
        if runner.poll() is None:
            runner.kill()
        _cleanup(core, namespace, "survivor", node)
