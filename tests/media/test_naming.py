from datetime import UTC, datetime

import pytest

from capstan.media import naming
from capstan.media.naming import FileKind, MediaId, TrackType

SEED_SEGMENT = "1400123456_12345__UserId_s_MTY4NjExOQ..__UserId_e_main_video_20330531094551825.ts"
START = datetime(2033, 5, 31, 9, 45, 51, 825000, tzinfo=UTC)


def test_seed_segment_parses():
    parsed = naming.parse_name(SEED_SEGMENT)
    assert parsed.kind is FileKind.SEGMENT
    assert parsed.sdkappid == 1400123456
    assert parsed.room_id == 12345
    assert parsed.user_id == "1686119"
    assert parsed.user_id_encoded == "MTY4NjExOQ.."
    assert parsed.media_id is MediaId.MAIN
    assert parsed.track is TrackType.VIDEO
    assert parsed.start == START
    assert parsed.ha == 0
    assert parsed.single_stream


def test_seed_segment_is_rebuilt_exactly():
    name = naming.single_segment_name(1400123456, 12345, "1686119", "main", "video", START)
    assert name == SEED_SEGMENT


@pytest.mark.parametrize("raw", ["1686119", "alice", "bob???", "用户-42", "a", "ab", "x/y=z"])
def test_id_round_trip_and_alphabet(raw):
    encoded = naming.encode_id(raw)
    assert "/" not in encoded and "=" not in encoded and "_" not in encoded
    assert naming.decode_id(encoded) == raw


def test_id_replacements():
    assert naming.encode_id("bob???") == "Ym9iPz8-"
    assert naming.encode_id("alice") == "YWxpY2U."


def test_room_ids():
    assert naming.encode_room_id(12345) == "12345"
    assert naming.decode_room_id("12345") == 12345
    assert naming.encode_room_id("class/7") == naming.encode_id("class/7")
    assert naming.decode_room_id(naming.encode_room_id("class/7")) == "class/7"
    with pytest.raises(ValueError):
        naming.encode_room_id(-1)


def test_decode_rejects_garbage():
    with pytest.raises(ValueError):
        naming.decode_id("not base64!")


def test_utc_round_trip_and_naive_refused():
    assert naming.format_utc(START) == "20330531094551825"
    assert naming.parse_utc("20330531094551825") == START
    assert naming.utc_from_unix_ms(naming.unix_ms(START)) == START
    assert naming.utc_from_unix_ms(1622425551884) == datetime(2021, 5, 31, 1, 45, 51, 884000, tzinfo=UTC)
    with pytest.raises(ValueError):
        naming.format_utc(datetime(2033, 5, 31))


@pytest.mark.parametrize("ha", [0, 1, 2, 3])
@pytest.mark.parametrize("room", [12345, "room/ä=1"])
def test_every_name_round_trips(ha, room):
    single = [
        naming.single_playlist_name(1400000001, room, "u:1", "aux", "audio", ha=ha),
        naming.single_segment_name(1400000001, room, "u:1", "aux", "audio", START, ha=ha),
    ]
    for name in single:
        parsed = naming.parse_name(name)
        assert (parsed.ha, parsed.sdkappid, parsed.room_id) == (ha, 1400000001, room)
        assert (parsed.user_id, parsed.media_id, parsed.track) == ("u:1", MediaId.AUX, TrackType.AUDIO)
    assert naming.parse_name(single[0]).kind is FileKind.PLAYLIST
    assert naming.parse_name(single[1]).start == START

    mixed_pl = naming.parse_name(naming.mixed_playlist_name(1400000001, room, ha=ha))
    assert (mixed_pl.kind, mixed_pl.ha, mixed_pl.room_id) == (FileKind.PLAYLIST, ha, room)
    assert mixed_pl.user_id is None
    mixed_ts = naming.parse_name(naming.mixed_segment_name(1400000001, room, START, ha=ha))
    assert (mixed_ts.kind, mixed_ts.start, mixed_ts.ha) == (FileKind.SEGMENT, START, ha)


def test_ha_prefix_position():
    name = naming.single_playlist_name(1400123456, 12345, "1686119", "main", "video", ha=2)
    assert name == "ha2_1400123456_12345__UserId_s_MTY4NjExOQ..__UserId_e_main_video.m3u8"
    assert naming.mixed_playlist_name(1400123456, 12345, ha=1) == "ha1_1400123456_12345.m3u8"
    with pytest.raises(ValueError):
        naming.mixed_playlist_name(1, 2, ha=4)


def test_mp4_names():
    single = naming.single_mp4_name(1400123456, 12345, "1686119", "main", 2)
    assert single == "1400123456_12345__UserId_s_MTY4NjExOQ..__UserId_e_main_2.mp4"
    parsed = naming.parse_name(single)
    assert (parsed.kind, parsed.index, parsed.track) == (FileKind.MP4, 2, None)
    mixed = naming.mixed_mp4_name(1400123456, 12345)
    assert mixed == "1400123456_12345_1.mp4"
    assert naming.parse_name(mixed).index == 1
    with pytest.raises(ValueError):
        naming.mixed_mp4_name(1, 2, 0)


def test_object_key_and_directories_ignored_by_parser():
    key = naming.object_key(SEED_SEGMENT, prefix="rec/", task_id="task-1")
    assert key == f"rec/task-1/{SEED_SEGMENT}"
    assert naming.object_key("x.ts") == "x.ts"
    assert naming.parse_name(key).start == START


@pytest.mark.parametrize(
    "name",
    [
        "notes.txt",
        "1400123456_12345__UserId_s_MTY4NjExOQ..__UserId_e_main_video.ts",  # segment without utc
        "1400123456_12345__UserId_s_MTY4NjExOQ..__UserId_e_screen_video_20330531094551825.ts",
        "ha4_1400123456_12345.m3u8",
        "ha1_1400123456_12345_1.mp4",
        "1400123456_12345_2033053109455182.ts",  # 16 digits
    ],
)
def test_strays_are_refused(name):
    with pytest.raises(ValueError):
        naming.parse_name(name)


def test_mp3_names_are_built_and_parsed_back() -> None:
    single = naming.single_mp3_name(1400000001, 1234, "alice")
    assert single == "1400000001_1234__UserId_s_YWxpY2U.__UserId_e_main_audio.mp3"
    assert single == naming.single_playlist_name(1400000001, 1234, "alice", "main", "audio").replace(".m3u8", ".mp3")
    parsed = naming.parse_name(f"rec/task/{single}")
    assert (parsed.kind, parsed.user_id, parsed.media_id, parsed.track) == (
        FileKind.MP3, "alice", MediaId.MAIN, TrackType.AUDIO)
    mixed = naming.mixed_mp3_name(1400000001, "room/a=")
    assert naming.parse_name(mixed).kind is FileKind.MP3 and naming.parse_name(mixed).room_id == "room/a="
    for bad in ("ha1_" + single, single.replace("_main_", "_aux_"), single.replace("_audio", "_video"),
                "ha1_" + mixed):
        with pytest.raises(ValueError):
            naming.parse_name(bad)
