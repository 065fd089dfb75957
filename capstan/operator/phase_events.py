"""Kubernetes Events for what the worker reports: every phase change, and every event it puts
in its outbox (TRTC 301–312, result bodies), so `kubectl describe` mirrors the callbacks.

A phase the operator itself writes together with an Event of its own saying so (`Accepted` and
`Failover` for `normal`; `Canceled`, `Finished`, `WorkerFailed`, `TaskRefused`, ... for the end)
gets no `PhaseChanged` beside it (issue 11: Events per task); the worker's phases and `callback` do.

Workers may not create Events (their Role names only their own resource), so the operator
watches the status and posts them on their behalf.
"""

from __future__ import annotations

import json
from typing import Any

import kopf

from capstan.api import GROUP, KINDS, VERSION, KindInfo
from capstan.api.common import Phase, TaskEvent
from capstan.operator import outbox
from capstan.operator.defaults import effective_spec

EVENT_REASONS = {301: "RecorderStart", 302: "RecorderStop", 303: "UploadStart", 304: "FileInfo",
                 305: "UploadStop", 306: "Failover", 307: "FileSlice", 308: "UploadError",
                 309: "ImageDownloadError", 310: "Mp4Stop", 311: "VodCommit", 312: "VodStop", 0: "Result",
                 401: "PushStart", 402: "PushResume", 403: "PushStop"}
WARNING_TYPES = {308, 309}
# Conditions a worker sets (the operator's own, Admitted/Queued/Finished, have their own Events):
# each change of one becomes an Event, Warning while it is True.
WORKER_CONDITIONS = frozenset({"StreamLimitReached", "LocalDiskFull"})
# Phases only the operator writes, each time with a more specific Event (reconcile, phases.decide).
ANNOUNCED_PHASES = frozenset({Phase.normal.value, Phase.finished.value, Phase.failed.value, Phase.canceled.value})


def phase_change(last: str | None, phase: str | None, message: str | None) -> str | None:
    """The message of the PhaseChanged Event (Normal) for a change from `last` to `phase`, if one is due:
    none for the first sight after a (re)start, none for a phase announced by the operator's own Event."""
    if not phase or last is None or phase == last or phase in ANNOUNCED_PHASES:
        return None
    return (f"{last} -> {phase}" + (f": {message}" if message else ""))[:1000]


def _mirror_conditions(body: kopf.Body, status: kopf.Status, memo: kopf.Memo) -> None:
    seen = memo.get("worker_conditions")
    now = {c.get("type"): (c.get("status"), c.get("lastTransitionTime"), c.get("reason"), c.get("message"))
           for c in status.get("conditions") or [] if c.get("type") in WORKER_CONDITIONS}
    memo["worker_conditions"] = now
    if seen is None:
        return  # first sight after a (re)start: these were mirrored before
    for kind, (value, _, reason, message) in sorted(now.items()):
        if seen.get(kind, (None,))[:2] != now[kind][:2]:
            kopf.event(body, type="Warning" if value == "True" else "Normal", reason=kind if value == "True"
                       else f"{kind}Cleared", message=f"{reason}: {message}"[:1000])


def _mirror_outbox(info: KindInfo, body: kopf.Body, status: kopf.Status, memo: kopf.Memo) -> None:
    events = status.get("events") or []
    last = max((int(e.get("seq", 0)) for e in events), default=0)
    seen = memo.get("last_event_seq")
    memo["last_event_seq"] = last
    if seen is None:
        return  # first sight after a (re)start: these were mirrored before
    spec = dict(body.get("spec") or {})
    state = memo.get("capstan")  # the operator's state (handlers.configure); absent when run alone
    if state is not None:  # the default storage filled in: result bodies may name its URLs
        spec = effective_spec(info, spec, state.config.defaults, strict=False)
    for event in sorted(events, key=lambda e: int(e.get("seq", 0))):
        if int(event.get("seq", 0)) <= seen:
            continue
        kind = int(event.get("type", 0))
        try:
            why = outbox.refusal(info, spec, dict(status), TaskEvent.model_validate(event))
        except ValueError as exc:  # not even an outbox entry
            why = f"malformed outbox entry ({type(exc).__name__})"
        if why is not None:  # a worker wrote it, the operator does not repeat it
            kopf.event(body, type="Warning", reason="EventRefused", message=f"seq {event.get('seq')}: {why}"[:1000])
            continue
        payload = json.dumps(event.get("payload") or {}, separators=(",", ":"), ensure_ascii=False)
        kopf.event(body, type="Warning" if kind in WARNING_TYPES else "Normal",
                   reason=EVENT_REASONS.get(kind, f"Event{kind}"), message=f"{kind} {payload}"[:1000])


def register(info: KindInfo) -> None:
    plural = info.plural

    # Async: it only reads the body and queues Events, so it runs on kopf's loop; as a sync handler
    # every watch event of every task cost a handler thread's hop for it (issue 11).
    @kopf.on.event(GROUP, VERSION, plural, id=f"{plural}-phase-events")
    async def phase_changed(body: kopf.Body, status: kopf.Status, memo: kopf.Memo, type: str | None,
                      **_: Any) -> None:
        if type != "DELETED":
            _mirror_outbox(info, body, status, memo)
            _mirror_conditions(body, status, memo)
        phase = status.get("phase")
        last = memo.get("last_phase")
        if type == "DELETED" or not phase or phase == last:
            return
        memo["last_phase"] = phase
        message = phase_change(last, phase, status.get("message"))
        if message is not None:
            kopf.event(body, type="Normal", reason="PhaseChanged", message=message)


for _info in KINDS:
    register(_info)
