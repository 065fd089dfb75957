"""The Helm chart's RBAC on the local API server, and the operator run with exactly those rights:
`helm template` renders the chart, its ServiceAccount, (Cluster)Roles, bindings and peering objects
are applied, and the operator gets a kubeconfig with that ServiceAccount's token (TokenRequest),
not the admin's."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devstack.harness import ROOT, OperatorProcess

CHART = ROOT / "charts" / "capstan"
KUBE_VERSION = "1.34.4"  # the stack's API server (helm template would otherwise assume 1.20)
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "KopfPeering",
              "ClusterKopfPeering")


def render(helm: str, release: str, namespace: str, values: dict[str, Any], chart: Path = CHART) -> list[dict]:
    """The chart's objects as `helm template` renders them with `values`."""
    values_file = Path(f"/tmp/{release}-values.yaml")
    values_file.write_text(yaml.safe_dump(values))
    out = subprocess.run([helm, "template", release, str(chart), "--namespace", namespace, "-f", str(values_file),
                          "--kube-version", KUBE_VERSION],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def install_peering_crds(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    for crd in yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text()):
        if crd:
            with contextlib.suppress(ApiException):
                ext.create_custom_resource_definition(crd, _request_timeout=30)


class ChartRbac:
    """The chart's RBAC applied for one release whose ServiceAccount lives in its own namespace."""

    def __init__(self, api: client.ApiClient, stack: Any, watch: list[str], tmp: Path) -> None:
        self.api, self.stack, self.watch, self.tmp = api, stack, watch, tmp
        self.release = f"rbac{uuid.uuid4().hex[:6]}"
        self.namespace = f"{self.release}-system"
        self.objects: list[dict] = []

    def apply(self, chart: Path = CHART) -> ChartRbac:
        core, rbac = client.CoreV1Api(self.api), client.RbacAuthorizationV1Api(self.api)
        core.create_namespace({"metadata": {"name": self.namespace, "labels": {"capstan-test": "1"}}},
                              _request_timeout=30)
        install_peering_crds(self.api)
        docs = render(self.stack.helm, self.release, self.namespace, {"watchNamespaces": self.watch}, chart)
        self.objects = [d for d in docs if d["kind"] in RBAC_KINDS]
        custom = client.CustomObjectsApi(self.api)
        for obj in self.objects:
            kind, ns = obj["kind"], obj["metadata"].get("namespace")
            if kind == "ServiceAccount":
                core.create_namespaced_service_account(ns, obj, _request_timeout=30)
            elif kind == "ClusterRole":
                rbac.create_cluster_role(obj, _request_timeout=30)
            elif kind == "ClusterRoleBinding":
                rbac.create_cluster_role_binding(obj, _request_timeout=30)
            elif kind == "Role":
                rbac.create_namespaced_role(ns, obj, _request_timeout=30)
            elif kind == "RoleBinding":
                rbac.create_namespaced_role_binding(ns, obj, _request_timeout=30)
            elif kind == "KopfPeering":
                custom.create_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", obj, _request_timeout=30)
            elif kind == "ClusterKopfPeering":
                continue  # cluster-wide runs here are standalone: the cluster's peering object is shared
        return self

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def kubeconfig(self) -> str:
        """A kubeconfig carrying a TokenRequest token of the chart's ServiceAccount."""
        (sa,) = self.of_kind("ServiceAccount")
        token = client.CoreV1Api(self.api).create_namespaced_service_account_token(
            sa["metadata"]["name"], self.namespace, {"spec": {"expirationSeconds": 3600}},
            _request_timeout=30).status.token
        user = f"system:serviceaccount:{self.namespace}:{sa['metadata']['name']}"
        config = {"apiVersion": "v1", "kind": "Config",
                  "clusters": [{"name": "devstack", "cluster": {"server": self.stack.apiserver_url,
                                                                "certificate-authority": self.stack.ca_file}}],
                  "users": [{"name": user, "user": {"token": token}}],
                  "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": user}}],
                  "current-context": "devstack"}
        path = self.tmp / f"{self.release}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    def remove(self) -> None:
        rbac = client.RbacAuthorizationV1Api(self.api)
        for obj in self.objects:
            with contextlib.suppress(ApiException):
                if obj["kind"] == "ClusterRole":
                    rbac.delete_cluster_role(obj["metadata"]["name"], _request_timeout=30)
                elif obj["kind"] == "ClusterRoleBinding":
                    rbac.delete_cluster_role_binding(obj["metadata"]["name"], _request_timeout=30)
        with contextlib.suppress(ApiException):
            client.CoreV1Api(self.api).delete_namespace(self.namespace, _request_timeout=30)


class ChartOperator(OperatorProcess):
    """The operator as the chart runs it: with peering (a priority, no --standalone) when it watches
    namespaces; standalone for a cluster-wide ClusterRole (the tests share one API server)."""

    def __init__(self, namespace: str, env: dict[str, str], log_path: Path, peering: bool) -> None:
        super().__init__(namespace, env, log_path)
        self.peering = peering

    def start(self) -> None:
        args = [sys.executable, "-m", "capstan.operator", "--namespace", str(self.namespace)]
        args += ["--priority=100"] if self.peering else ["--standalone"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


# HTTP 403 as the kubernetes client and kopf print it; not the milliseconds of a log timestamp (",403").
_HTTP_403 = re.compile(r"(?<![,.\d])403(?!\d)")


def forbidden_lines(log: str) -> list[str]:
    """Lines where the API server refused the operator something."""
    return [line for line in log.splitlines()
            if _HTTP_403.search(line) or "Forbidden" in line or "forbidden" in line]
