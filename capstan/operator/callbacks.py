"""Callback delivery: the task's outbox (`status.events`) POSTed to `spec.callback.url`, in order,
at least once (seed 002 "Callbacks are sent…").

Pure part first (body, signature, backoff and give-up, what to do next), then the HTTP adapter and
the dispatcher. The delivery state lives in `status.callbacks`, so an operator restart continues
where it was.

Delivery runs off kopf's handler threads, on the dispatcher's own event loop: one total deadline per
try (a trickling receiver cannot hold it longer), no redirects (3xx is a failure), at most
`PER_HOST` tries in flight per receiver host, and one give-up deadline per task (`failingSince`).
Every body carries `EventSeq` and every request the header `X-Capstan-Event-Seq`: with the TaskId
that is the event's stable id, so a receiver drops the duplicates at-least-once delivery may bring.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime as dt
import hashlib
import hmac
import http.client
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from capstan.api import KindInfo
from capstan.api.common import CallbackStatus, TaskEvent
from capstan.net import fetch
from capstan.net.urlpolicy import UrlPolicy, UrlRefused, Use
from capstan.operator import outbox

EVENT_GROUP_CLOUD_RECORDING = 3
RESULT_EVENT = 0  # a kind's final result body, sent as it is
BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0)  # after the 1st, 2nd… failed try; then 15 s each
ANNOUNCED_TYPES = frozenset({301, 302, 305, 306, 310, RESULT_EVENT})  # worth a Normal Event when delivered
URL_REFUSED = "refused by the URL policy"
_USER_FIELD = {"CloudRecording": "recorderUserId", "StreamPush": "userId"}
EVENT_SEQ_HEADER = "X-Capstan-Event-Seq"
PER_HOST = 4  # tries in flight per receiver host, across all tasks
log = logging.getLogger(__name__)


def failed_message(error: str) -> str:
    """How seed 003 reports a callback given up after all tries."""
    return f"Callback failed even all tries. last error message:{error}"


def callback_body(kind_info: KindInfo, spec: dict[str, Any], status: dict[str, Any], event: TaskEvent) -> bytes:
    """The exact bytes POSTed (and signed) for one event."""
    if event.type == RESULT_EVENT:
        body: dict[str, Any] = {**event.payload, "EventSeq": event.seq}
    else:
        room = spec.get("room") or {}
        room_id = room["roomId"] if room.get("roomId") is not None else room.get("strRoomId")
        body = {"EventGroupId": EVENT_GROUP_CLOUD_RECORDING, "EventType": event.type,
                "CallbackTs": int(time.time() * 1000),
                "EventInfo": {"RoomId": room_id, "EventTs": event.ts // 1000,
                              "UserId": spec.get(_USER_FIELD.get(kind_info.kind, "recorderUserId"), ""),
                              "TaskId": status.get("taskId", ""), "Payload": event.payload},
                "EventSeq": event.seq}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: str, body: bytes) -> str:
    """`Sign` header: Base64(HMAC-SHA256(key, body))."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def headers(spec: dict[str, Any], body: bytes, key: str | None, seq: int | None = None) -> dict[str, str]:
    out = {"Content-Type": "application/json"}
    if seq is not None:
        out[EVENT_SEQ_HEADER] = str(seq)
    if key is not None:
        out["Sign"] = sign(key, body)
    room = spec.get("room") or {}
    if room.get("sdkAppId") is not None:
        out["SdkAppId"] = str(room["sdkAppId"])
    return out


def backoff(attempts: int) -> float:
    """Seconds to wait after `attempts` failed tries of one event."""
    return BACKOFF_SECONDS[min(max(attempts, 1), len(BACKOFF_SECONDS)) - 1]


def timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_timestamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def pending_events(events: list[TaskEvent], state: CallbackStatus) -> list[TaskEvent]:
    """Events not yet done (delivered or given up), in delivery order."""
    return sorted((e for e in events if e.seq > state.delivered_seq), key=lambda e: e.seq)


def pending_count(events: list[TaskEvent], state: CallbackStatus) -> int:
    return max(max((e.seq for e in events), default=0) - state.delivered_seq, 0)


def next_step(events: list[TaskEvent], state: CallbackStatus, now: dt.datetime) -> TaskEvent | None:
    """The event to send now; None when all are done or the next try is not due yet."""
    pending = pending_events(events, state)
    if not pending:
        return None
    if state.next_attempt_at and now < parse_timestamp(state.next_attempt_at):
        return None
    return pending[0]


