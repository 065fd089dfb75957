"""Kubernetes adapter of the operator: idempotent child creation, lookups, cleanup.

Every call has a timeout. Creation treats 409 (already exists) as success, deletion treats 404
as success: the operator may repeat any step after a restart.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from capstan.api import GROUP, VERSION, KindInfo
from capstan.operator import children, worker_env
from capstan.operator.config import LABEL_TASK

TIMEOUT = 10
# HTTP connections kept to the API server: at least kopf's handler threads (execution.max_workers)
# plus the callback dispatcher, the admission, children and backlog pools (reconcile.state). The
# client's default (5 per CPU) made a burst of handlers open and
# throw away a TLS connection per request once the pool was full.
CONNECTION_POOL_SIZE = 256
log = logging.getLogger(__name__)


@cache
def client() -> kubernetes.client.ApiClient:
    """In-cluster config inside a Pod, else KUBECONFIG."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # KUBECONFIG read now, not when the kubernetes package was imported
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    configuration = kubernetes.client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    return kubernetes.client.ApiClient(configuration)


def core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(client())


def rbac() -> kubernetes.client.RbacAuthorizationV1Api:
    return kubernetes.client.RbacAuthorizationV1Api(client())


def warm() -> None:
    """Import the client's API modules now: the kubernetes package imports them on first use, and
    CoreV1Api's alone took 0.7 CPU s, under the import lock, at the first admission of a burst."""
    core(), rbac(), custom()


def _create(fn, namespace: str, obj: dict[str, Any]) -> bool:
    """Create; True if created now, False if it was already there. The answer is not turned into
    the client's model objects (nothing reads it, and that costs more CPU than the request)."""
    try:
        answer = fn(namespace, obj, _request_timeout=TIMEOUT, _preload_content=False)
        answer.read()  # drained, so the connection goes back to the pool
        answer.release_conn()
        return True
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise


def _delete(fn, name: str, namespace: str, **kwargs: Any) -> None:
    try:
        fn(name, namespace, _request_timeout=TIMEOUT, **kwargs)
    except ApiException as exc:
        if exc.status != 404:
            raise


def ensure_service_account(info: KindInfo, body: dict[str, Any]) -> None:
    """The worker's identity (before its Pod: ServiceAccount admission refuses a Pod without it)."""
    _create(core().create_namespaced_service_account, body["metadata"]["namespace"],
            children.service_account(info, body))


def ensure_role(info: KindInfo, body: dict[str, Any]) -> None:
    _create(rbac().create_namespaced_role, body["metadata"]["namespace"], children.role(info, body))


def ensure_role_binding(info: KindInfo, body: dict[str, Any]) -> None:
    """After its Role: RBAC refuses a binding to rules it cannot see (the operator has no `bind`)."""
    _create(rbac().create_namespaced_role_binding, body["metadata"]["namespace"], children.role_binding(info, body))


def ensure_spool(claim: dict[str, Any]) -> None:
    """The task's spool PVC (before its first Pod; every later attempt mounts the same one)."""
    _create(core().create_namespaced_persistent_volume_claim, claim["metadata"]["namespace"], claim)


def delete_spool(info: KindInfo, namespace: str, task: str) -> None:
    _delete(core().delete_namespaced_persistent_volume_claim, children.spool_claim_name(info, task), namespace)


def create_secret(secret: dict[str, Any]) -> bool:
    """Create the per-task Secret; False if it is there already (`replace_secret` then)."""
    return _create(core().create_namespaced_secret, secret["metadata"]["namespace"], secret)


def replace_secret(secret: dict[str, Any]) -> None:
    """Replace the per-task Secret's data (each attempt gets a fresh token)."""
    ns, name = secret["metadata"]["namespace"], secret["metadata"]["name"]
    core().replace_namespaced_secret(name, ns, secret, _request_timeout=TIMEOUT)  # type: ignore[arg-type]


def create_pod(pod: dict[str, Any]) -> bool:
    return _create(core().create_namespaced_pod, pod["metadata"]["namespace"], pod)


