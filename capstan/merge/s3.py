"""Fetch recording files under an ``s3://bucket/prefix`` into a local directory.

Beyond seed 002 (which merges a local directory): recordings land in S3, so the merge command
can read them there directly. Endpoint and keys come from S3_ENDPOINT, S3_ACCESS_KEY,
S3_SECRET_KEY and S3_SECURE, like every other Capstan component.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from capstan.media.naming import FileKind, parse_name
from capstan.storage import client as storage_client
from capstan.storage.client import CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS


class S3Error(Exception):
    """Anything that stops the download: bad URL, missing settings, server or network errors."""


def is_s3_url(text: str) -> bool:
    return text.startswith("s3://")


def parse_s3_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise S3Error(f"not an s3://bucket/prefix URL: {url!r}")
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parsed.netloc, prefix


def client_from_env(env: Mapping[str, str] = os.environ) -> Any:
    """The merge command reads many objects in one go, so its client retries inside urllib3."""
    try:
        return storage_client.client_from_env(
            env, connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS, retries=3)
    except storage_client.StorageConfigError as exc:
        raise S3Error(str(exc)) from exc


def download_recordings(client: Any, url: str, dest: str | os.PathLike[str]) -> list[Path]:
    """Download the single-stream playlists and segments under the prefix; skip everything else.

    Keys keep their path below the prefix (so two task ids cannot collide); keys that would
    escape ``dest`` are refused.
    """
    bucket, prefix = parse_s3_url(url)
    root = Path(dest).resolve()
    fetched: list[Path] = []
    try:
        for obj in client.list_objects(bucket, prefix=prefix, recursive=True):
            key = obj.object_name
            if obj.is_dir or not _wanted(key):
                continue
            relative = PurePosixPath(key[len(prefix):])
            target = (root / relative).resolve()
            if root not in target.parents:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            client.fget_object(bucket, key, str(target))
            fetched.append(target)
    except S3Error:
        raise
    except Exception as exc:  # minio raises S3Error/ServerError, urllib3 its own; report one way
        raise S3Error(f"cannot read {url}: {exc}") from exc
    return fetched


def _wanted(key: str) -> bool:
    try:
        name = parse_name(key)
    except ValueError:
        return False
    return name.single_stream and name.kind in (FileKind.SEGMENT, FileKind.PLAYLIST)
