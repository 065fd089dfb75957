"""pytest fixtures for the local real stack (DESIGN §9).

Enable with ``pytest_plugins = ["devstack.pytest_plugin"]`` in ``tests/conftest.py``.

Fixtures:

- ``stack`` (session): starts the stack if needed (:func:`devstack.stack.ensure_up`), exports its
  environment (KUBECONFIG, S3_*, REDIS_URL, ...) into ``os.environ`` for the session and returns
  the :class:`devstack.stack.StackEnv`. The stack keeps running after the session.
- ``kube_api``: a ``kubernetes.client.ApiClient`` authenticated as the cluster admin
  (``system:masters``), with a default timeout on every request.
- ``namespace``: a fresh, uniquely named namespace per test, prepared like a real cluster's
  controllers would (``default`` ServiceAccount, ``kube-root-ca.crt`` ConfigMap). Deletion is
  issued at teardown but not awaited (no namespace controller runs, so it stays Terminating).
- ``s3``: a ``minio.Minio`` client for the stack's MinIO; ``bucket``: a fresh bucket per test,
  emptied and removed at teardown.
- ``janus``: the :class:`devstack.stack.StackEnv` once the Janus room server runs (JANUS_URL,
  JANUS_ADMIN_URL, JANUS_ADMIN_SECRET, JANUS_ADMIN_KEY, ROOM_HOST_ADDRESS); the test *fails*
  (not skips) with the reason when Janus cannot run here (e.g. not root: no network namespace).
- ``livekit``: the :class:`devstack.stack.StackEnv` once the LiveKit server runs (LIVEKIT_URL,
  LIVEKIT_API_KEY, LIVEKIT_API_SECRET); fails like ``janus`` when LiveKit cannot run here.

Tests that use any of these are marked ``stack`` automatically, so ``pytest -m 'not stack'``
runs without the stack.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.stack import StackEnv, ensure_up

STACK_FIXTURES = frozenset({"stack", "kube_api", "namespace", "s3", "bucket", "janus", "livekit"})

# This session's namespaces start with this; its pod runner runs only their Pods (another session on
# the same stack -- a pytest-xdist worker, another engineer -- has its own).
SESSION_NAMESPACE_PREFIX = f"t{uuid.uuid4().hex[:4]}-"

# Default (connect, read) timeout for API requests that do not pass their own _request_timeout.
KUBE_TIMEOUT = (5.0, 60.0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stack: needs the local real stack (devstack): kube-apiserver, etcd, MinIO, Redis, Janus, LiveKit",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker(
            "stack"
        ):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackEnv]:
    env = ensure_up()
    saved = {k: os.environ.get(k) for k in env.env()}
    os.environ.update(env.env())
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def janus(stack: StackEnv) -> StackEnv:
    """The stack, with the Janus room server running; fails the test when it cannot run here."""
    if stack.janus_error:
        pytest.fail(f"Janus (room server) is not running: {stack.janus_error}", pytrace=False)
    return stack


@pytest.fixture(scope="session")
def livekit(stack: StackEnv) -> StackEnv:
    """The stack, with the LiveKit server running; fails the test when it cannot run here."""
    if stack.livekit_error:
        pytest.fail(f"LiveKit (room server) is not running: {stack.livekit_error}", pytrace=False)
    if not (stack.livekit_api_key and stack.livekit_api_secret):
        pytest.fail("LiveKit (room server) has no API key and secret yet (run `make stack-up`)", pytrace=False)
    return stack


def new_api_client(kubeconfig: str, timeout: Any = KUBE_TIMEOUT) -> Any:
    """A kubernetes ApiClient from a kubeconfig whose requests time out by default."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=kubeconfig)
    rest = client.rest_client
    request = rest.request

    def request_with_timeout(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return request(*args, _request_timeout=_request_timeout or timeout, **kwargs)

    rest.request = request_with_timeout
    return client


@pytest.fixture(scope="session")
def kube_api(stack: StackEnv) -> Iterator[Any]:
    client = new_api_client(stack.kubeconfig)
    try:
        yield client
    finally:
        client.close()


def prepare_namespace(api_client: Any, name: str) -> None:
    """Do what a real cluster's controllers do for a new namespace (none run in the stack):
    the ``default`` ServiceAccount (the ServiceAccount admission plugin refuses Pods without it)
    and the ``kube-root-ca.crt`` ConfigMap."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    ca_pem = ""
    ca_file = api_client.configuration.ssl_ca_cert
    if ca_file:
        with open(ca_file) as f:
            ca_pem = f.read()
    for create, body in (
        (
            core.create_namespaced_service_account,
            client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default")),
        ),
        (
            core.create_namespaced_config_map,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="kube-root-ca.crt"), data={"ca.crt": ca_pem}
            ),
        ),
    ):
        try:
            create(name, body)
        except ApiException as e:
            if e.status != 409:
                raise


def _unique_name(prefix: str, hint: str, max_len: int) -> str:
    hint = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")
    suffix = uuid.uuid4().hex[:6]
    room = max_len - len(prefix) - len(suffix) - 2
    hint = hint[:room].strip("-")
    return "-".join(p for p in (prefix, hint, suffix) if p)


@pytest.fixture
def namespace(kube_api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    from kubernetes import client

    name = _unique_name(SESSION_NAMESPACE_PREFIX.rstrip("-"), request.node.name.removeprefix("test_"), 63)
    core = client.CoreV1Api(kube_api)
    meta = client.V1ObjectMeta(name=name, labels={"capstan-test": "1"})
    core.create_namespace(client.V1Namespace(metadata=meta))
    prepare_namespace(kube_api, name)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            core.delete_namespace(name)


@pytest.fixture(scope="session")
def s3(stack: StackEnv) -> Any:
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5.0, read=60.0),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(
        stack.s3_endpoint,
        access_key=stack.s3_access_key,
        secret_key=stack.s3_secret_key,
        secure=stack.s3_secure,
        http_client=http,
    )


@pytest.fixture
def bucket(s3: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    from minio.deleteobjects import DeleteObject

    name = _unique_name("t", request.node.name.removeprefix("test_"), 63)
    s3.make_bucket(name)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            objects = [DeleteObject(o.object_name) for o in s3.list_objects(name, recursive=True)]
            for _ in s3.remove_objects(name, objects):
                pass
            s3.remove_bucket(name)
