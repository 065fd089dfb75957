"""The closing events the operator sends for a CloudRecording whose worker cannot (issue 8 item 7)."""

from __future__ import annotations

from capstan.api import KINDS
from capstan.api.common import TaskEvent
from capstan.operator import outbox
from capstan.operator.closing import closing_events

SPEC = {"room": {"sdkAppId": 1400000000, "roomId": 1234}, "recorderUserId": "robot",
        "output": {"formats": ["hls", "mp4"], "prefix": "rec"}, "storage": {"publicBaseUrl": "http://cdn"}}
FILES = [{"fileName": "rec/t/a.m3u8", "userId": "alice", "status": "uploaded", "url": "http://cdn/rec/t/a.m3u8"},
         {"fileName": "rec/t/b.m3u8", "userId": "bob", "status": "pending"}]
CLOUD = next(k for k in KINDS if k.plural == "cloudrecordings")


def test_a_dead_worker_s_task_gets_302_305_310_and_the_result_with_failure_statuses():
    status = {"taskId": "t", "files": FILES, "events": [{"seq": 4, "type": 307, "ts": 1, "payload": {}}],
              "callbacks": {"deliveredSeq": 3}}
    events = closing_events(SPEC, status, "worker failed after 3 failovers", now_ms=5)
    assert [(e["seq"], e["type"]) for e in events] == [(5, 302), (6, 305), (7, 310), (8, 0)]
    assert events[0]["payload"] == {"LeaveCode": 3} and events[1]["payload"] == {"Status": 1}
    assert events[2]["payload"] == {"Status": 2, "FileList": []}
    result = events[3]["payload"]
    assert result["TaskId"] == "t" and result["UserId"] == "robot" and result["RoomId"] == "1234"
    assert result["Files"] == [
        {"UserId": "alice", "RecordFile": "http://cdn/rec/t/a.m3u8", "Status": 1, "Message": "success"},
        {"UserId": "bob", "RecordFile": "rec/t/b.m3u8", "Status": 0,
         "Message": "recording failed: worker failed after 3 failovers"}]
    for e in events:  # what the operator adds passes its own outbox check
        assert outbox.refusal(CLOUD, SPEC, status, TaskEvent.model_validate(e)) is None


def test_what_the_worker_already_sent_is_not_repeated_and_seq_continues_past_pruned_events():
    status = {"taskId": "t", "events": [{"seq": 9, "type": 302, "ts": 1, "payload": {"LeaveCode": 0}}],
              "callbacks": {"deliveredSeq": 12}}
    events = closing_events({**SPEC, "output": {"formats": ["hls"], "prefix": "rec"}}, status, "x")
    assert [(e["seq"], e["type"]) for e in events] == [(13, 305), (14, 0)]
    assert closing_events(SPEC, {"events": [{"seq": 1, "type": t, "payload": {}} for t in (302, 305, 310, 0)]},
                          "x") == []
