"""The closing events of a CloudRecording that ends `failed` (seed 002, issue 8 item 7).

A worker that is SIGKILLed on its last attempt, refused the task, or never started cannot send
302/305/310 and the result body, yet the user's callback receiver waits for them to close the
task. The operator appends what the outbox lacks, with failure statuses, when it fails the task;
they are delivered (signed, retried) like the worker's own. Pure: no I/O.

Delivery stays at-least-once: a type already in the outbox is not added again, but one the worker
sent and that was delivered (pruned from the outbox) before a last failover failed may be sent
again, with the failure status.
"""

from __future__ import annotations

import time
from typing import Any

from capstan.rooms.base import LEAVE_CODES, LeaveReason

RECORDER_STOP, UPLOAD_STOP, MP4_STOP, RESULT = 302, 305, 310, 0
UPLOAD_INCOMPLETE = 1  # 305: "the task ended, but at least one file ... failed to be uploaded"
MP4_ERROR = 2  # 310: "the task stopped due to an error"
# 302 of a failed task: Capstan (the server side) ended the recording robot's stay.
FAILED_LEAVE_CODE = LEAVE_CODES[LeaveReason.server_removed]


def closing_events(spec: dict[str, Any], status: dict[str, Any], why: str,
                   now_ms: int | None = None) -> list[dict[str, Any]]:
    """Outbox entries to append to a failing CloudRecording's `status.events`."""
    outbox = list(status.get("events") or [])
    present = {int(e.get("type", -1)) for e in outbox}
    delivered = int((status.get("callbacks") or {}).get("deliveredSeq") or 0)
    seq = max([delivered, *(int(e.get("seq", 0)) for e in outbox)])
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    formats = set(((spec.get("output") or {}).get("formats")) or ["hls"])
    wanted: list[tuple[int, dict[str, Any]]] = [
        (RECORDER_STOP, {"LeaveCode": FAILED_LEAVE_CODE}),
        (UPLOAD_STOP, {"Status": UPLOAD_INCOMPLETE}),
    ]
    if formats & {"mp4", "mp3"}:
        wanted.append((MP4_STOP, {"Status": MP4_ERROR, "FileList": []}))
    wanted.append((RESULT, result_body(spec, status, why)))
    events = []
    for event_type, payload in wanted:
        if event_type in present:
            continue
        seq += 1
        events.append({"seq": seq, "type": event_type, "ts": ts, "payload": payload})
    return events


def result_body(spec: dict[str, Any], status: dict[str, Any], why: str) -> dict[str, Any]:
    """The single-stream function's result (seeds 000/001) from what the status lists: a stored file
    is Status 1, every other one says why the task failed."""
    room = spec.get("room") or {}
    files = []
    for f in status.get("files") or []:
        stored = f.get("status") == "uploaded"
        files.append({"UserId": f.get("userId") or "", "RecordFile": f.get("url") or f.get("fileName") or "",
                      "Status": 1 if stored else 0,
                      "Message": "success" if stored else f"recording failed: {why}"[:4000]})
    return {"SdkAppId": str(room.get("sdkAppId", "")), "RoomId": str(room.get("roomId") or ""),
            "StrRoomId": str(room.get("strRoomId") or ""), "UserId": str(spec.get("recorderUserId") or ""),
            "TaskId": str(status.get("taskId") or ""), "Files": files}
