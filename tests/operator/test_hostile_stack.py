"""Hostile input, against the real operator: Secrets that did not opt in, callback URLs that point
into the operator's network, and a worker that writes events of its own invention.

The operator of the URL tests runs in its own mount namespace (its /etc/hosts maps a name to a
private address, so the system resolver is the one under test) with a tripwire that refuses and
records every connection not to loopback: a policy that let a URL through fails the test without
a packet leaving the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from capstan.api import GROUP, VERSION
from devstack.harness import ROOT, OperatorProcess
from tests.conftest import wait_for
from tests.net.test_urlpolicy import Receiver as Redirector
from tests.operator.test_callbacks_stack import KEY, Receiver
from tests.operator.test_operator_stack import ROOM, STORAGE, USE, Tasks, recording, worker_api

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

PRIVATE_NAME = "internal.capstan.test"
TRIPWIRE = '''
import os, socket
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
_log = os.environ["CAPSTAN_TEST_TRIPWIRE"]
def _allowed(address):
    host = address[0] if isinstance(address, tuple) else ""
    return not isinstance(address, tuple) or host.startswith("127.") or host in ("::1", "localhost")
def connect(self, address):
    if not _allowed(address):
        with open(_log, "a") as f:
            f.write(f"{address}\\n")
        raise OSError(f"tripwire: a connection to {address} would have left the machine")
    return _connect(self, address)
def connect_ex(self, address):
    if not _allowed(address):
        connect(self, address)
    return _connect_ex(self, address)
socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
'''


def opted_out_secrets(core: client.CoreV1Api, namespace: str) -> None:
    """Secrets a task author may name but that never opted in to Capstan."""
    for name, data in (("other-token", {"jwt": "x.y.z"}), ("other-room", {"apiKey": "k", "apiSecret": "s" * 32,
                                                                          "roomPin": "1234"}),
                       ("other-storage", {"accessKey": "a", "secretKey": "b"}), ("other-key", {"key": "k"}),
                       ("other-redis", {"url": "redis://x"}), ("other-aes", {"key": "0" * 32})):
        core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": data}, _request_timeout=30)


def custom(api: client.ApiClient, namespace: str, plural: str, kind: str, name: str, spec: dict) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
                                            "metadata": {"name": name}, "spec": spec}, _request_timeout=30)


def status_of(api: client.ApiClient, namespace: str, plural: str, name: str) -> dict:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name,
                                                                    _request_timeout=30)
    return obj.get("status") or {}


def test_secrets_that_did_not_opt_in_fail_the_task_naming_the_field(operator, kube_api, tasks, namespace):
    opted_out_secrets(tasks.core, namespace)
    janus_room = {**ROOM, "backend": "janus", "url": "http://127.0.0.1:8088/janus",
                  "credentialsSecretRef": {"name": "other-room"}}
    push = {"videoSrc": "https://media.example/a.mp4", "room": ROOM, "userId": "teacher"}
    web_out = {"storage": STORAGE}
    cases = [
        ("cloudrecordings", "CloudRecording", "tok", recording("x", recorderTokenSecretRef={
            "name": "other-token", "key": "jwt"})["spec"], "spec.recorderTokenSecretRef", "other-token"),
        ("cloudrecordings", "CloudRecording", "lk", recording("x", room={
            **ROOM, "credentialsSecretRef": {"name": "other-room"}})["spec"],
         "spec.room.credentialsSecretRef", "other-room"),
        ("cloudrecordings", "CloudRecording", "pin", recording("x", room=janus_room)["spec"],
         "spec.room.credentialsSecretRef", "other-room"),
        ("cloudrecordings", "CloudRecording", "s3", recording("x", storage={
            **STORAGE, "credentialsSecretRef": {"name": "other-storage"}})["spec"],
         "spec.storage.credentialsSecretRef", "other-storage"),
        ("cloudrecordings", "CloudRecording", "sign", recording("x", callback={
            "url": "https://hooks.example/cb", "signingKeySecretRef": {"name": "other-key", "key": "key"}})["spec"],
         "spec.callback.signingKeySecretRef", "other-key"),
        ("streampushes", "StreamPush", "utok", {**push, "userTokenSecretRef": {"name": "other-token", "key": "jwt"}},
         "spec.userTokenSecretRef", "other-token"),
        ("streampushes", "StreamPush", "redis", {**push, "redisSecretRef": {"name": "other-redis", "key": "url"}},
         "spec.redisSecretRef", "other-redis"),
        ("webrecordings", "WebRecording", "ws3", {"recordUrl": "https://page.example/", "output": {
            "storage": {**STORAGE, "credentialsSecretRef": {"name": "other-storage"}}}},
         "spec.output.storage.credentialsSecretRef", "other-storage"),
        ("webrecordings", "WebRecording", "aes", {"recordUrl": "https://page.example/", "output": {
            **web_out, "muxer": "hls", "authUrl": "https://keys.example/k",
            "encryptKeySecretRef": {"name": "other-aes", "key": "key"}}},
         "spec.output.encryptKeySecretRef", "other-aes"),
    ]
    for plural, kind, name, spec, _, _ in cases:
        custom(kube_api, namespace, plural, kind, name, spec)
    for plural, _, name, _, field, secret in cases:
        st = wait_for(lambda p=plural, n=name: (s := status_of(kube_api, namespace, p, n)).get("phase") == "failed"
                      and s, 60, what=f"{plural}/{name} failed")
        assert st["result"]["errorCode"] == "InvalidParameter"
        assert st["result"]["errorMessage"] == (
            f'{field}: Secret {namespace}/{secret} not found or not labelled capstan.dev/use: "true"')
    pods = tasks.core.list_namespaced_pod(namespace, _request_timeout=30).items
    assert pods == []


class IsolatedOperator(OperatorProcess):
    """The operator in a private mount namespace (own /etc/hosts) with the connection tripwire."""

    def __init__(self, namespace: str, env: dict[str, str], log_path: Path, hosts: Path) -> None:
        super().__init__(namespace, env, log_path)
        self.hosts = hosts

    def start(self) -> None:
        python = [sys.executable, "-m", "capstan.operator", "--standalone", "--namespace", str(self.namespace)]
        script = f"mount --bind {self.hosts} /etc/hosts && exec {' '.join(python)}"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


@pytest.fixture
def isolated_operator(stack, crds, pod_runner, namespace, tmp_path):
    started: list[IsolatedOperator] = []

    def start(**settings: str) -> tuple[IsolatedOperator, Path]:
        site = tmp_path / "tripwire"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(TRIPWIRE)
        hosts = tmp_path / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n10.0.0.77 {PRIVATE_NAME}\n")
        wire = tmp_path / "tripwire.log"
        env = {**os.environ, **stack.env(), "CAPSTAN_METRICS_PORT": "0", "CAPSTAN_RECONCILE_INTERVAL": "1",
               "PYTHONUNBUFFERED": "1", "CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE": "base",
               "PYTHONPATH": f"{site}:{ROOT}", "CAPSTAN_TEST_TRIPWIRE": str(wire),
               "CAPSTAN_CALLBACK_GIVE_UP_SECONDS": "600", **settings}
        op = IsolatedOperator(namespace, env, tmp_path / f"operator-{len(started)}.log", hosts)
        op.start()
        started.append(op)
        return op, wire

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def refused_error(tasks: Tasks, name: str) -> str:
    def error() -> str | None:
        last = (tasks.status(name).get("callbacks") or {}).get("lastError") or ""
        return last if last.startswith("refused by the URL policy") else None
    return wait_for(error, 60, what=f"{name}: callback refused")


def test_callback_urls_into_the_operators_network_are_refused(isolated_operator, tasks, receiver):
    _, wire = isolated_operator(CAPSTAN_URL_ALLOW_CIDRS="")  # the default policy: nothing non-public
    urls = {"loop": receiver.url, "meta": "http://169.254.169.254/latest/meta-data/iam/",
            "svc": "http://10.0.0.1/", "named": f"http://{PRIVATE_NAME}:8080/hook"}
    for name, url in urls.items():
        tasks.create(recording(name, callback={"url": url}))
    errors = {name: refused_error(tasks, name) for name in urls}
    assert "127.0.0.1 is a loopback address" in errors["loop"]
    assert "169.254.169.254 is a link-local address" in errors["meta"]
    assert "10.0.0.1 is a private address" in errors["svc"]
    assert errors["named"].startswith(f"refused by the URL policy: host {PRIVATE_NAME} resolves to a private address")
    assert "10.0.0.77" not in errors["named"]  # nothing about the internal address reaches the tenant
    for name in urls:
        assert tasks.wait_phase(name, "idle")["phase"] == "idle"  # the task itself goes on
        warnings = wait_for(lambda n=name: [m for r, m in tasks.events(n) if r == "CallbackURLRefused"], 30,
                            what=f"{name}: a Warning Event")
        assert "refused by the URL policy" in warnings[0]
    assert receiver.tries == 0
    assert not wire.exists(), wire.read_text()  # no connection was even attempted
    for name in urls:
        tasks.patch_spec(name, {"stop": True})


def test_a_redirect_to_a_private_address_is_not_followed(isolated_operator, tasks):
    _, wire = isolated_operator(CAPSTAN_URL_ALLOW_CIDRS="127.0.0.0/8")  # the receiver itself is allowed
    redirector = Redirector(302, "http://10.0.0.1/internal-admin")
    try:
        tasks.create(recording("hop", callback={"url": f"http://127.0.0.1:{redirector.port}/cb"}))
        wait_for(lambda: (tasks.status("hop").get("callbacks") or {}).get("lastError") ==
                 "HTTP 302 (redirects are not followed)", 60, what="302 is a failure")
        assert len(redirector.requests) >= 1
    finally:
        redirector.close()
    assert not wire.exists(), wire.read_text()
    tasks.patch_spec("hop", {"stop": True})


def test_a_worker_cannot_get_its_own_events_signed(operator, tasks, namespace, receiver):
    """What a (compromised) worker writes to its outbox is checked: unknown types and forged result
    bodies are refused and announced, never signed or sent; the task's real events still are."""
    tasks.core.create_namespaced_secret(namespace, {"metadata": {"name": "cb-key", **USE}, "stringData": {
        "key": KEY}}, _request_timeout=30)
    tasks.create(recording("forge", callback={"url": receiver.url,
                                              "signingKeySecretRef": {"name": "cb-key", "key": "key"}}))
    tasks.wait_phase("forge", "idle")
    wait_for(lambda: (tasks.status("forge").get("callbacks") or {}).get("deliveredSeq") == 1, 30, what="301 sent")
    events = tasks.status("forge")["events"]
    forged_result = {"SdkAppId": "1400000000", "RoomId": "1234", "StrRoomId": "", "UserId": "robot-forge",
                     "TaskId": tasks.status("forge")["taskId"],
                     "Files": [{"UserId": "x", "RecordFile": "elsewhere/evil.m3u8", "Status": 1, "Message": "ok"}]}
    events += [{"seq": 2, "type": 999, "ts": 1, "payload": {"Status": 0}},
               {"seq": 3, "type": 0, "ts": 1, "payload": {"transfer": "1000000", "to": "attacker"}},
               {"seq": 4, "type": 0, "ts": 1, "payload": forged_result}]
    worker_api(namespace, "forge-crec-a1").patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "cloudrecordings", "forge", {"status": {"events": events}}, _request_timeout=30)
    cb = wait_for(lambda: (c := tasks.status("forge").get("callbacks") or {}).get("deliveredSeq") == 4 and c, 30,
                  what="forged events handled")
    assert cb["failed"] == 3 and cb["delivered"] == 1
    assert "refused: event type 0 result body refused: Files: 'elsewhere/evil.m3u8'" in cb["lastError"]
    assert receiver.types() == [301] and receiver.bad == []  # nothing forged was signed or sent
    reasons = [(r, m) for r, m in tasks.events("forge") if r in ("CallbackRefused", "EventRefused")]
    assert any("event type 999 is not one a CloudRecording emits" in m for _, m in reasons), reasons
    assert any("payload does not have the expected shape" in m for _, m in reasons), reasons
    tasks.patch_spec("forge", {"stop": True})