class Outcome(StrEnum):
    delivered = "delivered"
    retry = "retry"
    gave_up = "gave_up"
    refused = "refused"  # not a well-formed event of this task: never signed, never sent


def after_try(state: CallbackStatus, event: TaskEvent, error: str | None, now: dt.datetime,
              give_up_seconds: float) -> tuple[CallbackStatus, Outcome]:
    """The new delivery state after one try of `event` (error None = HTTP 200).

    The give-up deadline is the task's: it runs from the first failed try since the last delivery
    (`failingSince`), so after one event was given up the next ones to the same dead receiver are
    given up at their first failed try instead of waiting the whole window again."""
    first = parse_timestamp(state.first_attempt_at) if state.attempts and state.first_attempt_at else now
    if error is None:
        return state.model_copy(update={
            "delivered_seq": event.seq, "delivered": state.delivered + 1, "attempts": 0,
            "first_attempt_at": None, "next_attempt_at": None, "failing_since": None}), Outcome.delivered
    failing_since = parse_timestamp(state.failing_since) if state.failing_since else first
    attempts = state.attempts + 1
    if (now - failing_since).total_seconds() >= give_up_seconds:
        return state.model_copy(update={
            "delivered_seq": event.seq, "failed": state.failed + 1, "attempts": 0,
            "first_attempt_at": None, "next_attempt_at": None, "last_error": error,
            "failing_since": timestamp(failing_since)}), Outcome.gave_up
    return state.model_copy(update={
        "attempts": attempts, "first_attempt_at": timestamp(first),
        "next_attempt_at": timestamp(now + dt.timedelta(seconds=backoff(attempts))),
        "last_error": error, "failing_since": timestamp(failing_since)}), Outcome.retry


def refuse(state: CallbackStatus, event: TaskEvent, why: str) -> CallbackStatus:
    """The event is done without being sent: counted as failed, the reason kept."""
    return state.model_copy(update={
        "delivered_seq": event.seq, "failed": state.failed + 1, "attempts": 0, "first_attempt_at": None,
        "next_attempt_at": None, "last_error": f"event {event.type} (seq {event.seq}) refused: {why}"})


def skip_all(events: list[TaskEvent], state: CallbackStatus) -> CallbackStatus:
    """No callback URL: every event is done at once."""
    last = max((e.seq for e in events), default=state.delivered_seq)
    return state.model_copy(update={"delivered_seq": max(last, state.delivered_seq)})


@dataclass(frozen=True)
class Attempt:
    """One try of one event and how it ended."""

    event: TaskEvent
    outcome: Outcome
    error: str | None = None
    tries: int = 1  # tries of this event so far, this one included
    key_missing: bool = False  # the signing key could not be read; nothing was sent


KeyReader = Callable[[str, str], str]  # (secret name, key) -> value; raises KeyError with a message
Sender = Callable[[str, bytes, dict[str, str]], str | None]  # (url, body, headers) -> error or None
AsyncSender = Callable[[str, bytes, dict[str, str]], Awaitable[str | None]]


def deliver_due(kind_info: KindInfo, spec: dict[str, Any], status: dict[str, Any], state: CallbackStatus,
                read_key: KeyReader, send: Sender, give_up_seconds: float,
                clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                max_events: int = 5) -> tuple[CallbackStatus, list[Attempt]]:
    """`adeliver_due` with a synchronous sender (tests, tools)."""
    async def asend(url: str, body: bytes, header_map: dict[str, str]) -> str | None:
        return send(url, body, header_map)

    async def sync_key(name: str, key: str) -> str:
        return read_key(name, key)

    return asyncio.run(adeliver_due(kind_info, spec, status, state, sync_key, asend, give_up_seconds, clock,
                                    max_events))