def read_pod(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        pod = core().read_namespaced_pod(name, namespace, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return client().sanitize_for_serialization(pod)


def delete_pod(namespace: str, name: str, grace_seconds: int | None = None) -> None:
    kwargs = {} if grace_seconds is None else {"grace_period_seconds": grace_seconds}
    _delete(core().delete_namespaced_pod, name, namespace, **kwargs)


def task_pods(info: KindInfo, namespace: str, task: str) -> list[dict[str, Any]]:
    pods = core().list_namespaced_pod(namespace, label_selector=f"{LABEL_TASK}={children.task_label_value(task)}",
                                      _request_timeout=TIMEOUT)
    return [client().sanitize_for_serialization(p) for p in pods.items]


def delete_children(info: KindInfo, namespace: str, task: str) -> None:
    """Remove everything the task created. Owner references would do this in a cluster with a
    garbage collector; doing it ourselves keeps correctness independent of one."""
    for pod in task_pods(info, namespace, task):
        delete_pod(namespace, pod["metadata"]["name"], grace_seconds=0)
    delete_spool(info, namespace, task)
    sa = children.service_account_name(info, task)
    _delete(core().delete_namespaced_secret, worker_env.token_secret_name(info, task), namespace)
    _delete(rbac().delete_namespaced_role_binding, sa, namespace)
    _delete(rbac().delete_namespaced_role, sa, namespace)
    _delete(core().delete_namespaced_service_account, sa, namespace)


def custom() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client())


def read_task(info: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(custom().get_namespaced_custom_object(  # type: ignore[call-overload]
            GROUP, VERSION, namespace, info.plural, name, _request_timeout=TIMEOUT))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def add_finalizer(info: KindInfo, body: dict[str, Any], finalizer: str) -> bool:
    """Put `finalizer` on the task seen as `body`, unless it is there; False if the task is being
    deleted or gone (a deleted object takes no new finalizer: start nothing for it).

    A JSON patch conditional on the finalizers seen, not on the resourceVersion (the worker writes the
    status meanwhile): no other finalizer is lost or doubled (kopf may add the same one from the
    watch event of the admission write). On a conflict it reads again."""
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    for _ in range(5):
        if meta.get("deletionTimestamp"):
            return False
        present = list(meta.get("finalizers") or [])
        if finalizer in present:
            return True
        patch: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/finalizers", "value": present},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}] if present else [
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}]
        try:
            answer: Any = custom().patch_namespaced_custom_object(
                GROUP, VERSION, ns, info.plural, name, patch, _content_type="application/json-patch+json",
                _request_timeout=TIMEOUT, _preload_content=False)
            answer.read()
            answer.release_conn()
            return True
        except ApiException as exc:
            if exc.status not in (409, 422):
                raise
        fresh = read_task(info, ns, name)
        if fresh is None:
            return False
        meta = fresh["metadata"]
    raise RuntimeError(f"{ns}/{name}: its finalizers changed under 5 patches in a row")


def patch_task_status(info: KindInfo, namespace: str, name: str, status: dict[str, Any],
                      resource_version: str | None = None) -> dict[str, Any]:
    """Merge-patch the task's status; the object after the write.

    With `resource_version` the write happens only on that exact version of the object (409
    otherwise): a decision made on an older view than the API server's is never written.
    """
    body: dict[str, Any] = {"status": status}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    return dict(custom().patch_namespaced_custom_object_status(  # type: ignore[call-overload]
        GROUP, VERSION, namespace, info.plural, name, body, _request_timeout=TIMEOUT))


def read_secret_key(namespace: str, name: str, key: str, _read: Callable[[str], Any] | None = None) -> str:
    """One key of a Secret that opted in to Capstan (label capstan.dev/use: "true"), decoded.

    Raises SecretNotFound / SecretNotOptedIn (one message for both) or KeyError naming the key.
    Every Secret a task names is read through here, so the opt-in covers every reference.
    """
    secret = (_read or (lambda n: _get_secret(namespace, n)))(name)
    labels = (secret.metadata.labels if secret.metadata else None) or {}
    if labels.get(worker_env.SECRET_OPT_IN_LABEL) != "true":
        raise worker_env.SecretNotOptedIn(worker_env.unavailable_message(namespace, name))
    data = secret.data or {}
    if key not in data:
        raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
    try:
        return base64.b64decode(data[key]).decode()
    except UnicodeDecodeError:
        # a KeyError like a missing key: the task fails naming the field, instead of every reconcile raising
        raise KeyError(f"Secret {namespace}/{name} key {key!r} is not UTF-8 text") from None


def _get_secret(namespace: str, name: str) -> Any:
    try:
        return core().read_namespaced_secret(name, namespace, _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            raise worker_env.SecretNotFound(worker_env.unavailable_message(namespace, name)) from None
        raise


# A Secret read for one attempt serves the attempts started within this many seconds too: a burst
# of admissions naming the same credentials (one room server, one bucket) reads them once, not
# once per task before each task's first write (issue 11). A rotated Secret is seen after it.
SECRET_REUSE_SECONDS = 3.0
_recent_secrets: dict[tuple[str, str], tuple[float, Any]] = {}
_recent_lock = threading.Lock()


def secret_reader(namespace: str) -> Callable[[str, str], str]:
    """`read_secret_key` for one piece of work (starting an attempt): each Secret is fetched once
    however many of its keys are read (it was one GET per key), and reused for a few seconds
    (`SECRET_REUSE_SECONDS`). A missing one is not remembered."""
    fetched: dict[str, Any] = {}

    def fetch(name: str) -> Any:
        if name not in fetched:
            now = time.monotonic()
            with _recent_lock:
                recent = _recent_secrets.get((namespace, name))
            if recent is not None and now - recent[0] < SECRET_REUSE_SECONDS:
                fetched[name] = recent[1]
            else:
                fetched[name] = _get_secret(namespace, name)
                with _recent_lock:
                    _recent_secrets[(namespace, name)] = (now, fetched[name])
                    for key in [k for k, (at, _) in _recent_secrets.items() if now - at >= SECRET_REUSE_SECONDS]:
                        del _recent_secrets[key]
        return fetched[name]

    return lambda name, key: read_secret_key(namespace, name, key, fetch)