@pytest.fixture
def tasks(kube_api, namespace):
    return Tasks(kube_api, namespace).create_credentials()


def test_credentials_in_the_room_url_stay_out_of_status_and_events(operator_factory, tasks, janus):
    """A worker that cannot join reports why, but a password in `room.url` never reaches
    `kubectl get`, `status` or Events."""
    from devstack.rooms import RoomServer

    server = RoomServer.from_stack("janus", janus)
    operator_factory(CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE="media", CAPSTAN_MAX_FAILOVERS="0",
                     **server.worker_env())
    url = server.url.replace("://", "://recorder:hunter2@", 1)
    tasks.core.create_namespaced_secret(tasks.ns, {"metadata": {"name": "janus-room", **USE}, "stringData": {}},
                                        _request_timeout=30)
    tasks.create(recording("creds", room={**ROOM, "backend": "janus", "url": url, "roomId": None,
                                          "strRoomId": "no-such-room", "credentialsSecretRef": {"name": "janus-room"}}))
    st = tasks.wait_phase("creds", "failed", timeout=120)
    messages = [m for _, m in tasks.events("creds")]
    assert any("could not join room 'no-such-room'" in m for m in messages) or "could not join" in str(st), st
    assert "hunter2" not in json.dumps(st) and not any("hunter2" in m for m in messages)
    assert "recorder@" not in json.dumps(st)
