"""A storage outage of ~10 s while files keep arriving: a private MinIO is first frozen
(SIGSTOP: connections hang, only timeouts notice) and then killed (connections refused), and
restarted on the same port and data dir. Every file ends up stored, none is lost, the spool
is empty at the end and on_error was raised."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from capstan.storage.uploader import Uploader
from tests.storage.conftest import fast_client
from tests.storage.minio_proc import MinioProcess


def test_files_survive_a_storage_outage(private_minio: MinioProcess, tmp_path: Path) -> None:
    client = fast_client(private_minio.endpoint)
    client.make_bucket("rec")  # type: ignore[attr-defined]
    errors: list[tuple[str, str]] = []
    up = Uploader(client, "rec", tmp_path / "spool", on_error=lambda c, m: errors.append((c, m)),
                  min_backoff=0.2, max_backoff=2.0, error_interval=3.0)
    work = tmp_path / "work"
    work.mkdir()
    digests: dict[str, str] = {}
    stop = threading.Event()

    def produce() -> None:  # a segment every 0.25 s and the playlist after it, like the recorder
        i = 0
        while not stop.is_set():
            data = hashlib.sha256(str(i).encode()).digest() * 600
            path = work / f"seg{i:04d}.ts"
            path.write_bytes(data)
            digests[f"t/seg{i:04d}.ts"] = hashlib.sha256(data).hexdigest()
            up.put(path, f"t/seg{i:04d}.ts", "video/mp2t")
            up.put_bytes(f"#EXTM3U\n# {i + 1} segments\n".encode(), "t/list.m3u8")
            i += 1
            time.sleep(0.25)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(1.5)
        private_minio.pause()  # hung server
        time.sleep(5)
        during_freeze = len(up.pending())
        private_minio.kill()  # dead server
        time.sleep(5)
        waiting = len(up.pending())
        private_minio.start()
        time.sleep(1.5)
    finally:
        stop.set()
        producer.join()
    t0 = time.monotonic()
    assert up.close(60), f"still pending: {up.pending()[:5]}"
    drained = time.monotonic() - t0
    print(f"outage: {len(digests)} segments, {during_freeze} waiting after the freeze, {waiting} before "
          f"restart; drained {drained:.1f} s after; failures={up.stats.failures} errors={errors[:3]}")
    assert waiting > 20
    assert {e[0] for e in errors} <= {"NetworkError"} and errors
    stored = {o.object_name for o in client.list_objects("rec", prefix="t/", recursive=True)}  # type: ignore[attr-defined]
    assert stored == set(digests) | {"t/list.m3u8"}
    for key, digest in digests.items():
        body = client.get_object("rec", key)  # type: ignore[attr-defined]
        assert hashlib.sha256(body.read()).hexdigest() == digest
        body.close()
        body.release_conn()
    playlist = client.get_object("rec", "t/list.m3u8").read().decode()  # type: ignore[attr-defined]
    assert f"# {len(digests)} segments" in playlist
    assert not list(work.iterdir())
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [".journal"]
    assert not list((tmp_path / "spool" / ".journal").iterdir())
