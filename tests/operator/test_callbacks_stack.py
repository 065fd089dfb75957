"""Callbacks end to end: the worker writes the outbox, the operator POSTs it to a real receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from devstack import podrunner
from tests.conftest import wait_for
from tests.operator.test_operator_stack import ROOM, Tasks, recording

# A worker's first event waits for the worker: its interpreter took 43 s to start on a loaded CI machine
# (two media tests beside it), so the tests wait for the worker first, then for the delivery. A delivery
# takes a second; its bound is for an API server seen to stall 10 s under that load.
WORKER_START = 120
DELIVERY = 45


def worker_started(tasks: Tasks, name: str) -> None:
    """The base-mode worker emitted 301 and reported `idle`: what follows is the operator's delivery."""
    tasks.wait_phase(name, "idle", timeout=WORKER_START)

KEY = "callback-key-123"


class Receiver:
    """An HTTP callback receiver on 127.0.0.1 that checks every signature and records bodies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bodies: list[dict] = []  # accepted (answered 200)
        self.tries = 0
        self.bad: list[str] = []  # signature or header problems
        self.fail_first = 0  # answer 500 to this many tries
        self.always_fail = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                expected = base64.b64encode(hmac.new(KEY.encode(), data, hashlib.sha256).digest()).decode()
                with receiver.lock:
                    receiver.tries += 1
                    if self.headers.get("Sign") != expected:
                        receiver.bad.append(f"bad Sign {self.headers.get('Sign')!r}")
                    if self.headers.get("SdkAppId") != str(ROOM["sdkAppId"]):
                        receiver.bad.append(f"bad SdkAppId {self.headers.get('SdkAppId')!r}")
                    if self.headers.get("Content-Type") != "application/json":
                        receiver.bad.append(f"bad Content-Type {self.headers.get('Content-Type')!r}")
                    ok = not receiver.always_fail and receiver.tries > receiver.fail_first
                    if ok:
                        receiver.bodies.append(json.loads(data))
                self.send_response(200 if ok else 500)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"code":0}')

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def types(self) -> list[int]:
        with self.lock:
            return [b.get("EventType", 0) for b in self.bodies]  # 0: a result body (no TRTC envelope)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def tasks(kube_api, namespace) -> Tasks:
    t = Tasks(kube_api, namespace).create_credentials()
    t.core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="callback-key", labels={"capstan.dev/use": "true"}),
        string_data={"key": KEY}), _request_timeout=30)
    return t


def with_callback(name: str, receiver: Receiver) -> dict:
    return recording(name, callback={"url": receiver.url,
                                     "signingKeySecretRef": {"name": "callback-key", "key": "key"}})


def callbacks(tasks: Tasks, name: str) -> dict:
    return tasks.status(name).get("callbacks") or {}


def test_events_are_delivered_signed_and_in_order(operator, tasks, receiver):
    tasks.create(with_callback("cb-a", receiver))
    tasks.create(recording("cb-none"))  # no spec.callback: its events are done at once
    worker_started(tasks, "cb-a")
    wait_for(lambda: receiver.types() == [301], DELIVERY, what="301 delivered")
    tasks.patch_spec("cb-a", {"stop": True})
    tasks.patch_spec("cb-none", {"stop": True})
    st = tasks.wait_phase("cb-a", "finished", timeout=40)
    assert receiver.types() == [301, 302] and not receiver.bad
    assert st["callbacks"]["delivered"] == 2 and st["callbacks"]["deliveredSeq"] == 2
    assert st["callbacks"].get("failed", 0) == 0 and "result" not in st
    first, last = receiver.bodies
    assert first["EventGroupId"] == 3 and first["EventInfo"]["Payload"] == {"Status": 0}
    assert first["EventInfo"]["RoomId"] == 1234 and first["EventInfo"]["UserId"] == "robot-cb-a"
    assert first["EventInfo"]["TaskId"] == st["taskId"]
    assert last["EventInfo"]["Payload"] == {"LeaveCode": 0}
    assert first["EventInfo"]["EventTs"] <= last["EventInfo"]["EventTs"] <= last["CallbackTs"] // 1000
    assert [e["type"] for e in st["events"]] == [301, 302] and [e["seq"] for e in st["events"]] == [1, 2]
    reasons = [r for r, _ in tasks.events("cb-a")]
    assert reasons.count("CallbackDelivered") == 2, reasons
    plain = tasks.wait_phase("cb-none", "finished", timeout=40)
    assert plain["callbacks"]["deliveredSeq"] == 2 and plain["callbacks"]["delivered"] == 0
    assert receiver.tries == 2


def test_a_recovering_receiver_gets_everything_in_order(operator, tasks, receiver):
    receiver.fail_first = 3
    tasks.create(with_callback("cb-b", receiver))
    worker_started(tasks, "cb-b")
    wait_for(lambda: receiver.types() == [301], DELIVERY, what="301 delivered after 3 failures")
    tasks.patch_spec("cb-b", {"stop": True})
    st = tasks.wait_phase("cb-b", "finished", timeout=40)
    assert receiver.types() == [301, 302] and receiver.tries == 5 and not receiver.bad
    assert st["callbacks"]["delivered"] == 2 and st["callbacks"]["lastError"] == "HTTP 500"


def test_pending_event_survives_an_operator_kill(operator, tasks, receiver):
    receiver.always_fail = True
    tasks.create(with_callback("cb-c", receiver))
    worker_started(tasks, "cb-c")
    wait_for(lambda: callbacks(tasks, "cb-c").get("attempts", 0) >= 2, DELIVERY, what="301 failing")
    operator.restart(kill=True)
    receiver.always_fail = False
    wait_for(lambda: callbacks(tasks, "cb-c").get("deliveredSeq") == 1, DELIVERY, what="301 delivered after restart")
    assert receiver.types() == [301]
    tasks.patch_spec("cb-c", {"stop": True})
    st = tasks.wait_phase("cb-c", "finished", timeout=40)
    assert receiver.types() == [301, 302] and st["callbacks"]["delivered"] == 2 and not receiver.bad


def test_a_receiver_that_never_accepts_ends_in_callback_failed(operator_factory, tasks, receiver):
    operator_factory(CAPSTAN_CALLBACK_GIVE_UP_SECONDS="3")
    receiver.always_fail = True
    tasks.create(with_callback("cb-d", receiver))
    tasks.wait_phase("cb-d", "idle", timeout=30)
    tasks.patch_spec("cb-d", {"stop": True})
    st = tasks.wait_phase("cb-d", "finished", timeout=40)
    assert st["callbacks"]["failed"] == 2 and st["callbacks"]["delivered"] == 0
    assert st["result"] == {"errorCode": "CallbackFailed",
                            "errorMessage": "Callback failed even all tries. last error message:HTTP 500"}
    assert receiver.tries >= 4 and not receiver.bad
    failed = [m for r, m in tasks.events("cb-d") if r == "CallbackFailed"]
    assert len(failed) == 2 and all("Callback failed even all tries" in m for m in failed)
    assert any(r == "PhaseChanged" and "-> callback" in m for r, m in tasks.events("cb-d"))


def test_failover_is_announced_with_306(operator, tasks, receiver, namespace):
    tasks.create(with_callback("cb-e", receiver))
    worker_started(tasks, "cb-e")
    wait_for(lambda: receiver.types() == [301], DELIVERY, what="301 delivered")
    wait_for(lambda: podrunner.container_pid(namespace, "cb-e-crec-a1"), DELIVERY, what="worker pid")
    podrunner.kill_container(namespace, "cb-e-crec-a1", sig=signal.SIGKILL)
    wait_for(lambda: receiver.types() == [301, 306, 301], 40, what="306 and 301 of attempt 2")
    tasks.patch_spec("cb-e", {"stop": True})
    st = tasks.wait_phase("cb-e", "finished", timeout=40)
    assert receiver.types() == [301, 306, 301, 302] and not receiver.bad
    assert [e["seq"] for e in st["events"]] == [1, 2, 3, 4] and st["callbacks"]["delivered"] == 4


def test_missing_signing_key_is_a_clear_warning(operator, tasks, receiver):
    obj = with_callback("cb-f", receiver)
    obj["spec"]["callback"]["signingKeySecretRef"]["name"] = "no-such-secret"
    tasks.create(obj)
    wait_for(lambda: any(r == "CallbackKeyMissing" for r, _ in tasks.events("cb-f")), DELIVERY, what="warning")
    message = next(m for r, m in tasks.events("cb-f") if r == "CallbackKeyMissing")
    assert "signingKeySecretRef" in message and "no-such-secret" in message
    assert receiver.tries == 0 and tasks.status("cb-f")["phase"] == "idle"
    tasks.patch_spec("cb-f", {"stop": True})


def test_a_failed_task_still_delivers_its_events(operator_factory, tasks, receiver, namespace):
    """The last attempt is SIGKILLed: what it wrote (301) and the closing events it could not send
    (302, 305 with failure statuses, the result body; seed 002 / issue 8) reach the receiver, signed,
    after the task is `failed`."""
    operator_factory(CAPSTAN_MAX_FAILOVERS="0")
    receiver.always_fail = True
    tasks.create(with_callback("cb-g", receiver))
    wait_for(lambda: receiver.tries >= 1, 60, what="301 tried")
    podrunner.kill_container(namespace, "cb-g-crec-a1", sig=signal.SIGKILL)
    st = tasks.wait_phase("cb-g", "failed", timeout=40)
    receiver.always_fail = False
    wait_for(lambda: receiver.types() == [301, 302, 305, 0], 40, what="301 and the closing events delivered")
    assert wait_for(lambda: (tasks.status("cb-g").get("callbacks") or {}).get("deliveredSeq") == 4, 20,
                    what="delivery recorded")
    assert not receiver.bad  # every one signed with the task's key
    leave, upload, result = receiver.bodies[1:]
    assert leave["EventInfo"]["Payload"] == {"LeaveCode": 3} and leave["EventInfo"]["TaskId"] == st["taskId"]
    assert upload["EventInfo"]["Payload"] == {"Status": 1}
    assert result["TaskId"] == st["taskId"] and result["UserId"] == "robot-cb-g" and result["Files"] == []
    assert tasks.status("cb-g")["phase"] == "failed"
