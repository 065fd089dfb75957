"""TRTC request bodies and a gateway config shared by the gateway tests."""

from __future__ import annotations

import copy
from typing import Any

from capstan.gateway.config import AppConfig, GatewayConfig, StorageTarget

SDKAPPID = 1400000000


def config(room_url: str = "ws://127.0.0.1:7880", endpoint: str = "127.0.0.1:9000", qps: float = 20,
           admission_wait: float = 0.0) -> GatewayConfig:
    return GatewayConfig(apps={SDKAPPID: AppConfig(SDKAPPID, "livekit", room_url, "room-credentials")},
                         regions={"us-east-1": StorageTarget(endpoint, secure=False)}, qps=qps,
                         admission_wait_seconds=admission_wait)


STORAGE = {"CloudStorage": {"Vendor": 1, "Region": "us-east-1", "Bucket": "recordings",
                            "AccessKey": "bucket-access", "SecretKey": "bucket-secret-key",
                            "FileNamePrefix": ["trtc", "class-7"]}}


def create_single(**extra: Any) -> dict[str, Any]:
    body = {"SdkAppId": SDKAPPID, "RoomId": "1234", "UserId": "robot-1", "UserSig": "a-room-token",
            "RecordParams": {"RecordMode": 1, "MaxIdleTime": 30, "StreamType": 0, "OutputFormat": 1,
                             "SubscribeStreamUserIds": {"SubscribeAudioUserIds": ["alice", "bob"],
                                                        "UnSubscribeVideoUserIds": ["bob"]}},
            "StorageParams": copy.deepcopy(STORAGE)}
    body.update(extra)
    return body


def create_mix(**extra: Any) -> dict[str, Any]:
    body = create_single()
    body["RoomId"], body["RoomIdType"] = "class room 7", 0
    body["RecordParams"] = {"RecordMode": 2, "MaxIdleTime": 60}
    body["MixTranscodeParams"] = {"VideoParams": {"Width": 1280, "Height": 720, "Fps": 15, "BitRate": 1000000,
                                                  "Gop": 2},
                                  "AudioParams": {"SampleRate": 1, "Channel": 2, "BitRate": 64000}}
    body["MixLayoutParams"] = {"MixLayoutMode": 4, "BackGroundColor": "#102030",
                               "MixLayoutList": [{"UserId": "alice", "Top": 0, "Left": 0, "Width": 640,
                                                  "Height": 720, "RenderMode": 2, "ImageLayer": 0},
                                                 {"UserId": "bob", "Top": 0, "Left": 640, "Width": 640,
                                                  "Height": 720, "MediaId": 1, "ImageLayer": 1}],
                               "WaterMarkList": [{"WaterMarkType": 0, "WaterMarkImage": {
                                   "WaterMarkUrl": "http://images.example/logo.png", "Top": 10, "Left": 10,
                                   "Width": 100, "Height": 50}}]}
    body.update(extra)
    return body


def start_ingest(**extra: Any) -> dict[str, Any]:
    body = {"SdkAppId": SDKAPPID, "RoomId": "1234", "UserId": "movie-bot", "UserSig": "a-publisher-token",
            "StreamUrl": "http://media.example/movie.mp4", "RepeatNum": 1}
    body.update(extra)
    return body


def start_web(**extra: Any) -> dict[str, Any]:
    body = {"SdkAppId": SDKAPPID, "RecordUrl": "https://class.example/board", "MaxDurationLimit": 3600,
            "StorageParams": copy.deepcopy(STORAGE), "WebRecordVideoParams": {"Width": 1920, "Height": 1080,
                                                                              "Format": "hls"},
            "RecordId": "class-7"}
    body.update(extra)
    return body
