"""Fixtures shared by the suite: the real stack (devstack.pytest_plugin), the CRDs installed in it,
the pod runner playing the kubelet, and the operator run as a real process."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack.harness import OperatorProcess, install_crds, wait_for

pytest_plugins = ["devstack.pytest_plugin"]
__all__ = ["wait_for"]


@pytest.fixture(scope="session")
def crds(kube_api) -> list[str]:
    """The generated CRDs, installed in the real API server."""
    return install_crds(kube_api)


@pytest.fixture(scope="session")
def pod_runner(stack) -> Iterator[Any]:
    from devstack.podrunner import PodRunner
    from devstack.pytest_plugin import SESSION_NAMESPACE_PREFIX

    runner = PodRunner(kubeconfig=stack.kubeconfig, namespace_prefix=SESSION_NAMESPACE_PREFIX)
    runner.start()
    yield runner
    runner.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def operator_factory(request, stack, crds, pod_runner, namespace,
                     tmp_path) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(**settings: str) -> OperatorProcess:
        env = {**os.environ, **stack.env(), "CAPSTAN_METRICS_PORT": "0", "CAPSTAN_RECONCILE_INTERVAL": "1",
               "CAPSTAN_STOP_GRACE_SECONDS": "30", "PYTHONUNBUFFERED": "1",
               # lifecycle tests run workers in base mode (no room server); media tests override it
               "CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE": "base",
               # the tests' callback receivers listen on loopback, which the URL policy refuses by default
               "CAPSTAN_URL_ALLOW_CIDRS": "127.0.0.0/8", **settings}
        op = OperatorProcess(namespace, env, tmp_path / f"operator-{len(started)}.log")
        op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    report = getattr(request.node, "report_call", None)
    test_failed = report is not None and report.failed
    # a failed test shows what its operators said; a passing one only their tracebacks
    failed = [op for op in started if test_failed or "Traceback" in op.log()]
    for op in failed:
        sys.stderr.write(f"--- operator log {op.log_path}\n{op.log()[-4000:]}\n")


@pytest.fixture
def operator(operator_factory) -> OperatorProcess:
    return operator_factory()


@pytest.fixture(params=["livekit", "janus"])
def room_server(request: pytest.FixtureRequest) -> Any:
    """Each room backend of the stack in turn (devstack.rooms.RoomServer); fails when it cannot run."""
    from devstack.rooms import RoomServer

    env = request.getfixturevalue(request.param)  # the `livekit` / `janus` fixture: fails with the reason
    return RoomServer.from_stack(request.param, env)
