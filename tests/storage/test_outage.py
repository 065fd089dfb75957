"""A storage outage of over a minute while an HLS writer keeps closing segments (the issue: "a storage
outage of a minute loses nothing"): a private MinIO is first frozen for 5 s (SIGSTOP: connections hang,
only timeouts notice), then killed and kept down for 60 s (connections refused) while 0.5 s segments
keep closing, and restarted on the same port and data dir. Every segment and the final playlist end up
stored with their sizes, none is lost, the spool is empty at the end and on_error was raised."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from capstan.media import playlist
from capstan.media.pipeline.encoding import AudioEncoding
from capstan.recorder.hls import HlsOutput, HlsTrackWriter, StreamNames
from capstan.storage.uploader import Uploader
from tests.recorder.frames import tone_frames
from tests.storage.conftest import fast_client
from tests.storage.minio_proc import MinioProcess

FREEZE_SECONDS = 5.0
DOWN_SECONDS = 60.0  # the minute, with the server process gone


def test_segments_survive_a_storage_outage(private_minio: MinioProcess, tmp_path: Path) -> None:
    client = fast_client(private_minio.endpoint)
    private_minio.make_bucket(client, "rec")
    errors: list[tuple[str, str]] = []
    up = Uploader(client, "rec", tmp_path / "spool", on_error=lambda c, m: errors.append((c, m)),
                  min_backoff=0.2, max_backoff=2.0, error_interval=3.0)
    names = StreamNames.single(1400000001, 1234, "alice", "main", "audio")
    writer = HlsTrackWriter(names, HlsOutput(tmp_path / "work", up, segment_seconds=0.5, key_prefix="rec",
                                             task_id="task-1"), AudioEncoding(48000, 1, 64000))
    stop = threading.Event()

    def produce() -> None:  # a live anchor: 20 ms of tone every 20 ms, capture time = now
        started = time.time()
        for frame, offset in tone_frames(0.0, 180.0, hz=440, chunk=960):
            if stop.is_set():
                break
            delay = started + offset - time.time()
            if delay > 0:
                time.sleep(delay)
            writer.write(frame, started + offset)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(1.5)
        private_minio.pause()  # hung server: only timeouts notice
        time.sleep(FREEZE_SECONDS)
        during_freeze = len(up.pending())
        closed_before_kill = len(writer.segments)
        private_minio.kill()  # dead server: connections refused
        down_since = time.monotonic()
        time.sleep(DOWN_SECONDS)
        waiting = len(up.pending())
        closed_while_down = len(writer.segments) - closed_before_kill
        private_minio.start()  # same port, same data dir
        down = time.monotonic() - down_since
        time.sleep(1.5)
    finally:
        stop.set()
        producer.join()
    segments = writer.close()
    t0 = time.monotonic()
    assert up.close(60), f"still pending: {up.pending()[:5]}"
    drained = time.monotonic() - t0
    print(f"outage: {len(segments)} segments, {during_freeze} files waiting after the freeze, {waiting} before "
          f"the restart ({closed_while_down} segments closed in {down:.1f} s down); drained {drained:.1f} s after "
          f"close; failures={up.stats.failures} superseded playlists={up.stats.superseded} "
          f"errors={[e[0] for e in errors]}")
    assert down >= DOWN_SECONDS
    assert closed_while_down >= 100  # 0.5 s segments kept closing the whole minute
    assert waiting > closed_while_down  # all of them (and the frozen part's) still in the spool
    assert errors and {e[0] for e in errors} == {"NetworkError"}
    stored = {o.object_name for o in client.list_objects("rec", prefix="rec/task-1/", recursive=True)}  # type: ignore[attr-defined]
    assert stored == {s.key for s in segments} | {writer.playlist_key}
    for segment in segments:
        assert client.stat_object("rec", segment.key).size == segment.size  # type: ignore[attr-defined]
    text = client.get_object("rec", writer.playlist_key).read().decode()  # type: ignore[attr-defined]
    listed = playlist.parse(text)
    assert listed.ended and [e.uri for e in listed.entries] == [s.name for s in segments]
    assert not list((tmp_path / "work").glob("*.ts"))
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [".journal"]
    assert not list((tmp_path / "spool" / ".journal").iterdir())
