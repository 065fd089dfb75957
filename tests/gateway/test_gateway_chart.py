"""The chart's gateway, rendered by the real helm (built by the stack): off by default; when enabled, a
Deployment running `python -m capstan.gateway` with its config and keys Secret, a Service, and RBAC that
names only what the gateway does."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from capstan.gateway.config import parse_config
from devstack.stack import binaries
from tests.operator.chart_rbac import CHART, KUBE_VERSION

pytestmark = pytest.mark.stack  # helm is built by the stack (make stack-up)


def render(tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    helm = binaries()["helm"]
    if not helm.exists():
        pytest.fail(f"helm is not built ({helm}): run `make stack-up`", pytrace=False)
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = subprocess.run([str(helm), "template", "x", str(CHART), "--namespace", "capstan-system", "-f",
                          str(values_file), "--kube-version", KUBE_VERSION], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def gateway_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if "gateway" in d["metadata"]["name"]]


def test_off_by_default(tmp_path: Path) -> None:
    assert yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["enabled"] is False
    assert gateway_docs(render(tmp_path, {})) == []


def test_enabled_for_two_namespaces(tmp_path: Path) -> None:
    config = {"apps": [{"sdkAppId": 1400000000, "room": {"backend": "livekit", "url": "ws://livekit:7880",
                                                         "credentialsSecret": "lk"}}],
              "storage": {"vendors": [1], "regions": {"us-east-1": {"endpoint": "minio:9000", "secure": False}}},
              "rateLimit": {"qps": 20}}
    docs = gateway_docs(render(tmp_path, {"gateway": {"enabled": True, "namespaces": ["team-a", "team-b"],
                                                      "config": config}}))
    kinds = sorted((d["kind"], d["metadata"].get("namespace")) for d in docs)
    assert kinds == sorted([("ConfigMap", "capstan-system"), ("Deployment", "capstan-system"),
                            ("Service", "capstan-system"), ("ServiceAccount", "capstan-system"),
                            ("Role", "capstan-system"), ("RoleBinding", "capstan-system"),
                            ("Role", "team-a"), ("RoleBinding", "team-a"), ("Role", "team-b"),
                            ("RoleBinding", "team-b")])
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert parse_config(cm["data"]["gateway.yaml"]).apps[1400000000].room_url == "ws://livekit:7880"
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "capstan.gateway"]
    assert "--keys-secret=capstan-system/trtc-gateway-keys" in container["args"]
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    keys_role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "capstan-system")
    assert keys_role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                                   "resourceNames": ["trtc-gateway-keys"], "verbs": ["get"]}]
    task_role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "team-a")
    assert {tuple(r["resources"]): tuple(r["verbs"]) for r in task_role["rules"]} == {
        ("cloudrecordings", "webrecordings", "streampushes"): ("get", "list", "create", "patch", "delete"),
        ("secrets",): ("create", "patch", "delete")}


def test_enabled_for_every_namespace_is_a_cluster_role(tmp_path: Path) -> None:
    docs = gateway_docs(render(tmp_path, {"gateway": {"enabled": True}}))
    assert {"ClusterRole", "ClusterRoleBinding"} <= {d["kind"] for d in docs}
