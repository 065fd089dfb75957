"""The local real stack (DESIGN §9) works as tests and the demo expect."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
from kubernetes import client
from kubernetes.client.rest import ApiException

from devstack import janus_server, livekit_server
from devstack import stack as devstack
from devstack.pytest_plugin import new_api_client

REPO = Path(__file__).resolve().parents[2]
T = 10  # seconds, per request
SFU = janus_server.NET


def _token_client(stack: devstack.StackEnv, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = stack.apiserver_url
    cfg.ssl_ca_cert = stack.ca_file
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def test_unauthenticated_request_is_forbidden(stack: devstack.StackEnv) -> None:
    ctx = ssl.create_default_context(cafile=stack.ca_file)
    url = f"{stack.apiserver_url}/api/v1/namespaces/default/secrets"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, context=ctx, timeout=T)  # noqa: S310
    assert err.value.code == 403
    assert "system:anonymous" in json.loads(err.value.read())["message"]


def test_admin_kubeconfig_is_cluster_admin(kube_api: client.ApiClient) -> None:
    review = client.AuthenticationV1Api(kube_api).create_self_subject_review(client.V1SelfSubjectReview())
    assert review.status.user_info.username == "admin"
    assert "system:masters" in review.status.user_info.groups
    names = {ns.metadata.name for ns in client.CoreV1Api(kube_api).list_namespace().items}
    assert {"default", "kube-system"} <= names
    # `up` plays the controllers for the built-in namespaces: Pods in `default` are admitted.
    assert client.CoreV1Api(kube_api).read_namespaced_service_account("default", "default")


def test_serviceaccount_token_authenticates_and_rbac_authorizes(
    stack: devstack.StackEnv, kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot"))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["https://kubernetes.default.svc"], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token("robot", namespace, request).status.token
    assert token

    with _token_client(stack, token) as sa:
        review = client.AuthenticationV1Api(sa).create_self_subject_review(
            client.V1SelfSubjectReview(), _request_timeout=T
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:robot"

        # RBAC is on: without a binding the ServiceAccount may not list secrets ...
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(sa).list_namespaced_secret(namespace, _request_timeout=T)
        assert err.value.status == 403

        # ... and with a Role and RoleBinding it may.
        rbac = client.RbacAuthorizationV1Api(kube_api)
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="read-secrets"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="robot-reads-secrets"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="read-secrets"
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="robot", namespace=namespace)],
            ),
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                client.CoreV1Api(sa).list_namespaced_secret(namespace, _request_timeout=T)
                break
            except ApiException as e:
                if e.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # A token for another audience is refused.
    other = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=["someone-else"]))
    foreign = core.create_namespaced_service_account_token("robot", namespace, other).status.token
    with _token_client(stack, foreign) as sa, pytest.raises(ApiException) as err:
        client.AuthenticationV1Api(sa).create_self_subject_review(
            client.V1SelfSubjectReview(), _request_timeout=T
        )
    assert err.value.status == 401


def test_namespace_fixture_accepts_pods(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    assert core.read_namespaced_service_account("default", namespace).metadata.name == "default"
    assert "ca.crt" in core.read_namespaced_config_map("kube-root-ca.crt", namespace).data
    pod = core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="p"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="none", command=["true"])]),
        ),
    )
    # ServiceAccount admission is on, as in a real cluster; no scheduler or kubelet runs.
    assert pod.spec.service_account_name == "default"
    assert pod.status.phase == "Pending"


def test_minio_round_trip(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    import io

    data = os.urandom(256 * 1024)
    s3.put_object(
        bucket, "dir/blob.bin", io.BytesIO(data), len(data), content_type="application/octet-stream"
    )
    resp = s3.get_object(bucket, "dir/blob.bin")
    try:
        assert resp.read() == data
    finally:
        resp.close()
        resp.release_conn()
    assert [o.object_name for o in s3.list_objects(bucket, prefix="dir/")] == ["dir/blob.bin"]


def test_redis_answers_ping(stack: devstack.StackEnv) -> None:
    r = redis.Redis.from_url(stack.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        assert r.ping() is True
        key = f"capstan-test-{uuid.uuid4().hex}"
        r.set(key, "1", ex=60)
        assert r.get(key) == b"1"
        assert r.config_get("save")["save"] == ""  # no persistence
    finally:
        r.close()


def test_environment_is_exported(stack: devstack.StackEnv) -> None:
    for key, value in stack.env().items():
        assert os.environ[key] == value
    assert os.environ["S3_SECURE"] == "0"
    # names the Janus client (capstan/rooms/janus.py) reads
    assert os.environ["JANUS_URL"] == f"http://{SFU.address}:8088/janus"
    assert os.environ["JANUS_ADMIN_URL"] == f"http://{SFU.address}:7088/admin"
    assert os.environ["JANUS_ADMIN_SECRET"] and os.environ["JANUS_ADMIN_KEY"]
    assert os.environ["ROOM_HOST_ADDRESS"] == SFU.host_address
    # names LiveKit's own CLI and SDKs read
    assert os.environ["LIVEKIT_URL"] == f"ws://{livekit_server.NET.address}:7880"
    assert os.environ["LIVEKIT_API_KEY"] and len(os.environ["LIVEKIT_API_SECRET"]) >= 32
    # tools build.sh made, for the tests that call them
    for tool in ("HELM", "PROMTOOL"):
        assert os.access(os.environ[tool], os.X_OK), os.environ[tool]
    with new_api_client(os.environ["KUBECONFIG"]) as api:
        assert client.VersionApi(api).get_code().git_version


def test_up_is_idempotent(stack: devstack.StackEnv) -> None:
    before = devstack.status()
    again = devstack.ensure_up()
    assert again.started == []
    assert again.janus_error is None, again.janus_error
    assert again.livekit_error is None, again.livekit_error
    assert sorted(again.reused) == sorted(devstack.ALL_COMPONENTS)
    after = devstack.status()
    assert {n: s["pid"] for n, s in after.items()} == {n: s["pid"] for n, s in before.items()}
    assert all(s["healthy"] for s in after.values())

    # The CLI says the same, and `env` prints shell exports.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    up = subprocess.run(
        [sys.executable, "-m", "devstack.stack", "up"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    assert ": started" not in up.stdout
    assert all(f"{name}: reused" in up.stdout for name in devstack.ALL_COMPONENTS)
    out = subprocess.run(
        [sys.executable, "-m", "devstack.stack", "env"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert f"export KUBECONFIG={stack.kubeconfig}" in out.stdout.splitlines()
    assert f"export JANUS_URL={stack.janus_url}" in out.stdout.splitlines()
    assert f"export LIVEKIT_URL={stack.livekit_url}" in out.stdout.splitlines()
    st = subprocess.run(
        [sys.executable, "-m", "devstack.stack", "status"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert st.returncode == 0, st.stdout


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}


def _listening_inodes() -> dict[int, str]:
    """socket inode -> local address, for every listening TCP socket (IPv4 and IPv6)."""
    out: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                out[int(fields[9])] = fields[1]
    return out


def test_everything_listens_on_loopback_only(stack: devstack.StackEnv) -> None:
    listening = _listening_inodes()
    paths = devstack.Paths()
    seen = 0
    for name in devstack.START_ORDER:
        pid = devstack.running_pid(paths, name)
        assert pid, name
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in listening:
                    seen += 1
                    addr = listening[inode].split(":")[0]
                    # /proc/net/tcp* hex: 127.0.0.1 and ::1 (MinIO also binds IPv6 loopback)
                    assert addr in LOOPBACK_HEX, f"{name} listens on {listening[inode]}"
    assert seen >= len(devstack.START_ORDER)


# --------------------------------------------------------------------------------------------
# Janus (room server) in its network namespace


def _janus_post(url: str, body: dict[str, object]) -> dict[str, object]:
    body = {**body, "transaction": uuid.uuid4().hex}
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=T) as resp:  # noqa: S310 (10.213.x.1, our namespace)
        reply: dict[str, object] = json.loads(resp.read())
    assert reply.get("transaction") == body["transaction"], reply
    return reply


class _VideoRoom:
    """Just enough of the Janus HTTP API for these tests: a session with one VideoRoom handle."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = _janus_post(base, {"janus": "create"})["data"]["id"]  # type: ignore[index]
        handle = _janus_post(f"{base}/{self.session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        self.handle = handle["data"]["id"]  # type: ignore[index]

    def request(self, body: dict[str, object]) -> dict[str, object]:
        """A synchronous VideoRoom request (create, list, destroy, ...): its plugin data."""
        reply = _janus_post(f"{self.base}/{self.session}/{self.handle}", {"janus": "message", "body": body})
        assert reply["janus"] == "success", reply
        return reply["plugindata"]["data"]  # type: ignore[index,no-any-return]

    def message(self, body: dict[str, object]) -> dict[str, object]:
        """An asynchronous request (join, ...): wait for its event on the long poll."""
        reply = _janus_post(f"{self.base}/{self.session}/{self.handle}", {"janus": "message", "body": body})
        assert reply["janus"] == "ack", reply
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{self.base}/{self.session}?maxev=1", timeout=T + 35) as resp:  # noqa: S310
                event = json.loads(resp.read())
            if event.get("transaction") == reply["transaction"] and event["janus"] == "event":
                return event["plugindata"]["data"]  # type: ignore[no-any-return]
        raise AssertionError(f"no answer to {body}")

    def close(self) -> None:
        _janus_post(f"{self.base}/{self.session}", {"janus": "destroy"})


def test_janus_answers_info_with_videoroom(janus: devstack.StackEnv) -> None:
    status, body = devstack.http_get(f"{janus.janus_url}/info", timeout=T)
    assert status == 200
    info = json.loads(body)
    assert info["janus"] == "server_info"
    assert "janus.plugin.videoroom" in info["plugins"]
    assert info["transports"].keys() == {"janus.transport.http"}
    # the admin API wants the admin secret
    assert _janus_post(janus.janus_admin_url, {"janus": "list_sessions"})["janus"] == "error"
    ok = _janus_post(janus.janus_admin_url, {"janus": "list_sessions", "admin_secret": janus.janus_admin_secret})
    assert ok["janus"] == "success", ok


def test_videoroom_create_needs_admin_key_and_takes_string_ids(janus: devstack.StackEnv) -> None:
    room = f"trtc-room-{uuid.uuid4().hex[:8]}"  # TRTC string room id
    vr = _VideoRoom(janus.janus_url)
    try:
        refused = vr.request({"request": "create", "room": room})
        assert refused["videoroom"] == "event" and "error_code" in refused, refused
        wrong = vr.request({"request": "create", "room": room, "admin_key": "guess"})
        assert "error_code" in wrong, wrong

        created = vr.request(
            {"request": "create", "room": room, "admin_key": janus.janus_admin_key, "secret": "s3cret"}
        )
        assert created == {"videoroom": "created", "room": room, "permanent": False}
        listed = vr.request({"request": "list"})
        assert room in [r["room"] for r in listed["list"]]  # type: ignore[union-attr]

        # TRTC string user ids work as participant ids.
        joined = vr.message({"request": "join", "ptype": "publisher", "room": room, "id": "user_a-1", "display": "A"})
        assert joined["videoroom"] == "joined" and joined["id"] == "user_a-1", joined
        people = vr.request({"request": "listparticipants", "room": room})
        assert [p["id"] for p in people["participants"]] == ["user_a-1"]  # type: ignore[union-attr]

        assert vr.request({"request": "destroy", "room": room, "secret": "s3cret"})["videoroom"] == "destroyed"
    finally:
        vr.close()


def _netns(*argv: str) -> str:
    res = subprocess.run(
        ["ip", "netns", "exec", SFU.name, *argv], capture_output=True, text=True, timeout=T
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_janus_runs_in_its_namespace_and_listens_only_there(janus: devstack.StackEnv) -> None:
    pid = devstack.running_pid(devstack.Paths(), "janus")
    assert pid
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{SFU.name}").st_ino
    # a session with a handle, so that Janus has whatever sockets it opens for them
    vr = _VideoRoom(janus.janus_url)
    try:
        sockets = [line.split() for line in _netns("ss", "-lntupH").splitlines() if line.strip()]
        janus_sockets = [f for f in sockets if f'pid={pid},' in f[-1]]
        assert {f[4] for f in janus_sockets} >= {f"{SFU.address}:8088", f"{SFU.address}:7088"}
        for f in sockets:  # netid state recv-q send-q local peer process
            assert f[4].rsplit(":", 1)[0] == SFU.address, f
    finally:
        vr.close()
    # the namespace reaches only 10.213.x.0/30: no default route, one address, no IPv6
    assert _netns("ip", "route", "show", "default").strip() == ""
    assert _netns("ip", "-6", "addr").strip() == ""
    addrs = _netns("ip", "-4", "-o", "addr").split("\n")
    assert sorted(line.split()[3] for line in addrs if line) == [f"{SFU.address}/30", "127.0.0.1/8"]


def test_up_twice_keeps_janus(janus: devstack.StackEnv) -> None:
    paths = devstack.Paths()
    before = devstack.running_pid(paths, "janus")
    for _ in range(2):
        again = devstack.ensure_up(build_first=False)
        assert "janus" in again.reused and "janus" not in again.started
    assert devstack.running_pid(paths, "janus") == before
    assert devstack.probe_janus()


def test_without_root_room_servers_are_reported_not_silently_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(devstack.os, "geteuid", lambda: 1000)
    paths = devstack.Paths(tmp_path)
    paths.mkdirs()
    started: list[str] = []
    for name, server in devstack.ROOM_SERVERS.items():
        assert devstack._ensure_room_server(paths, server, started, []) is None
        reason = paths.unavailable(name).read_text()
        assert "needs root" in reason and server.net.name in reason
        assert f"WARNING: {server.title} (room server) skipped" in capsys.readouterr().err
    assert started == []
    env = devstack.stack_env(paths)
    assert env.janus_error and "capstan-sfu" in env.janus_error
    assert env.livekit_error and "capstan-lk" in env.livekit_error
