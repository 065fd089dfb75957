from __future__ import annotations

from datetime import timedelta

from capstan.media import naming, playlist
from capstan.merge.discovery import discover

START = naming.parse_utc("20240501100000000")


def names(user: str = "u", ha: int = 0) -> tuple[str, str, str]:
    first = naming.single_segment_name(1400000001, "room-a", user, "main", "audio", START, ha=ha)
    second = naming.single_segment_name(1400000001, "room-a", user, "main", "audio",
                                        START + timedelta(seconds=2), ha=ha)
    return naming.single_playlist_name(1400000001, "room-a", user, "main", "audio", ha=ha), first, second


def test_finds_segments_recursively_and_ignores_strays(tmp_path):
    (tmp_path / "task").mkdir()
    _, first, second = names()
    _, ha_first, _ = names(ha=2)
    for name in (first, second, ha_first):
        (tmp_path / "task" / name).write_bytes(b"")
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / naming.mixed_segment_name(1400000001, 7, START)).write_bytes(b"")
    found = discover(tmp_path)
    assert sorted(s.name.ha for s in found.segments) == [0, 0, 2]
    assert {s.name.room_id for s in found.segments} == {"room-a"}
    assert len(found.ignored) == 2


def test_playlist_reports_missing_and_places_renamed_files(tmp_path):
    playlist_name, first, second = names()
    (tmp_path / first).write_bytes(b"")
    (tmp_path / "renamed.ts").write_bytes(b"")
    text = playlist.render(playlist.Playlist(
        entries=[playlist.PlaylistEntry(2.0, first), playlist.PlaylistEntry(2.0, "renamed.ts"),
                 playlist.PlaylistEntry(2.0, second)],
        start_rec_time_ms=naming.unix_ms(START), ended=True))
    (tmp_path / playlist_name).write_text(text)
    found = discover(tmp_path)
    assert found.missing == [str(tmp_path / second)]
    by_path = {s.path: s.name for s in found.segments}
    renamed = by_path[str(tmp_path / "renamed.ts")]
    assert renamed.start == START + timedelta(seconds=2)
    assert renamed.user_id == "u"
    assert renamed.kind is naming.FileKind.SEGMENT
    assert str(tmp_path / "renamed.ts") not in found.ignored


def test_bad_playlist_is_reported(tmp_path):
    playlist_name, _, _ = names()
    (tmp_path / playlist_name).write_text("garbage")
    found = discover(tmp_path)
    assert found.bad_playlists and found.bad_playlists[0][0] == str(tmp_path / playlist_name)
