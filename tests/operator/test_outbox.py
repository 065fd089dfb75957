"""The operator signs only well-formed events of the task: a worker writing an unknown event type or
a forged result body gets it refused, not signed and not sent."""

from __future__ import annotations

import json

import pytest

from capstan.api import CLOUD_RECORDING, STREAM_PUSH
from capstan.api.common import CallbackStatus, TaskEvent
from capstan.operator import callbacks, outbox
from capstan.operator.callbacks import Outcome

ROOM = {"url": "ws://x:7880", "sdkAppId": 1400123456, "roomId": 12345, "credentialsSecretRef": {"name": "lk"}}
STORAGE = {"endpoint": "minio.example:9000", "bucket": "recs", "publicBaseUrl": "https://cdn.example/r"}
SPEC = {"room": ROOM, "recorderUserId": "robot", "output": {"prefix": "rec"}, "storage": STORAGE,
        "callback": {"url": "https://hooks.example/cb", "signingKeySecretRef": {"name": "cb", "key": "key"}}}
STATUS = {"taskId": "task-1"}
PLAYLIST = "1400123456_12345__UserId_s_YWxpY2U.__UserId_e_main_audio.m3u8"
RESULT = {"SdkAppId": "1400123456", "RoomId": "12345", "StrRoomId": "", "UserId": "robot", "TaskId": "task-1",
          "Files": [{"UserId": "alice", "RecordFile": f"rec/task-1/{PLAYLIST}", "Status": 1, "Message": "success"}]}

WELL_FORMED = [
    (301, {"Status": 0}), (302, {"LeaveCode": 99}), (303, {"Status": 0}), (304, {"FileList": PLAYLIST}),
    (305, {"Status": 2}), (306, {"Status": 0}),
    (307, {"FileName": PLAYLIST, "UserId": "alice", "TrackType": "audio", "BeginTimeStamp": 1622186279144}),
    (308, {"Code": "InvalidParameter", "Message": "AccessKey invalid"}), (309, {"Url": "http://img.example/w.png"}),
    (310, {"Status": 0, "FileList": ["a_1.mp4", "a_2.mp4"]}),
    (311, {"Status": 1, "Errmsg": "x", "TencentVod": {"UserId": "123", "TrackType": "audio_video",
                                                       "CacheFile": "x.mp4"}}),
    (312, {"Status": 0}), (0, RESULT),
    (0, {**RESULT, "Files": [{**RESULT["Files"][0], "RecordFile": f"https://cdn.example/r/rec/task-1/{PLAYLIST}"}]}),
    (0, {**RESULT, "Files": [{**RESULT["Files"][0], "RecordFile":
                              f"http://minio.example:9000/recs/rec/task-1/{PLAYLIST}?X-Amz-Signature=ab"}]}),
]


def ev(type_: int, payload: dict, seq: int = 1) -> TaskEvent:
    return TaskEvent(seq=seq, type=type_, ts=1622186275913, payload=payload)


@pytest.mark.parametrize(("type_", "payload"), WELL_FORMED)
def test_the_seed_shapes_are_accepted(type_, payload):
    assert outbox.refusal(CLOUD_RECORDING, SPEC, STATUS, ev(type_, payload)) is None


@pytest.mark.parametrize(("type_", "payload", "why"), [
    (399, {"Status": 0}, "event type 399 is not one a CloudRecording emits"),
    (-1, {}, "event type -1 is not one"),
    (301, {"Status": 0, "Extra": "x"}, "Extra: Extra inputs are not permitted"),
    (301, {"Status": "0"}, "Status: Input should be 0, 1 or 2"),
    (302, {"Status": 0}, "LeaveCode: Field required"),
    (304, {"FileList": "x" * 5000}, "FileList: String should have at most 4096 characters"),
    (0, {"anything": "I want signed"}, "payload does not have the expected shape"),
    (0, {**RESULT, "TaskId": "someone-elses-task"}, "TaskId is not this task's"),
    (0, {**RESULT, "SdkAppId": "1"}, "SdkAppId is not this task's"),
    (0, {**RESULT, "Files": [{**RESULT["Files"][0], "RecordFile": "other/task-2/x.m3u8"}]},
     "is not under the task's prefix 'rec/task-1/'"),
    (0, {**RESULT, "Files": [{**RESULT["Files"][0], "RecordFile": "rec/task-1/../task-2/x.m3u8"}]},
     "is not under the task's prefix"),
    (0, {**RESULT, "Note": "extra"}, "Note: Extra inputs are not permitted"),
    (0, {**RESULT, "Files": [{**RESULT["Files"][0], "RecordFile": f"https://evil.example/rec/task-1/{PLAYLIST}"}]},
     "is not under the task's prefix"),
    (0, {**RESULT, "Files": [{**RESULT["Files"][0], "RecordFile":
                              f"http://minio.example:9000/other/rec/task-1/{PLAYLIST}"}]}, "is not under"),
    (0, {**RESULT, "Files": [{**RESULT["Files"][0], "RecordFile":
                              "https://cdn.example/r/rec/task-1/%2E%2E/task-2/x.mp4"}]}, "is not under"),
])
def test_unknown_types_and_forged_bodies_are_refused(type_, payload, why):
    refusal = outbox.refusal(CLOUD_RECORDING, SPEC, STATUS, ev(type_, payload))
    assert refusal is not None and why in refusal, refusal


def test_kinds_that_emit_nothing_yet_refuse_everything():
    assert outbox.refusal(STREAM_PUSH, SPEC, STATUS, ev(0, RESULT)) == "event type 0 is not one a StreamPush emits"


def test_a_refused_event_is_never_signed_or_sent_and_delivery_goes_on():
    events = [ev(301, {"Status": 0}, 1), ev(0, {"forged": True}, 2), ev(777, {}, 3), ev(302, {"LeaveCode": 0}, 4)]
    status = {**STATUS, "events": [e.model_dump(by_alias=True) for e in events]}
    sent, keys_read = [], []

    def read_key(name, key):
        keys_read.append(name)
        return "k"

    def send(url, body, headers):
        sent.append(json.loads(body))
        return None

    state, attempts = callbacks.deliver_due(CLOUD_RECORDING, SPEC, status, CallbackStatus(), read_key, send, 90)
    assert [b["EventType"] for b in sent] == [301, 302]
    assert [a.outcome for a in attempts] == [Outcome.delivered, Outcome.refused, Outcome.refused, Outcome.delivered]
    assert state.delivered_seq == 4 and state.delivered == 2 and state.failed == 2
    assert attempts[1].error and attempts[1].error.startswith("event 0 (seq 2) refused: event type 0 payload")
    assert attempts[2].error == "event 777 (seq 3) refused: event type 777 is not one a CloudRecording emits"
