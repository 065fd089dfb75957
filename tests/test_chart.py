"""The Helm chart, without helm: its metadata parses, its CRDs are the generated ones, its RBAC names every kind."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from capstan.api import GROUP, KINDS

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "capstan"
KOPF_CRDS = "kopf.dev_peerings.yaml"


def test_chart_and_values_parse():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "capstan"
    assert chart["appVersion"] == "0.1.0"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["maxTasks"] == 100
    assert values["queuePolicy"] == "queue"
    assert values["maxFailovers"] == 3
    assert values["metrics"]["port"] == 8080
    assert values["operator"]["replicas"] == 1
    assert values["watchNamespaces"] == []
    for component in ("operator", "recorder", "pusher", "panorama"):
        assert values["images"][component]["repository"]


def test_chart_crds_equal_generated():
    generated = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    assert generated, "no generated CRDs"
    shipped = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml") if p.name != KOPF_CRDS}
    assert sorted(shipped) == sorted(generated), "chart crds/ and crds/ hold different files"
    for name, content in generated.items():
        assert shipped[name] == content, f"charts/capstan/crds/{name} differs from crds/{name}: copy it again"


def test_chart_ships_kopf_peering_crds():
    docs = [d for d in yaml.safe_load_all((CHART / "crds" / KOPF_CRDS).read_text()) if d]
    by_kind = {d["spec"]["names"]["kind"]: d for d in docs}
    assert set(by_kind) == {"ClusterKopfPeering", "KopfPeering"}
    assert by_kind["ClusterKopfPeering"]["spec"]["scope"] == "Cluster"
    assert by_kind["KopfPeering"]["spec"]["scope"] == "Namespaced"
    for doc in docs:
        assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
        assert doc["spec"]["group"] == "kopf.dev"
        assert doc["metadata"]["name"] == f"{doc['spec']['names']['plural']}.kopf.dev"


def test_cluster_role_names_every_kind():
    text = "".join((CHART / "templates" / f).read_text() for f in ("rbac.yaml", "_helpers.tpl"))
    assert f"apiGroups: [{GROUP}]" in text
    for info in KINDS:
        for resource in (info.plural, f"{info.plural}/status", f"{info.plural}/finalizers"):
            assert re.search(rf"[\[ ,]{re.escape(resource)}[,\]]", text), f"{resource} missing from the ClusterRole"
    for resource in ("clusterkopfpeerings", "kopfpeerings", "roles", "rolebindings", "secrets", "events"):
        assert resource in text


def test_operator_env_is_read_by_the_operator():
    """Every CAPSTAN_* variable the Deployment sets is one the operator reads."""
    template = (CHART / "templates" / "deployment.yaml").read_text()
    names = set(re.findall(r"name: (CAPSTAN_[A-Z_]+)", template))
    assert "CAPSTAN_WORKER_IMAGE" in names
    source = "".join(p.read_text() for d in ("operator", "net") for p in (ROOT / "capstan" / d).glob("*.py"))
    for name in sorted(names):  # CAPSTAN_WORKER_ENV_ is the per-worker env prefix, read as such
        assert f'"{name}' in source, f"{name} is set by the chart but not read by the operator"