async def adeliver_due(kind_info: KindInfo, spec: dict[str, Any], status: dict[str, Any], state: CallbackStatus,
                       read_key: Callable[[str, str], Awaitable[str]], send: AsyncSender, give_up_seconds: float,
                       clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                       max_events: int = 5) -> tuple[CallbackStatus, list[Attempt]]:
    """Send what is due, in seq order, stopping at the first failure that will be retried."""
    events = [TaskEvent.model_validate(e) for e in status.get("events") or []]
    callback = spec["callback"]
    attempts: list[Attempt] = []
    key: str | None = None
    key_error: str | None = None
    ref = callback.get("signingKeySecretRef")
    while len(attempts) < max_events:
        event = next_step(events, state, clock())
        if event is None:
            break
        why = outbox.refusal(kind_info, spec, status, event)
        if why is not None:
            state = refuse(state, event, why)
            attempts.append(Attempt(event, Outcome.refused, state.last_error, state.attempts + 1))
            continue
        if ref and key is None and key_error is None:
            try:
                key = await read_key(ref["name"], ref["key"])
            except KeyError as exc:
                key_error = f"spec.callback.signingKeySecretRef: {exc.args[0]}"
        if key_error is not None:
            error: str | None = key_error
        else:
            body = callback_body(kind_info, spec, status, event)
            error = await send(callback["url"], body, headers(spec, body, key, event.seq))
        tries = state.attempts + 1
        state, outcome = after_try(state, event, error, clock(), give_up_seconds)
        attempts.append(Attempt(event, outcome, error, tries, key_missing=key_error is not None))
        if outcome is Outcome.retry:
            break
    return state, attempts


def deliver(url: str, body: bytes, header_map: dict[str, str], timeout: float = 5.0,
            policy: UrlPolicy | None = None) -> str | None:
    """`adeliver`, synchronously (tests, tools)."""
    return asyncio.run(adeliver(url, body, header_map, timeout, policy))


async def adeliver(url: str, body: bytes, header_map: dict[str, str], deadline: float = 5.0,
                   policy: UrlPolicy | None = None) -> str | None:
    """POST once through the URL policy within `deadline` seconds in all; None when the receiver
    answered 200, else what went wrong.

    A refused URL is reported without any connection made; a redirect is a failure (following it
    would let a receiver steer the operator to an address the policy refuses).
    """
    try:
        code = await fetch.apost(url, body, header_map, policy=policy or UrlPolicy(), use=Use.callback,
                                 deadline=deadline)
    except UrlRefused as exc:
        return f"{URL_REFUSED}: {exc}"
    except TimeoutError:
        return f"TimeoutError:no answer within {deadline:g} s"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return f"{type(exc).__name__}:{exc}"
    if 300 <= code < 400:
        return f"HTTP {code} (redirects are not followed)"
    return None if code == 200 else f"HTTP {code}"


class Dispatcher:
    """Runs deliveries on an event loop of its own, so no kopf handler thread waits on a receiver.

    A reconcile `submit`s a task's due deliveries (one job per task at a time) and later `collect`s
    the outcome; each try holds one of `per_host` slots of its receiver's host."""

    def __init__(self, per_host: int = PER_HOST) -> None:
        self.per_host = per_host
        self._lock = threading.Lock()
        self._jobs: dict[str, concurrent.futures.Future[tuple[CallbackStatus, list[Attempt]]]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="callbacks", daemon=True).start()
                self._loop = loop
            return self._loop

    def busy(self, uid: str) -> bool:
        with self._lock:
            job = self._jobs.get(uid)
            return job is not None and not job.done()

    def submit(self, uid: str, job: Callable[[Dispatcher], Awaitable[tuple[CallbackStatus, list[Attempt]]]]) -> None:
        """Start `job` for task `uid` unless one is still running or uncollected."""
        loop = self._running_loop()
        with self._lock:
            if uid in self._jobs:
                return
            self._jobs[uid] = asyncio.run_coroutine_threadsafe(job(self), loop)  # type: ignore[arg-type]

    def collect(self, uid: str) -> tuple[CallbackStatus, list[Attempt]] | None:
        """The finished job's outcome (once), or None while it runs or when there is none."""
        with self._lock:
            job = self._jobs.get(uid)
            if job is None or not job.done():
                return None
            del self._jobs[uid]
        try:
            return job.result()
        except Exception:  # noqa: BLE001 - a bug in one delivery must not stop the others
            log.exception("callback delivery of task %s failed", uid)
            return None

    def forget(self, uid: str) -> None:
        with self._lock:
            job = self._jobs.pop(uid, None)
        if job is not None:
            job.cancel()

    async def send(self, url: str, body: bytes, header_map: dict[str, str], deadline: float,
                   policy: UrlPolicy) -> str | None:
        """One try, holding one of its host's slots (the wait for a slot is not part of the try's deadline)."""
        import urllib.parse

        host = (urllib.parse.urlsplit(url).hostname or "").lower()
        slot = self._slots.setdefault(host, asyncio.Semaphore(self.per_host))
        async with slot:
            return await adeliver(url, body, header_map, deadline, policy)
