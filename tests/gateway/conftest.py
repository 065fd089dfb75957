"""The gateway as a real process (`python -m capstan.gateway`) on loopback, in front of the stack's
kube-apiserver, with two key pairs: team A bound to the test's namespace, team B to another one;
and Tencent's own TRTC client pointed at it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from capstan.gateway import appauth
from capstan.gateway.config import dumps_key
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
SDKAPPID = 1400000000
KEY_A = ("AKIDgatewayTeamA0001", "team-a-secret-key-for-tests-0001")
KEY_B = ("AKIDgatewayTeamB0001", "team-b-secret-key-for-tests-0001")
USE = {"labels": {"capstan.dev/use": "true"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path
    namespace: str
    other_namespace: str

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if "Traceback" in self.log():
            sys.stderr.write(f"--- gateway log\n{self.log()[-4000:]}\n")

    def client(self, key: tuple[str, str] = KEY_A) -> Any:
        """Tencent's TrtcClient, pointed at the gateway."""
        from tencentcloud.common import credential
        from tencentcloud.common.profile.client_profile import ClientProfile
        from tencentcloud.common.profile.http_profile import HttpProfile
        from tencentcloud.trtc.v20190722 import trtc_client

        profile = ClientProfile(httpProfile=HttpProfile(endpoint=self.endpoint, protocol="http", reqTimeout=30))
        return trtc_client.TrtcClient(credential.Credential(*key), "ap-guangzhou", profile)

    def call(self, action: str, params: dict[str, Any], key: tuple[str, str] = KEY_A) -> Any:
        """`action` through the TRTC client: its response model (raises TencentCloudSDKException)."""
        from tencentcloud.trtc.v20190722 import models

        client = self.client(key)
        request = getattr(models, f"{action}Request")()
        request.from_json_string(json.dumps(params))
        return getattr(client, action)(request)

    def scf(self, route: str, body: dict[str, Any], key: tuple[str, str] = KEY_A) -> tuple[int, dict[str, Any]]:
        """A plain HTTP POST of a seed's JSON body, signed as an API Gateway app."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **appauth.sign(*key, data, time.time())}
        req = urllib.request.Request(f"http://{self.endpoint}/scf/{route}", data=data, headers=headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


@pytest.fixture
def other_namespace(kube_api: Any) -> Iterator[str]:
    from kubernetes import client

    from devstack.pytest_plugin import SESSION_NAMESPACE_PREFIX, prepare_namespace

    name = f"{SESSION_NAMESPACE_PREFIX}gw-other-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"capstan-test": "1"})))
    prepare_namespace(kube_api, name)
    yield name
    with contextlib.suppress(Exception):
        core.delete_namespace(name)


def launch(stack: Any, kube_api: Any, keys_namespace: str, namespace: str, other_namespace: str, tmp_path: Path,
           env: dict[str, str] | None = None) -> GatewayProcess:
    """The keys Secret in `keys_namespace` (team A bound to `namespace`, team B to `other_namespace`) and
    `python -m capstan.gateway` reading it, healthy; `env` overrides (e.g. another KUBECONFIG)."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    keys = {KEY_A[0]: dumps_key(KEY_A[1], [namespace], [SDKAPPID]),
            KEY_B[0]: dumps_key(KEY_B[1], [other_namespace], [SDKAPPID])}
    core.create_namespaced_secret(keys_namespace, {"metadata": {"name": "trtc-gateway-keys"}, "stringData": keys},
                                  _request_timeout=30)
    room_url = stack.env().get("LIVEKIT_URL") or "ws://127.0.0.1:7880"
    config = {"apps": [{"sdkAppId": SDKAPPID, "room": {"backend": "livekit", "url": room_url,
                                                       "credentialsSecret": "room-credentials"}}],
              "storage": {"vendors": [1], "regions": {"us-east-1": {"endpoint": stack.s3_endpoint,
                                                                    "secure": bool(stack.s3_secure)}}},
              "rateLimit": {"qps": 5}, "admissionWaitSeconds": 3}
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "gateway.log"
    full_env = {**os.environ, **stack.env(), "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "capstan.gateway", "--config", str(cfg), "--keys-secret",
                                 f"{keys_namespace}/trtc-gateway-keys", "--host", "127.0.0.1", "--port", str(port),
                                 "--keys-refresh-seconds", "1"],
                                env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    gw = GatewayProcess(proc, port, log_path, namespace, other_namespace)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def healthy() -> bool:
        assert proc.poll() is None, f"gateway exited:\n{gw.log()[-3000:]}"
        with contextlib.suppress(OSError), opener.open(f"http://{gw.endpoint}/healthz", timeout=2) as resp:
            return resp.status == 200
        return False

    try:
        wait_for(healthy, 30, what="gateway healthy")
    except BaseException:
        gw.stop()
        raise
    return gw


@pytest.fixture
def gateway(stack: Any, kube_api: Any, crds: Any, namespace: str, other_namespace: str, tmp_path: Path) \
        -> Iterator[GatewayProcess]:
    gw = launch(stack, kube_api, namespace, namespace, other_namespace, tmp_path)
    yield gw
    gw.stop()


# The real-stack recording and push fixtures, shared with the recorder and pusher suites.
from tests.pusher.test_streampush import pusher_operator, pushes  # noqa: E402, F401
from tests.recorder.test_recording import receiver, recorder_operator, room, tasks  # noqa: E402, F401


@pytest.fixture(scope="session")
def clip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A 30 s test clip (frame numbers, tone) served over HTTP on loopback."""
    from devstack import pushmedia
    from devstack.mediaserver import MediaServer

    root = tmp_path_factory.mktemp("gateway-media")
    pushmedia.make(root / "clip.mp4", 30.0)
    server = MediaServer(root)
    yield server
    server.close()
