from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from capstan.storage.client import S3Settings, make_client
from tests.storage.minio_proc import MinioProcess


@pytest.fixture
def private_minio(stack, tmp_path: Path) -> Iterator[MinioProcess]:
    """A MinIO of this test's own (the stack built the binary), which the test may stop and restart."""
    server = MinioProcess(tmp_path / "minio")
    if not server.binary.exists():
        pytest.fail(f"MinIO binary not built: {server.binary} (run `make stack-up`)", pytrace=False)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def fast_client(endpoint: str) -> object:
    """Short timeouts so a hung server is noticed within a test's patience."""
    from devstack.stack import S3_ACCESS_KEY, S3_SECRET_KEY

    settings = S3Settings(endpoint=endpoint, secure=False, region="us-east-1",
                          access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY)
    return make_client(settings, connect_timeout=1.0, read_timeout=2.0)
