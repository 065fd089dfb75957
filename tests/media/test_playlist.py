import pytest

from capstan.media import playlist
from capstan.media.playlist import Playlist, PlaylistEntry

SEED = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-ALLOW-CACHE:NO
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-TARGETDURATION:70
#EXT-X-TRTC-START-REC-TIME:1622425551884
#EXT-X-TRTC-VIDEO-METADATA:WIDTH:1920 HEIGHT:1080
#EXTINF:12.074
1400123456_12345__UserId_s_MTY4NjExOQ..__UserId_e_main_video_20330531094551825.ts
#EXTINF:11.901
1400123456_12345__UserId_s_MTY4NjExOQ..__UserId_e_main_video_20330531094603825.ts
#EXTINF:12.076
1400123456_12345__UserId_s_MTY4NjExOQ..__UserId_e_main_video_20330531094615764.ts
#EXT-X-ENDLIST
"""


def test_seed_example_parses():
    parsed = playlist.parse(SEED)
    assert parsed.start_rec_time_ms == 1622425551884
    assert (parsed.width, parsed.height) == (1920, 1080)
    assert parsed.target_duration == 70
    assert parsed.ended
    assert [e.duration for e in parsed.entries] == [12.074, 11.901, 12.076]
    assert parsed.entries[0].uri.endswith("_main_video_20330531094551825.ts")
    assert parsed.segment_offsets_ms() == [0, 12074, 23975]


def test_seed_example_renders_back_with_rfc_commas():
    rendered = playlist.render(playlist.parse(SEED))
    assert rendered == SEED.replace("#EXTINF:12.074\n", "#EXTINF:12.074,\n").replace(
        "#EXTINF:11.901\n", "#EXTINF:11.901,\n").replace("#EXTINF:12.076\n", "#EXTINF:12.076,\n")
    assert playlist.parse(rendered) == playlist.parse(SEED)


def test_round_trip_live_audio_playlist():
    live = Playlist(entries=[PlaylistEntry(2.0, "a_1.ts"), PlaylistEntry(1.979, "a_2.ts")],
                    start_rec_time_ms=1700000000123, media_sequence=4)
    text = playlist.render(live)
    assert "#EXT-X-ENDLIST" not in text
    assert "VIDEO-METADATA" not in text
    assert "#EXT-X-TARGETDURATION:2\n" in text
    assert playlist.parse(text) == Playlist(entries=live.entries, start_rec_time_ms=1700000000123,
                                            media_sequence=4, target_duration=2)


def test_target_duration_never_below_longest_segment():
    long_segment = Playlist(entries=[PlaylistEntry(12.6, "x.ts")], target_duration=5)
    assert long_segment.effective_target_duration() == 13


def test_lenient_reading():
    text = "\ufeff#EXTM3U\r\n#EXT-X-SOMETHING:1\r\n#EXTINF:1.5,title\r\nx.ts\r\n"
    assert playlist.parse(text).entries == [PlaylistEntry(1.5, "x.ts")]


@pytest.mark.parametrize("text", [
    "",
    "x.ts\n",
    "#EXTM3U\nx.ts\n",
    "#EXTM3U\n#EXTINF:abc,\nx.ts\n",
    "#EXTM3U\n#EXT-X-TRTC-VIDEO-METADATA:1920x1080\n",
    "#EXTM3U\n#EXT-X-TRTC-START-REC-TIME:soon\n",
])
def test_bad_playlists_are_refused(text):
    with pytest.raises(ValueError):
        playlist.parse(text)
