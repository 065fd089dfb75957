"""S3 client construction shared by every Capstan component that talks to object storage.

Settings come from S3_ENDPOINT, S3_SECURE, S3_REGION, S3_ACCESS_KEY, S3_SECRET_KEY and
S3_BUCKET (what the operator puts into a worker's env). Every network call gets a connect and
a read timeout; retries are a caller's decision (the recorder's :class:`~capstan.storage.uploader.
Uploader` retries itself with backoff, so its client does not retry at all inside urllib3).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0
DEFAULT_REGION = "us-east-1"
_TRUE = ("1", "true", "yes", "on")


class StorageConfigError(ValueError):
    """Settings missing or malformed."""


@dataclass(frozen=True)
class S3Settings:
    endpoint: str  # host[:port], no scheme
    secure: bool = True
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    bucket: str | None = None


def parse_endpoint(endpoint: str, secure: bool | None = None, *, default_secure: bool = False) -> tuple[str, bool]:
    """``host:port`` plus whether to use TLS. A URL is tolerated (Minio wants ``host:port``);
    an explicit ``secure`` wins, then the URL's scheme, then ``default_secure``."""
    endpoint = endpoint.strip()
    if not endpoint:
        raise StorageConfigError("S3 endpoint is empty")
    if "://" in endpoint:
        scheme, endpoint = endpoint.split("://", 1)
        if secure is None:
            secure = scheme.lower() == "https"
    return endpoint.rstrip("/"), default_secure if secure is None else secure


def settings_from_env(env: Mapping[str, str] = os.environ) -> S3Settings:
    endpoint = env.get("S3_ENDPOINT", "").strip()
    if not endpoint:
        raise StorageConfigError("S3_ENDPOINT is not set")
    secure_text = env.get("S3_SECURE")
    secure = None if secure_text is None else secure_text.strip().lower() in _TRUE
    host, secure = parse_endpoint(endpoint, secure)
    return S3Settings(
        endpoint=host,
        secure=secure,
        region=env.get("S3_REGION") or None,
        access_key=env.get("S3_ACCESS_KEY"),
        secret_key=env.get("S3_SECRET_KEY"),
        bucket=env.get("S3_BUCKET") or None,
    )


def public_base_url(storage: Any, env: Mapping[str, str] = os.environ) -> str | None:
    """Where the stored objects are public: the task's ``storage.publicBaseUrl``, else the operator's
    (S3_PUBLIC_BASE_URL: set when the task uses the operator's default storage); None: presign."""
    given = getattr(storage, "public_base_url", None) if storage is not None else None
    return given or env.get("S3_PUBLIC_BASE_URL") or None


def http_pool(
    *, connect_timeout: float = CONNECT_TIMEOUT_SECONDS, read_timeout: float = READ_TIMEOUT_SECONDS,
    retries: int = 0, backoff: float = 0.5,
) -> Any:
    """A urllib3 PoolManager with timeouts; ``retries=0`` means one try per call, no hidden loops."""
    import urllib3

    retry = urllib3.Retry(
        total=retries, connect=retries, read=retries, status=retries, redirect=0, backoff_factor=backoff,
        status_forcelist=[500, 502, 503, 504] if retries else [], raise_on_status=False,
    )
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout), retries=retry, maxsize=4,
    )


def make_client(
    settings: S3Settings, *, connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS, retries: int = 0,
) -> Any:
    """A ``minio.Minio`` for ``settings``; the region is passed when known, which also saves the
    bucket-location lookup minio would otherwise make before the first request."""
    from minio import Minio

    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        secure=settings.secure,
        region=settings.region,
        http_client=http_pool(connect_timeout=connect_timeout, read_timeout=read_timeout, retries=retries),
    )


def client_from_env(env: Mapping[str, str] = os.environ, **kwargs: Any) -> Any:
    return make_client(settings_from_env(env), **kwargs)
