"""TRTC requests -> Capstan specs and Secrets, status -> TRTC answers; every unsupported field is
refused by name. Pure: no I/O."""

from __future__ import annotations

import copy
import json

import pytest

from capstan.api.common import TASK_ID_ANNOTATION
from capstan.gateway import errors, ingest, mapping, recording, scf, webrecord
from capstan.gateway.errors import ApiError
from capstan.gateway.mapping import Names

from .requests import SDKAPPID, config, create_mix, create_single, start_ingest, start_web

NAMES = Names("0f7d9522-a1a3-4517-b5ad-7a6eca000001")


def refused(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as err:
        fn(*args)
    return err.value


def test_single_stream_recording_spec_and_secrets() -> None:
    plan = recording.plan_cloud_recording(create_single(), config(), NAMES)
    spec = plan.spec
    assert plan.plural == "cloudrecordings" and plan.sdk_app_id == SDKAPPID
    assert spec["room"] == {"backend": "livekit", "url": "ws://127.0.0.1:7880", "sdkAppId": SDKAPPID,
                            "roomId": 1234, "credentialsSecretRef": {"name": "room-credentials"}}
    assert spec["recorderUserId"] == "robot-1" and spec["recordMode"] == "single"
    assert spec["streamType"] == "audioVideo" and spec["maxIdleTime"] == 30
    assert spec["subscribe"] == {"audioAllow": ["alice", "bob"], "audioDeny": [], "videoAllow": [],
                                 "videoDeny": ["bob"]}
    assert spec["output"] == {"formats": ["hls", "mp4"], "prefix": "trtc/class-7"}
    assert spec["storage"] == {"endpoint": "127.0.0.1:9000", "bucket": "recordings", "region": "us-east-1",
                               "secure": False, "credentialsSecretRef": {"name": f"trtc-{NAMES.task_id}-storage"}}
    assert spec["recorderTokenSecretRef"] == {"name": f"trtc-{NAMES.task_id}-usersig", "key": "token"}
    # credentials only in Secrets, never in the spec
    assert plan.secrets == {f"trtc-{NAMES.task_id}-storage": {"accessKey": "bucket-access",
                                                               "secretKey": "bucket-secret-key"},
                            f"trtc-{NAMES.task_id}-usersig": {"token": "a-room-token"}}
    text = json.dumps(plan.body())
    assert "bucket-secret-key" not in text and "a-room-token" not in text and "bucket-access" not in text
    body = plan.body()
    assert body["metadata"]["name"] == f"trtc-{NAMES.task_id}"
    assert body["metadata"]["annotations"] == {TASK_ID_ANNOTATION: NAMES.task_id}
    assert body["metadata"]["labels"][mapping.SDK_APP_ID_LABEL] == str(SDKAPPID)
    for secret in plan.secret_bodies():
        assert secret["metadata"]["labels"]["capstan.dev/use"] == "true"


def test_mixed_recording_layout_transcode_and_watermarks() -> None:
    spec = recording.plan_cloud_recording(create_mix(), config(), NAMES).spec
    assert spec["room"]["strRoomId"] == "class room 7" and "roomId" not in spec["room"]
    assert spec["recordMode"] == "mix" and spec["maxIdleTime"] == 60
    assert spec["video"] == {"width": 1280, "height": 720, "fps": 15, "bitrate": 1000000, "gop": 2}
    assert spec["audio"] == {"sampleRate": 48000, "channels": 2, "bitrate": 64000}
    layout = spec["mixLayout"]
    assert layout["mode"] == "custom" and layout["backgroundColor"] == "#102030"
    assert layout["regions"] == [
        {"userId": "alice", "top": 0, "left": 0, "width": 640, "height": 720, "mediaId": "main",
         "renderMode": "fit", "zOrder": 1},
        {"userId": "bob", "top": 0, "left": 640, "width": 640, "height": 720, "mediaId": "aux",
         "renderMode": "crop", "zOrder": 2}]
    assert spec["watermarks"] == [{"url": "http://images.example/logo.png", "top": 10, "left": 10, "width": 100,
                                   "height": 50}]


@pytest.mark.parametrize(("mode", "ours"), [(1, "floating"), (2, "screenShare"), (3, "grid")])
def test_every_template_layout_mode(mode: int, ours: str) -> None:
    body = create_mix()
    body["MixLayoutParams"] = {"MixLayoutMode": mode, "MaxResolutionUserId": "alice"}
    layout = recording.plan_cloud_recording(body, config(), NAMES).spec["mixLayout"]
    assert layout == {"mode": ours, "mainUserId": "alice", "regions": [], "backgroundColor": "#000000"}


@pytest.mark.parametrize(("path", "value", "named"), [
    (("StorageParams", "CloudVod"), {"TencentVod": {"Procedure": "p"}}, "StorageParams.CloudVod"),
    (("RecordParams", "AvMerge"), 1, "RecordParams.AvMerge"),
    (("RecordParams", "OutputFormat"), 2, "RecordParams.OutputFormat=2"),
    (("RecordParams", "OutputFormat"), 3, "RecordParams.OutputFormat=3"),
    (("RecordParams", "MediaId"), 1, "RecordParams.MediaId"),
    (("RecordParams", "FillType"), 0, "RecordParams.FillType"),
    (("RecordParams", "SubscribeAbility"), 1, "RecordParams.SubscribeAbility"),
    (("PrivateMapKey",), "abc", "PrivateMapKey"),
    (("SomethingNew",), 1, "SomethingNew"),
    (("StorageParams", "CloudStorage", "Vendor"), 0, "StorageParams.CloudStorage.Vendor=0"),
    (("RecordParams", "SubscribeStreamUserIds", "SubscribeAudioUserIds"), ["1.*$"],
     "RecordParams.SubscribeStreamUserIds.SubscribeAudioUserIds[0]"),
])
def test_unsupported_fields_are_refused_by_name(path: tuple[str, ...], value: object, named: str) -> None:
    body = create_single()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    err = refused(recording.plan_cloud_recording, body, config(), NAMES)
    assert err.code == errors.INVALID and err.message.startswith(named), err.message


@pytest.mark.parametrize(("change", "named"), [
    ({"PlaceHolderMode": 1}, "MixLayoutParams.PlaceHolderMode"),
    ({"PureAudioDisableLayout": True}, "MixLayoutParams.PureAudioDisableLayout"),
    ({"MaxResolutionUserAlign": 1}, "MixLayoutParams.MaxResolutionUserAlign"),
    ({"MixLayoutMode": 5}, "MixLayoutParams.MixLayoutMode=5"),
    ({"WaterMarkList": [{"WaterMarkType": 1, "WaterMarkChar": {"Chars": "hi"}}]},
     "MixLayoutParams.WaterMarkList[0].WaterMarkType=1"),
])
def test_unsupported_layout_fields_are_refused_by_name(change: dict, named: str) -> None:
    body = create_mix()
    body["MixLayoutParams"].update(change)
    err = refused(recording.plan_cloud_recording, body, config(), NAMES)
    assert err.message.startswith(named), err.message


def test_region_alpha_and_smart_stretch_refused() -> None:
    body = create_mix()
    body["MixLayoutParams"]["MixLayoutList"][0]["Alpha"] = 128
    assert refused(recording.plan_cloud_recording, body, config(), NAMES).message.startswith(
        "MixLayoutParams.MixLayoutList[0].Alpha")
    body = create_mix()
    body["MixLayoutParams"]["MixLayoutList"][1]["RenderMode"] = 3
    assert "MixLayoutList[1].RenderMode=3" in refused(recording.plan_cloud_recording, body, config(), NAMES).message


def test_missing_and_invalid_parameters() -> None:
    body = create_single()
    del body["StorageParams"]
    err = refused(recording.plan_cloud_recording, body, config(), NAMES)
    assert err.code == "MissingParameter.StorageParams"
    body = create_single()
    body["RecordParams"]["MaxIdleTime"] = 2
    err = refused(recording.plan_cloud_recording, body, config(), NAMES)
    assert err.code == "InvalidParameter.MaxIdleTime" and "RecordParams.MaxIdleTime" in err.message
    body = create_single(RoomId="abc")
    assert refused(recording.plan_cloud_recording, body, config(), NAMES).code == "InvalidParameter.RoomId"
    body = create_single(SdkAppId=42)
    assert refused(recording.plan_cloud_recording, body, config(), NAMES).code == "InvalidParameter.SdkAppId"
    body = create_single(MixLayoutParams={"MixLayoutMode": 3})
    assert refused(recording.plan_cloud_recording, body, config(), NAMES).code == "InvalidParameter.MixLayoutParams"
    body = create_single()
    body["StorageParams"]["CloudStorage"]["Region"] = "ap-mars"
    assert refused(recording.plan_cloud_recording, body, config(), NAMES).code == "InvalidParameter.Region"


def test_modify_replaces_subscriptions_and_layout_whole() -> None:
    current = recording.plan_cloud_recording(create_mix(), config(), NAMES).body()
    body = {"SdkAppId": SDKAPPID, "TaskId": NAMES.task_id,
            "SubscribeStreamUserIds": {"SubscribeVideoUserIds": ["carol"]},
            "MixLayoutParams": {"MixLayoutMode": 1, "MaxResolutionUserId": "carol",
                                "WaterMarkList": copy.deepcopy(create_mix()["MixLayoutParams"]["WaterMarkList"])}}
    patch = recording.plan_modify_cloud_recording(body, current)
    assert patch["subscribe"] == {"audioAllow": [], "audioDeny": [], "videoAllow": ["carol"], "videoDeny": []}
    assert patch["mixLayout"] == {"mode": "floating", "mainUserId": "carol", "regions": [],
                                  "backgroundColor": "#000000", "backgroundImageUrl": None}
    del body["MixLayoutParams"]["WaterMarkList"]
    err = refused(recording.plan_modify_cloud_recording, body, current)
    assert err.message.startswith("MixLayoutParams.WaterMarkList")
    single = recording.plan_cloud_recording(create_single(), config(), NAMES).body()
    err = refused(recording.plan_modify_cloud_recording, {"SdkAppId": SDKAPPID, "TaskId": NAMES.task_id,
                                                        "MixLayoutParams": {"MixLayoutMode": 3}}, single)
    assert err.code == "InvalidParameter.MixLayoutParams"


def test_describe_lists_the_m3u8_files_as_the_seed_shows() -> None:
    obj = recording.plan_cloud_recording(create_single(), config(), NAMES).body()
    obj["status"] = {"phase": "recording", "taskId": NAMES.task_id, "files": [
        {"fileName": f"trtc/class-7/{NAMES.task_id}/1400000000_1234__UserId_s_YWxpY2U.__UserId_e_main_audio.m3u8",
         "userId": "alice", "trackType": "audio", "mediaId": "main", "beginTimeStamp": 1622186279144},
        {"fileName": f"trtc/class-7/{NAMES.task_id}/1400000000_1234__UserId_s_YWxpY2U.__UserId_e_main_audio_"
                     "20210528071759144.ts", "userId": "alice", "trackType": "audio"}]}
    assert recording.describe_cloud_recording(obj) == {
        "TaskId": NAMES.task_id, "Status": "InProgress",
        "StorageFileList": [{"UserId": "alice", "TrackType": "audio", "BeginTimeStamp": 1622186279144,
                             "FileName": "1400000000_1234__UserId_s_YWxpY2U.__UserId_e_main_audio.m3u8"}]}
    for phase, status in (("normal", "Idle"), ("idle", "Idle"), ("upload", "Exited"), ("finished", "Exited")):
        obj["status"]["phase"] = phase
        assert recording.describe_cloud_recording(obj)["Status"] == status


def test_stream_ingest_spec() -> None:
    plan = ingest.plan_stream_ingest(start_ingest(), config(), NAMES)
    assert plan.plural == "streampushes"
    assert plan.spec == {"room": {"backend": "livekit", "url": "ws://127.0.0.1:7880", "sdkAppId": SDKAPPID,
                                  "roomId": 1234, "credentialsSecretRef": {"name": "room-credentials"}},
                         "userId": "movie-bot", "videoSrc": "http://media.example/movie.mp4", "mode": "vod",
                         "userTokenSecretRef": {"name": f"trtc-{NAMES.task_id}-usersig", "key": "token"}}
    live = ingest.plan_stream_ingest(start_ingest(StreamUrl="rtmp://live.example/app/s", RepeatNum=None),
                                      config(), NAMES)
    assert live.spec["mode"] == "live"
    assert ingest.plan_stream_ingest(start_ingest(RepeatNum=-1), config(), NAMES).spec["loop"] is True
    for field, value in (("RepeatNum", 3), ("Tempo", 1.5), ("Volume", 50), ("MaxDuration", 10),
                         ("VideoEncodeParams", {"Width": 1}), ("AutoPush", True), ("SeekSecond", 30)):
        err = refused(ingest.plan_stream_ingest, start_ingest(**{field: value}), config(), NAMES)
        assert err.code == errors.INVALID and err.message.startswith(field), err.message
    assert ingest.describe_stream_ingest(None) == {"Status": "NotExist"}
    assert ingest.describe_stream_ingest({"status": {"phase": "pushing"}, "spec": {}}) == {"Status": "InProgress"}
    assert ingest.describe_stream_ingest({"status": {"phase": "finished"}, "spec": {}}) == {"Status": "NotExist"}


def test_web_record_spec() -> None:
    plan = webrecord.plan_web_record(start_web(), config(), NAMES)
    assert plan.plural == "webrecordings" and plan.labels == {mapping.RECORD_ID_LABEL: "class-7"}
    assert plan.spec["recordUrl"] == "https://class.example/board"
    assert plan.spec["width"] == 1920 and plan.spec["height"] == 1080 and plan.spec["maxDurationLimit"] == 3600
    assert plan.spec["output"]["muxer"] == "hls"
    assert plan.spec["output"]["targetDir"] == f"trtc/class-7/{NAMES.task_id}"
    assert plan.spec["output"]["storage"]["credentialsSecretRef"] == {"name": f"trtc-{NAMES.task_id}-storage"}
    err = refused(webrecord.plan_web_record, start_web(MaxDurationLimit=86400), config(), NAMES)
    assert err.message.startswith("MaxDurationLimit=86400")
    err = refused(webrecord.plan_web_record, start_web(PublishCdnParams=[{"PublishCdnUrl": "rtmp://x"}]), config(),
                  NAMES)
    assert err.message.startswith("PublishCdnParams")
    obj = plan.body()
    obj["status"] = {"phase": "recording", "taskId": NAMES.task_id}
    assert webrecord.describe_web_record(obj) == {"Status": 1, "TaskId": NAMES.task_id, "RecordId": "class-7"}


def test_task_ids_that_are_not_ours_are_invalid() -> None:
    assert mapping.resource_name(NAMES.task_id) == f"trtc-{NAMES.task_id}"
    for bad in ("../etc", "x" * 300, "TRTC-abc"):
        assert refused(mapping.resource_name, bad).code == errors.INVALID_TASK_ID
    assert refused(mapping.resource_name, None).code == "MissingParameter.TaskId"


def test_scf_single_stream_recording_body() -> None:
    body = {"SdkAppId": SDKAPPID, "RoomId": 1234, "UserId": "alice", "UserSig": "sig", "Mode": "02",
            "Callback": "http://hooks.example/done",
            "CosConfig": {"SecretId": "ak", "SecretKey": "sk", "Region": "us-east-1", "Bucket": "recordings",
                          "Path": "/test"}}
    plan = scf.plan_recording(body, config(), NAMES)
    spec = plan.spec
    assert spec["recorderUserId"] == "rec-alice" and spec["streamType"] == "audioVideo"
    assert spec["subscribe"] == {"audioAllow": ["alice"], "videoAllow": ["alice"]}
    assert spec["output"] == {"formats": ["hls", "mp4"], "prefix": "test"}
    assert spec["callback"] == {"url": "http://hooks.example/done"}
    assert plan.secrets[f"trtc-{NAMES.task_id}-storage"] == {"accessKey": "ak", "secretKey": "sk"}
    assert scf.plan_recording({**body, "Mode": "00"}, config(), NAMES).spec["output"]["formats"] == ["hls", "mp3"]
    err = refused(scf.plan_recording, {**body, "Mode": "03"}, config(), NAMES)
    assert err.message.startswith("Mode='03'")
    obj = plan.body()
    obj["status"] = {"phase": "finished", "files": [
        {"fileName": "test/x/a.mp4", "userId": "alice", "url": "http://s3/test/x/a.mp4", "status": "uploaded"},
        {"fileName": "test/x/a.m3u8", "userId": "alice"}]}
    result = scf.recording_result(obj)
    assert result["Files"] == [{"UserId": "alice", "RecordFile": "http://s3/test/x/a.mp4", "Status": 1,
                                "Message": "uploaded"}]
    assert result["RoomId"] == "1234" and result["UserId"] == "alice" and result["SdkAppId"] == str(SDKAPPID)


def test_scf_push_body_with_redis() -> None:
    body = {"SdkAppId": SDKAPPID, "StrRoomId": "98915abc", "UserId": "user_55952144", "Mode": "vod",
            "UserSig": "sig", "Redis": True, "RedisHost": "10.0.0.5", "RedisPort": 6379, "RedisPassword": "pw",
            "VideoSrc": "https://test-123456789.example/video/1.mp4"}
    plan = scf.plan_push(body, config(), NAMES)
    assert plan.spec["room"]["strRoomId"] == "98915abc" and plan.spec["resume"] is True
    assert plan.spec["redisSecretRef"] == {"name": f"trtc-{NAMES.task_id}-redis", "key": "url"}
    assert plan.secrets[f"trtc-{NAMES.task_id}-redis"] == {"url": "redis://:pw@10.0.0.5:6379/0"}
    assert "pw" not in json.dumps(plan.body())
    no_redis = scf.plan_push({**body, "Redis": False, "RedisHost": None, "RedisPort": None,
                              "RedisPassword": None}, config(), NAMES)
    assert "resume" not in no_redis.spec and "redisSecretRef" not in no_redis.spec


def test_scf_panoramic_start_body() -> None:
    data = {"RecordURL": "https://web.example/page", "Width": 1280, "Height": 720, "ManualStart": True,
            "CallbackURL": "http://hooks.example/web", "MaxDurationLimit": 21600,
            "Output": {"Cos": {"Bucket": "recordings", "Region": "us-east-1", "TargetDir": "11234/",
                               "TargetName": "record-file-name.mp4", "SecretId": "ak", "SecretKey": "sk"},
                       "Video": {"Muxer": "hls", "EncryptKey": "21834cca41778803e1afba3f41e70c90",
                                 "AuthUrl": "https://keys.example/enc.key"}}}
    plan = scf.plan_web_start(data, config(), NAMES, SDKAPPID)
    out = plan.spec["output"]
    assert plan.spec["manualStart"] is True and out["targetDir"] == "11234" and out["muxer"] == "hls"
    assert out["encryptKeySecretRef"] == {"name": f"trtc-{NAMES.task_id}-encrypt", "key": "key"}
    assert "21834cca" not in json.dumps(plan.body())
    vod = copy.deepcopy(data)
    vod["Output"]["Vod"] = {"MediaInfo": {"MediaName": "test"}}
    assert refused(scf.plan_web_start, vod, config(), NAMES, SDKAPPID).message.startswith("Data.Output.Vod")


def test_user_sig_operator_mode_lets_the_operator_mint_the_token() -> None:
    from dataclasses import replace

    cfg = config()
    cfg = replace(cfg, apps={SDKAPPID: replace(cfg.apps[SDKAPPID], user_sig="operator")})
    plan = recording.plan_cloud_recording(create_single(), cfg, NAMES)
    assert "recorderTokenSecretRef" not in plan.spec and list(plan.secrets) == [f"trtc-{NAMES.task_id}-storage"]
    body = create_single()
    del body["UserSig"]
    assert refused(recording.plan_cloud_recording, body, cfg, NAMES).code == "MissingParameter.UserSig"


def test_config_and_keys_parse() -> None:
    from capstan.gateway.config import ConfigError, parse_config, parse_keys

    cfg = parse_config("""
apps: [{sdkAppId: 1400000000, room: {url: "ws://lk:7880", credentialsSecret: lk}, userSig: operator}]
storage: {vendors: [1], regions: {us-east-1: {endpoint: "minio:9000", secure: false}}, default: {endpoint: s3}}
rateLimit: {qps: 7}
""")
    assert cfg.apps[SDKAPPID].room_backend == "livekit" and cfg.apps[SDKAPPID].user_sig == "operator"
    assert cfg.qps == 7 and cfg.storage_for("us-east-1").endpoint == "minio:9000"
    assert cfg.storage_for("eu-west-1").endpoint == "s3"
    keys = parse_keys({"AKIDa": '{"secretKey": "0123456789abcdef", "namespaces": ["a", "b"], "sdkAppIds": [1]}'})
    assert keys["AKIDa"].home_namespace == "a" and keys["AKIDa"].sdk_app_ids == frozenset({1})
    for bad in ('{"secretKey": "short", "namespaces": ["a"], "sdkAppIds": [1]}',
                '{"secretKey": "0123456789abcdef", "namespaces": [], "sdkAppIds": [1]}', "[1, 2]"):
        with pytest.raises(ConfigError):
            parse_keys({"AKIDb": bad})
