"""Callback delivery, pure part: body, signature, backoff and give-up."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json

import pytest

from capstan.api import CLOUD_RECORDING, STREAM_PUSH, WEB_RECORDING
from capstan.api.common import CallbackStatus, TaskEvent
from capstan.net.urlpolicy import UrlPolicy
from capstan.operator import callbacks
from capstan.operator.callbacks import Outcome

T0 = dt.datetime(2033, 5, 31, 9, 45, 0, tzinfo=dt.UTC)
ROOM = {"url": "ws://x:7880", "sdkAppId": 1400123456, "roomId": 12345, "credentialsSecretRef": {"name": "lk"}}
SPEC = {"room": ROOM, "recorderUserId": "robot", "callback": {"url": "http://127.0.0.1:1/cb"}}
STATUS = {"taskId": "task-1"}


def event(seq: int, type_: int = 301, payload: dict | None = None) -> TaskEvent:
    return TaskEvent(seq=seq, type=type_, ts=1622186275913, payload=payload or {"Status": 0})


def test_body_with_integer_room_id():
    body = json.loads(callbacks.callback_body(CLOUD_RECORDING, SPEC, STATUS, event(1)))
    assert body["EventGroupId"] == 3 and body["EventType"] == 301
    assert abs(body["CallbackTs"] - dt.datetime.now(dt.UTC).timestamp() * 1000) < 60_000
    assert body["EventInfo"] == {"RoomId": 12345, "EventTs": 1622186275, "UserId": "robot", "TaskId": "task-1",
                                 "Payload": {"Status": 0}}


def test_body_with_string_room_id_keeps_the_clients_type():
    room = {**{k: v for k, v in ROOM.items() if k != "roomId"}, "strRoomId": "12345"}
    body = json.loads(callbacks.callback_body(CLOUD_RECORDING, {**SPEC, "room": room}, STATUS,
                                              event(2, 302, {"LeaveCode": 0})))
    assert body["EventInfo"]["RoomId"] == "12345" and body["EventInfo"]["Payload"] == {"LeaveCode": 0}


def test_stream_push_names_its_publishing_user():
    spec = {"room": ROOM, "userId": "pusher-1"}
    body = json.loads(callbacks.callback_body(STREAM_PUSH, spec, STATUS, event(1)))
    assert body["EventInfo"]["UserId"] == "pusher-1"


def test_result_event_is_sent_as_its_payload():
    result = {"TaskID": "task-1", "Status": "finished", "Result": {"Videos": []}}
    # ... with the event's stable id beside it (receivers drop duplicates by TaskId + EventSeq)
    assert json.loads(callbacks.callback_body(WEB_RECORDING, {}, STATUS, event(1, 0, result))) == {
        **result, "EventSeq": 1}


def test_signature_verifies_with_hmac_and_headers():
    body = callbacks.callback_body(CLOUD_RECORDING, SPEC, STATUS, event(1))
    head = callbacks.headers(SPEC, body, "s3cret")
    expected = base64.b64encode(hmac.new(b"s3cret", body, hashlib.sha256).digest()).decode()
    assert head == {"Content-Type": "application/json", "Sign": expected, "SdkAppId": "1400123456"}
    assert "Sign" not in callbacks.headers(SPEC, body, None)
    assert callbacks.headers({}, body, None) == {"Content-Type": "application/json"}


def test_backoff_grows_then_stays_at_fifteen_seconds():
    assert [callbacks.backoff(n) for n in range(1, 9)] == [1, 2, 4, 8, 15, 15, 15, 15]


def test_next_step_follows_seq_and_waits_for_the_due_time():
    events = [event(2, 302), event(1, 301)]
    state = CallbackStatus()
    assert callbacks.next_step(events, state, T0).seq == 1
    state, outcome = callbacks.after_try(state, events[1], "HTTP 500", T0, 90)
    assert outcome is Outcome.retry and state.attempts == 1 and state.last_error == "HTTP 500"
    assert callbacks.next_step(events, state, T0) is None  # not due yet
    assert callbacks.next_step(events, state, T0 + dt.timedelta(seconds=1)).seq == 1
    state, outcome = callbacks.after_try(state, events[1], None, T0 + dt.timedelta(seconds=1), 90)
    assert outcome is Outcome.delivered and state.delivered_seq == 1 and state.delivered == 1
    assert state.attempts == 0 and state.next_attempt_at is None
    assert callbacks.next_step(events, state, T0 + dt.timedelta(seconds=1)).seq == 2
    assert callbacks.pending_count(events, state) == 1


def test_gives_up_only_after_the_give_up_window():
    ev = event(1)
    state, now = CallbackStatus(), T0
    outcomes = []
    while True:
        state, outcome = callbacks.after_try(state, ev, "URLError:refused", now, 90)
        outcomes.append((now - T0).total_seconds())
        if outcome is Outcome.gave_up:
            break
        now = callbacks.parse_timestamp(state.next_attempt_at)
    assert outcomes == [0, 1, 3, 7, 15, 30, 45, 60, 75, 90]
    assert state.failed == 1 and state.delivered_seq == 1 and state.attempts == 0
    assert state.last_error == "URLError:refused"
    assert callbacks.failed_message(state.last_error) == (
        "Callback failed even all tries. last error message:URLError:refused")


def test_no_callback_url_marks_everything_done():
    state = callbacks.skip_all([event(1), event(2), event(3)], CallbackStatus(deliveredSeq=1))
    assert state.delivered_seq == 3 and state.delivered == 0
    assert callbacks.pending_count([event(1)], state) == 0


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def test_deliver_due_sends_in_order_and_stops_at_a_failure():
    events = (event(1), event(2, 302, {"LeaveCode": 0}), event(3, 305))
    status = {**STATUS, "events": [e.model_dump(by_alias=True) for e in events]}
    sent, answers = [], iter([None, "HTTP 500"])

    def send(url, body, head):
        sent.append(json.loads(body)["EventType"])
        return next(answers)

    state, attempts = callbacks.deliver_due(CLOUD_RECORDING, SPEC, status, CallbackStatus(),
                                            lambda *_: "k", send, 90, clock=Clock())
    assert sent == [301, 302]
    assert [a.outcome for a in attempts] == [Outcome.delivered, Outcome.retry]
    assert state.delivered_seq == 1 and state.attempts == 1


def test_missing_signing_key_is_a_failed_try_and_nothing_is_sent():
    spec = {**SPEC, "callback": {"url": "http://x/", "signingKeySecretRef": {"name": "cb", "key": "key"}}}
    status = {**STATUS, "events": [event(1).model_dump(by_alias=True)]}

    def missing(name, key):
        raise KeyError(f"Secret ns/{name} not found")

    def send(*_):
        pytest.fail("nothing may be sent unsigned when a key is asked for")

    state, attempts = callbacks.deliver_due(CLOUD_RECORDING, spec, status, CallbackStatus(), missing, send, 90,
                                            clock=Clock())
    assert attempts[0].key_missing and attempts[0].tries == 1 and attempts[0].outcome is Outcome.retry
    assert state.last_error == "spec.callback.signingKeySecretRef: Secret ns/cb not found"


def test_deliver_reports_connection_errors():
    loopback = UrlPolicy.from_env({"CAPSTAN_URL_ALLOW_CIDRS": "127.0.0.0/8"})
    error = callbacks.deliver("http://127.0.0.1:9/", b"{}", {"Content-Type": "application/json"}, timeout=2,
                              policy=loopback)
    assert error and "refused" in error.lower()


def test_one_give_up_deadline_per_task_not_per_event():
    """N events to a dead receiver used to hold the task for N x 90 s; after the first is given up,
    the next ones go at their first failed try while the receiver stays down."""
    state, now = CallbackStatus(), T0
    while True:
        state, outcome = callbacks.after_try(state, event(1), "HTTP 503", now, 90)
        if outcome is Outcome.gave_up:
            break
        now = callbacks.parse_timestamp(state.next_attempt_at)
    for seq in (2, 3, 4):
        state, outcome = callbacks.after_try(state, event(seq), "HTTP 503", now + dt.timedelta(seconds=seq), 90)
        assert outcome is Outcome.gave_up
    # a delivery ends the failing spell: the next failure gets the whole window again
    state, _ = callbacks.after_try(state, event(5), None, now, 90)
    state, outcome = callbacks.after_try(state, event(6), "HTTP 503", now + dt.timedelta(seconds=10), 90)
    assert outcome is Outcome.retry and state.failed == 4


def test_each_request_carries_the_event_seq_header():
    assert callbacks.headers(SPEC, b"{}", None, 7)[callbacks.EVENT_SEQ_HEADER] == "7"
    body = json.loads(callbacks.callback_body(CLOUD_RECORDING, SPEC, STATUS, event(7)))
    assert body["EventSeq"] == 7 and body["EventInfo"]["TaskId"] == "task-1"


@pytest.fixture
def slow_receivers():
    """Loopback receivers: one that trickles its answer a byte a second, one that redirects."""
    import socket
    import threading

    servers, stop = [], threading.Event()

    def serve(answer: bytes, pause: float) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        sock.settimeout(0.2)

        def loop():
            while not stop.is_set():
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                with conn, contextlib.suppress(OSError):  # the client hangs up at its deadline
                    conn.recv(65536)
                    for byte in answer:
                        if stop.is_set():
                            break
                        conn.sendall(bytes([byte]))
                        time.sleep(pause)
        threading.Thread(target=loop, daemon=True).start()
        servers.append(sock)
        return sock.getsockname()[1]

    import time

    yield {"trickle": serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1.0),
           "redirect": serve(b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.1/\r\nContent-Length: 0\r\n\r\n", 0)}
    stop.set()
    for s in servers:
        s.close()


def test_a_try_has_one_total_deadline_and_redirects_fail(slow_receivers):
    import time

    loopback = UrlPolicy.from_env({"CAPSTAN_URL_ALLOW_CIDRS": "127.0.0.0/8"})
    t0 = time.monotonic()
    error = callbacks.deliver(f"http://127.0.0.1:{slow_receivers['trickle']}/", b"{}", {}, timeout=2,
                              policy=loopback)
    assert error and error.startswith("TimeoutError") and time.monotonic() - t0 < 3.5, error
    error = callbacks.deliver(f"http://127.0.0.1:{slow_receivers['redirect']}/", b"{}", {}, timeout=2,
                              policy=loopback)
    assert error == "HTTP 302 (redirects are not followed)"
