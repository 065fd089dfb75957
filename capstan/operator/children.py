"""Builders (pure) for a task's child objects: Pod, ServiceAccount, Role, RoleBinding.

Names are deterministic so creation is idempotent (a 409 means it is already there) and an
operator restart finds the same children. Each worker gets its own ServiceAccount whose Role
names exactly its own resource: a worker can never read or write another task.
"""

from __future__ import annotations

import hashlib
from typing import Any

from capstan.api import GROUP, VERSION, KindInfo
from capstan.operator.config import LABEL_ATTEMPT, LABEL_KIND, LABEL_MANAGED, LABEL_TASK, OperatorConfig


def _dns_name(*parts: str, limit: int = 63) -> str:
    name = "-".join(p for p in parts if p)
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def service_account_name(info: KindInfo, name: str) -> str:
    return _dns_name(name, info.short_names[0], "worker")


def pod_name(info: KindInfo, name: str, attempt: int) -> str:
    return _dns_name(name, info.short_names[0], f"a{attempt}")


def spool_claim_name(info: KindInfo, name: str) -> str:
    return _dns_name(name, info.short_names[0], "spool")


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def task_label_value(name: str) -> str:
    """The task label's value: a label value is at most 63 characters, a resource name up to 253."""
    return _dns_name(name)


def owning_task(meta: Any) -> str:
    """The name of the task a child belongs to: its controller's (the task label of a name over 63
    characters is a shortened one, which finds no task)."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref["name"])
    return str(meta["labels"][LABEL_TASK])


def task_labels(info: KindInfo, name: str) -> dict[str, str]:
    return {LABEL_TASK: task_label_value(name), LABEL_KIND: info.plural, LABEL_MANAGED: "capstan"}


def _meta(info: KindInfo, body: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": task_labels(info, body["metadata"]["name"]),
        "ownerReferences": [owner_reference(body)],
    }


def service_account(info: KindInfo, body: dict[str, Any]) -> dict[str, Any]:
    sa = service_account_name(info, body["metadata"]["name"])
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(info, body, sa)}


def role(info: KindInfo, body: dict[str, Any]) -> dict[str, Any]:
    """Get/watch its own resource, patch its own status — nothing else (no `update`: a worker
    never replaces its object; what it writes to status is checked before the operator signs it)."""
    name = body["metadata"]["name"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(info, body, service_account_name(info, name)),
        "rules": [
            {"apiGroups": [GROUP], "resources": [info.plural], "resourceNames": [name],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": [GROUP], "resources": [f"{info.plural}/status"], "resourceNames": [name],
             "verbs": ["patch"]},
        ],
    }


def role_binding(info: KindInfo, body: dict[str, Any]) -> dict[str, Any]:
    sa = service_account_name(info, body["metadata"]["name"])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(info, body, sa),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": body["metadata"]["namespace"]}],
    }


def spool_claim(info: KindInfo, body: dict[str, Any], config: OperatorConfig) -> dict[str, Any]:
    """The task's spool: one volume every attempt mounts at /work, so a failover resumes the uploads
    (and the journal) the dead attempt left. Owned by the task; removed with it."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": config.spool_size}}}
    if config.spool_storage_class:
        spec["storageClassName"] = config.spool_storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _meta(info, body, spool_claim_name(info, body["metadata"]["name"])), "spec": spec}


def secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}


# The operator Deployment's hardening, for the Pods that decode untrusted media: the `restricted`
# Pod Security Standard (non-root, no privilege escalation, no capabilities, RuntimeDefault
# seccomp) plus a read-only root filesystem; /work and /tmp are the only writable places.
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod_security_context(uid: int) -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def worker_pod(info: KindInfo, body: dict[str, Any], attempt: int, config: OperatorConfig,
               extra_env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The worker Pod of one attempt. restartPolicy Never: the operator itself runs failover attempts,
    so each attempt is a distinct Pod with its own `ha<n>_` file names."""
    name = body["metadata"]["name"]
    status = body.get("status") or {}
    meta = _meta(info, body, pod_name(info, name, attempt))
    meta["labels"][LABEL_ATTEMPT] = str(attempt)
    env = [
        {"name": "CAPSTAN_KIND", "value": info.plural},
        {"name": "CAPSTAN_NAME", "value": name},
        {"name": "CAPSTAN_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "CAPSTAN_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "CAPSTAN_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "CAPSTAN_TASK_ID", "value": str(status.get("taskId", ""))},
        {"name": "CAPSTAN_ATTEMPT", "value": str(attempt)},
        {"name": "CAPSTAN_WORK_DIR", "value": "/work"},
        # how long a SIGTERM without stop (drain, eviction) may spend storing the spool before exit
        {"name": "CAPSTAN_STOP_GRACE_SECONDS", "value": str(config.stop_grace_seconds)},
        {"name": "HOME", "value": "/tmp"},  # the root filesystem is read-only; caches go to the tmp volume
        {"name": "CAPSTAN_METRICS_PORT", "value": str(config.worker_metrics_port)},
        *[{"name": k, "value": v} for k, v in sorted(config.worker_env.items())],
        *(extra_env or []),
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "serviceAccountName": service_account_name(info, name),
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": config.stop_grace_seconds,
            "securityContext": pod_security_context(config.worker_uid),
            "containers": [{
                "name": info.worker,
                "image": config.image_for(info.worker),
                "command": [config.worker_python, "-m", "capstan.worker", info.worker],
                "env": env,
                "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "tmp", "mountPath": "/tmp"}],
                "resources": config.resources_for(info.worker),
                **({"ports": [{"name": "metrics", "containerPort": config.worker_metrics_port, "protocol": "TCP"}]}
                   if config.worker_metrics_port else {}),
                "securityContext": CONTAINER_SECURITY_CONTEXT,
            }],
            "volumes": [{"name": "work", "persistentVolumeClaim": {"claimName": spool_claim_name(info, name)}},
                        {"name": "tmp", "emptyDir": {}}],
        },
    }
