"""The file ledger: what status.files lists, when 307/304 are due, what the result says per file."""

from __future__ import annotations

from capstan.recorder.ledger import FAILED, PENDING, UPLOADED, FileLedger, KeptFile

PLAYLIST = KeptFile("rec/t/1_2__UserId_s_YQ..__UserId_e_main_audio.m3u8", "a", "audio", None, 1000)
MP4 = KeptFile("rec/t/1_2__UserId_s_YQ..__UserId_e_main_1.mp4", "a", "audio_video", "main", 1000, size=10)


def test_a_playlist_is_announced_once_it_is_stored() -> None:
    ledger = FileLedger(keep_hls=True)
    assert ledger.playlist(PLAYLIST) == []  # handed over, not stored: nothing to say yet
    assert [f.status for f in ledger.files()] == [PENDING]
    [announced] = ledger.stored(PLAYLIST.key, 300)
    assert announced.first and announced.file.stored
    assert ledger.stored(PLAYLIST.key, 310) == []  # later versions: announced already
    assert [f.status for f in ledger.files()] == [UPLOADED]


def test_a_playlist_stored_before_it_is_registered_is_announced_at_once() -> None:
    ledger = FileLedger(keep_hls=True)
    other = KeptFile(PLAYLIST.key.replace("audio", "video"), "a", "video", None, 1000)
    assert ledger.stored(other.key, 10) == []
    ledger.playlist(PLAYLIST)
    assert [a.first for a in ledger.stored(PLAYLIST.key, 10)] == [True]
    assert [a.first for a in ledger.playlist(other)] == [False]  # 304 only for the first


def test_without_hls_nothing_of_it_is_listed_or_announced() -> None:
    ledger = FileLedger(keep_hls=False)
    assert ledger.playlist(PLAYLIST) == [] and ledger.stored(PLAYLIST.key, 1) == []
    ledger.add(MP4)
    assert [f.key for f in ledger.files()] == [MP4.key]


def test_files_still_waiting_say_why() -> None:
    ledger = FileLedger(keep_hls=True)
    ledger.playlist(PLAYLIST)
    ledger.stored(PLAYLIST.key, 1)
    ledger.add(MP4)
    ledger.waiting([MP4.key, PLAYLIST.key], "write to storage failed: NetworkError: refused")
    assert {f.key: (f.status, f.result_message()) for f in ledger.files()} == {
        PLAYLIST.key: (FAILED, "write to storage failed: NetworkError: refused"),
        MP4.key: (FAILED, "write to storage failed: NetworkError: refused")}
    ledger.stored(MP4.key, 99)  # stored later after all
    [mp4] = [f for f in ledger.files() if f.key == MP4.key]
    assert (mp4.status, mp4.size, mp4.result_message()) == (UPLOADED, 99, "success")
    assert mp4.to_status("http://x/y")["url"] == "http://x/y"
