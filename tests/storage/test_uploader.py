"""Uploader: order, replacement of waiting playlist versions, journal resume (fake client);
real uploads and a missing bucket fixed later (stack MinIO)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from capstan.storage.client import S3Settings, StorageConfigError, make_client, settings_from_env
from capstan.storage.uploader import Uploader, describe_error


@dataclass
class Stat:
    size: int


class FakeClient:
    """Stores into a dict; fails while ``down`` is set; can block to simulate a slow upload."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.order: list[str] = []
        self.down = False
        self.gate = threading.Event()
        self.gate.set()

    def fput_object(self, bucket: str, key: str, path: str, content_type: str = "") -> None:
        self.gate.wait(10)
        if self.down:
            raise ConnectionRefusedError("storage down")
        self.objects[key] = Path(path).read_bytes()
        self.order.append(key)

    def stat_object(self, bucket: str, key: str) -> Stat:
        return Stat(len(self.objects[key]))


def _file(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def test_uploads_in_order_and_deletes_only_after_stored(tmp_path: Path) -> None:
    client = FakeClient()
    stored: list[tuple[str, int]] = []
    up = Uploader(client, "b", tmp_path / "spool", on_stored=lambda k, s: stored.append((k, s)))
    files = [_file(tmp_path, f"s{i}.ts", bytes([i]) * (100 + i)) for i in range(5)]
    for i, f in enumerate(files):
        up.put(f, f"task/s{i}.ts", "video/mp2t")
    assert up.flush(10)
    assert client.order == [f"task/s{i}.ts" for i in range(5)]
    assert stored == [(f"task/s{i}.ts", 100 + i) for i in range(5)]
    assert not any(f.exists() for f in files)
    assert not list((tmp_path / "spool" / ".journal").iterdir())
    up.close(1)


def test_outage_keeps_files_and_newest_playlist_wins(tmp_path: Path) -> None:
    client = FakeClient()
    client.down = True
    errors: list[tuple[str, str]] = []
    up = Uploader(client, "b", tmp_path / "spool", on_error=lambda c, m: errors.append((c, m)),
                  min_backoff=0.05, max_backoff=0.2)
    seg = _file(tmp_path, "a.ts", b"x" * 10)
    up.put(seg, "a.ts")
    for version in range(3):
        up.put_bytes(f"playlist {version}".encode(), "a.m3u8", "application/vnd.apple.mpegurl")
    up.put(_file(tmp_path, "b.ts", b"y" * 10), "b.ts")
    up.put_bytes(b"playlist 3", "a.m3u8")
    assert not up.flush(0.5)
    assert seg.exists(), "nothing is deleted before it is stored"
    assert up.pending() == ["a.ts", "b.ts", "a.m3u8"]
    assert errors and errors[0][0] == "NetworkError"
    assert up.stats.superseded == 3
    client.down = False
    assert up.flush(10)
    assert client.order == ["a.ts", "b.ts", "a.m3u8"]
    assert client.objects["a.m3u8"] == b"playlist 3"
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [".journal"]
    up.close(1)


def test_error_reports_are_rate_limited(tmp_path: Path) -> None:
    client = FakeClient()
    client.down = True
    errors: list[str] = []
    up = Uploader(client, "b", tmp_path / "spool", on_error=lambda c, m: errors.append(c),
                  min_backoff=0.01, max_backoff=0.02, error_interval=60)
    up.put(_file(tmp_path, "a.ts", b"x"), "a.ts")
    time.sleep(0.5)
    assert up.stats.failures > 5
    assert errors == ["NetworkError"]
    up.stop()


def test_restart_resumes_from_the_journal(tmp_path: Path) -> None:
    client = FakeClient()
    first = Uploader(client, "b", tmp_path / "spool", start=False)
    first.put(_file(tmp_path, "a.ts", b"a"), "a.ts")
    first.put_bytes(b"v1", "a.m3u8")
    gone = _file(tmp_path, "gone.ts", b"g")
    first.put(gone, "gone.ts")
    gone.unlink()  # as if stored and deleted just before a crash, journal entry left behind
    # the process dies here: nothing was uploaded
    second = Uploader(client, "b", tmp_path / "spool", start=False)
    second.put_bytes(b"v2", "a.m3u8")  # replaces the resumed v1, which never went out
    second.start()
    assert second.flush(10)
    assert client.order == ["a.ts", "a.m3u8"]
    assert client.objects["a.m3u8"] == b"v2"
    second.close(1)


def test_describe_error_uses_the_storage_code() -> None:
    from minio.error import S3Error

    exc = S3Error(None, "NoSuchBucket", "The specified bucket does not exist", "b", "r", "h")
    assert describe_error(exc) == ("NoSuchBucket", "The specified bucket does not exist")
    assert describe_error(TimeoutError("slow"))[0] == "NetworkError"


def test_settings_from_env() -> None:
    with pytest.raises(StorageConfigError):
        settings_from_env({})
    s = settings_from_env({"S3_ENDPOINT": "https://s3.example:9000/", "S3_REGION": "eu-1", "S3_BUCKET": "rec"})
    assert (s.endpoint, s.secure, s.region, s.bucket) == ("s3.example:9000", True, "eu-1", "rec")
    assert not settings_from_env({"S3_ENDPOINT": "127.0.0.1:9000"}).secure
    assert settings_from_env({"S3_ENDPOINT": "http://h:1", "S3_SECURE": "true"}).secure
    client = make_client(S3Settings("127.0.0.1:9", secure=False), connect_timeout=1, read_timeout=2)
    pool = client._http
    assert pool.connection_pool_kw["timeout"].connect_timeout == 1
    assert pool.connection_pool_kw["retries"].total == 0


# --- real MinIO (the stack's) ------------------------------------------------------------------


def test_stores_everything_in_stack_minio(s3: Any, bucket: str, tmp_path: Path) -> None:
    stored: list[str] = []
    up = Uploader(s3, bucket, tmp_path / "spool", on_stored=lambda k, s: stored.append(k))
    digests = {}
    for i in range(4):
        data = bytes(range(256)) * (40 + i)
        digests[f"p/task/seg{i}.ts"] = hashlib.sha256(data).hexdigest()
        up.put(_file(tmp_path, f"seg{i}.ts", data), f"p/task/seg{i}.ts", "video/mp2t")
        up.put_bytes(f"#EXTM3U {i}\n".encode(), "p/task/list.m3u8", "application/vnd.apple.mpegurl")
    assert up.close(30)
    for key, digest in digests.items():
        body = s3.get_object(bucket, key)
        try:
            assert hashlib.sha256(body.read()).hexdigest() == digest
        finally:
            body.close()
            body.release_conn()
    assert s3.stat_object(bucket, "p/task/list.m3u8").content_type == "application/vnd.apple.mpegurl"
    assert stored[-1] == "p/task/list.m3u8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool"]
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [".journal"]


def test_missing_bucket_is_reported_and_retried(s3: Any, bucket: str, tmp_path: Path) -> None:
    late = bucket[:55] + "-late"
    errors: list[tuple[str, str]] = []
    up = Uploader(s3, late, tmp_path / "spool", on_error=lambda c, m: errors.append((c, m)),
                  min_backoff=0.1, max_backoff=0.3)
    seg = _file(tmp_path, "a.ts", b"z" * 1000)
    up.put(seg, "a.ts")
    try:
        assert not up.flush(1.0)
        assert errors[0][0] == "NoSuchBucket"
        assert seg.exists()
        s3.make_bucket(late)
        assert up.flush(15)
        assert s3.stat_object(late, "a.ts").size == 1000
        assert not seg.exists()
    finally:
        up.stop()
        with contextlib.suppress(Exception):
            s3.remove_object(late, "a.ts")
            s3.remove_bucket(late)
