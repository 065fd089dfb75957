"""The committed CRDs are exactly what the models generate, and are structural."""

from pathlib import Path

import pytest
import yaml

from capstan.api import KINDS
from capstan.api.common import GROUP
from capstan.api.crdgen import render

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_committed_crd_is_current(info):
    path = CRD_DIR / f"{GROUP}_{info.plural}.yaml"
    assert path.exists(), f"{path} missing: run `make crds`"
    assert path.read_text() == render(info), f"{path.name} is stale: run `make crds` and commit"


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_explained(info):
    crd = yaml.safe_load(render(info))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert node.get("type") != "null", path
        assert not ("additionalProperties" in node and "properties" in node), path
        assert "title" not in node or isinstance(node.get("title"), dict), path
    # every spec field has `kubectl explain` text
    for path, node in _walk(schema["properties"]["spec"]):
        for name, prop in (node.get("properties") or {}).items():
            assert prop.get("description"), f"{path}.properties.{name} has no description"


def test_printer_columns_show_phase_room_mode_age():
    for info in KINDS:
        crd = yaml.safe_load(render(info))
        names = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
        assert names == ["Phase", "Room", "Mode", "Age"]
