"""capstan-merge reading s3://bucket/prefix: URL and settings handling, a fake client, MinIO."""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from mp4check import tracks
from tsgen import Run, write_audio, write_video

from capstan.media import naming
from capstan.merge import s3 as s3fetch
from capstan.merge.cli import main

SEGMENT = naming.single_segment_name(1, 2, "u", "main", "audio", naming.parse_utc("20240501100000000"))


def test_parse_s3_url():
    assert s3fetch.parse_s3_url("s3://bucket/rec/task") == ("bucket", "rec/task/")
    assert s3fetch.parse_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(s3fetch.S3Error):
        s3fetch.parse_s3_url("http://bucket/x")


def test_client_from_env():
    with pytest.raises(s3fetch.S3Error, match="S3_ENDPOINT"):
        s3fetch.client_from_env({})
    client = s3fetch.client_from_env({"S3_ENDPOINT": "https://minio.example:9000", "S3_ACCESS_KEY": "a",
                                 "S3_SECRET_KEY": "b"})
    assert client._base_url.host == "minio.example:9000"
    assert client._base_url.is_https
    plain = s3fetch.client_from_env({"S3_ENDPOINT": "127.0.0.1:9000", "S3_SECURE": "0"})
    assert not plain._base_url.is_https


@dataclass
class FakeObject:
    object_name: str
    is_dir: bool = False


class FakeClient:
    def __init__(self, keys: list[str]) -> None:
        self.keys, self.fetched = keys, []

    def list_objects(self, bucket, prefix, recursive):
        assert recursive
        return [FakeObject(k) for k in self.keys if k.startswith(prefix)]

    def fget_object(self, bucket, key, path):
        self.fetched.append(key)
        Path(path).write_text(key)


def test_download_keeps_layout_and_skips_strays(tmp_path):
    client = FakeClient([f"rec/t1/{SEGMENT}", f"rec/t2/{SEGMENT}", "rec/t1/notes.txt",
                         f"rec/../{SEGMENT}", f"other/{SEGMENT}"])
    files = s3fetch.download_recordings(client, "s3://b/rec", tmp_path)
    assert sorted(p.relative_to(tmp_path.resolve()).as_posix() for p in files) == [
        f"t1/{SEGMENT}", f"t2/{SEGMENT}"]


def test_download_errors_become_s3_errors(tmp_path):
    class Broken(FakeClient):
        def list_objects(self, *args, **kwargs):
            raise ConnectionError("refused")

    with pytest.raises(s3fetch.S3Error, match="refused"):
        s3fetch.download_recordings(Broken([]), "s3://b/rec", tmp_path)


def test_cli_reports_s3_failure(monkeypatch, tmp_path):
    monkeypatch.delenv("S3_ENDPOINT", raising=False)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["-f", "s3://bucket/rec", "-o", str(tmp_path)]) == 1
    assert "S3_ENDPOINT is not set" in err.getvalue()


@pytest.mark.stack
def test_merge_from_minio(s3: object, bucket: str, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    write_audio(local, "carol", [Run(0, 4)], tone_hz=660)
    write_video(local, "carol", "main", [Run(0, 4)], color=(0, 0, 255), size=(64, 48))
    for path in local.iterdir():
        s3.fput_object(bucket, f"rec/task-9/{path.name}", str(path))  # type: ignore[attr-defined]
    shutil.rmtree(local)
    out = tmp_path / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["-f", f"s3://{bucket}/rec", "-o", str(out)])
    assert code == 0, stderr.getvalue()
    (merged,) = out.glob(f"{naming.encode_id('carol')}_*.mp4")
    assert tracks(merged).video == pytest.approx(4.0, abs=0.1)
