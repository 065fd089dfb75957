"""Operator settings, from the environment (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from capstan.net.urlpolicy import UrlPolicy
from capstan.operator.defaults import TaskDefaults

PREFIX = "capstan.dev"
FINALIZER = f"{PREFIX}/finalizer"
LABEL_TASK = f"{PREFIX}/task"
LABEL_KIND = f"{PREFIX}/kind"
LABEL_ATTEMPT = f"{PREFIX}/attempt"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
# What a worker Pod may use unless the chart says otherwise (workerResources). The spool is on the
# task's PVC; ephemeral storage holds /tmp and the downloads of the final transcode.
DEFAULT_WORKER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
    "limits": {"memory": "2Gi", "ephemeral-storage": "10Gi"},
}
MAX_FAILOVERS = 3  # ha1_..ha3_ (seed 002)
WORKER_IMAGE_ENV = {"recorder": "CAPSTAN_WORKER_IMAGE_RECORDER", "pusher": "CAPSTAN_WORKER_IMAGE_PUSHER",
                    "panorama": "CAPSTAN_WORKER_IMAGE_PANORAMA"}


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class OperatorConfig:
    """What an operator admin can tune. Defaults are seed 002's limits."""

    max_tasks: int = 100
    queue_policy: str = "queue"  # "queue": wait in phase normal; "refuse": fail at once
    max_failovers: int = 3
    worker_image: str = "ghcr.io/capstan-dev/capstan-worker:0.1.0"
    worker_python: str = "python"
    stop_grace_seconds: int = 120
    # Deleting a task waits this long for its worker's final upload (storage down) before the worker,
    # its spool and whatever still waits there are removed.
    delete_upload_bound_seconds: int = 3600
    # The per-task spool (segments not yet stored and the uploader's journal) is a PVC every attempt
    # mounts; its size and StorageClass ("" = the cluster default).
    spool_size: str = "10Gi"
    spool_storage_class: str = ""
    # A worker Pod Pending longer than this (image pull, unschedulable) fails its task and frees its slot.
    pending_timeout_seconds: int = 300
    reconcile_interval: float = 30.0  # the safety-net resync; Pod and task events drive everything else
    callback_timeout: float = 5.0
    callback_give_up_seconds: float = 90.0
    worker_env: dict[str, str] = field(default_factory=dict)
    worker_images: dict[str, str] = field(default_factory=dict)  # per worker: recorder, pusher, panorama
    # Requests/limits per worker ("default", or a worker's name: recorder, pusher, panorama).
    worker_resources: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": DEFAULT_WORKER_RESOURCES})
    worker_uid: int = 10001  # the non-root user worker containers run as (the images' user)
    worker_metrics_port: int = 9090  # each worker Pod serves /metrics here (the chart's PodMonitor); 0: off
    url_policy: UrlPolicy = field(default_factory=UrlPolicy)  # what tenant URLs may reach
    # Room server and storage for tasks that name none (CAPSTAN_DEFAULT_ROOM_*, CAPSTAN_DEFAULT_STORAGE_*).
    defaults: TaskDefaults = field(default_factory=TaskDefaults)

    def image_for(self, worker: str) -> str:
        """Each worker kind has its own image (panorama carries Chromium); one image may serve all."""
        return self.worker_images.get(worker, self.worker_image)

    def resources_for(self, worker: str) -> dict[str, Any]:
        return self.worker_resources.get(worker) or self.worker_resources.get("default") or DEFAULT_WORKER_RESOURCES

    @classmethod
    def from_env(cls) -> OperatorConfig:
        policy = os.environ.get("CAPSTAN_QUEUE_POLICY", "queue")
        if policy not in ("queue", "refuse"):
            raise ValueError(f"CAPSTAN_QUEUE_POLICY must be queue or refuse, not {policy!r}")
        # Extra env given to every worker (e.g. log level), as CAPSTAN_WORKER_ENV_<NAME>=value.
        worker_env = {k.removeprefix("CAPSTAN_WORKER_ENV_"): v for k, v in os.environ.items()
                      if k.startswith("CAPSTAN_WORKER_ENV_")}
        max_failovers = _int("CAPSTAN_MAX_FAILOVERS", 3)
        if not 0 <= max_failovers <= MAX_FAILOVERS:
            # seed 002 names recovered files ha1_..ha3_ only: a 4th failover would make names nothing reads
            raise ValueError(f"CAPSTAN_MAX_FAILOVERS must be 0..{MAX_FAILOVERS}, not {max_failovers}")
        return cls(
            max_tasks=_int("CAPSTAN_MAX_TASKS", 100),
            queue_policy=policy,
            max_failovers=max_failovers,
            worker_image=os.environ.get("CAPSTAN_WORKER_IMAGE", cls.worker_image),
            worker_python=os.environ.get("CAPSTAN_WORKER_PYTHON", "python"),
            stop_grace_seconds=_int("CAPSTAN_STOP_GRACE_SECONDS", 120),
            delete_upload_bound_seconds=_int("CAPSTAN_DELETE_UPLOAD_BOUND_SECONDS", 3600),
            spool_size=os.environ.get("CAPSTAN_SPOOL_SIZE", "10Gi"),
            spool_storage_class=os.environ.get("CAPSTAN_SPOOL_STORAGE_CLASS", ""),
            pending_timeout_seconds=_int("CAPSTAN_PENDING_TIMEOUT_SECONDS", 300),
            reconcile_interval=float(os.environ.get("CAPSTAN_RECONCILE_INTERVAL", "30")),
            callback_timeout=float(os.environ.get("CAPSTAN_CALLBACK_TIMEOUT", "5.0")),
            callback_give_up_seconds=float(os.environ.get("CAPSTAN_CALLBACK_GIVE_UP_SECONDS", "90")),
            worker_env=worker_env,
            worker_images={w: os.environ[var] for w, var in WORKER_IMAGE_ENV.items() if os.environ.get(var)},
            worker_resources=_worker_resources(os.environ.get("CAPSTAN_WORKER_RESOURCES")),
            worker_uid=_int("CAPSTAN_WORKER_UID", 10001),
            worker_metrics_port=_int("CAPSTAN_WORKER_METRICS_PORT", 9090),
            url_policy=UrlPolicy.from_env(),
            defaults=TaskDefaults.from_env(),
        )


def _worker_resources(value: str | None) -> dict[str, dict[str, Any]]:
    """CAPSTAN_WORKER_RESOURCES: JSON {"default": {requests, limits}, "recorder": {...}, ...}."""
    if not value:
        return {"default": DEFAULT_WORKER_RESOURCES}
    parsed = json.loads(value)
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise ValueError("CAPSTAN_WORKER_RESOURCES must be a JSON object of {requests, limits} per worker")
    return {"default": DEFAULT_WORKER_RESOURCES, **parsed}
