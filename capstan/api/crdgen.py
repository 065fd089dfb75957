"""Generates crds/*.yaml from the pydantic models.

Kubernetes wants *structural* OpenAPI v3 schemas: no `$ref`, `nullable` instead of null types,
no `additionalProperties` beside `properties`, no `title`. This module turns pydantic's JSON
Schema into that shape, keeps descriptions (for `kubectl explain`) and the CEL rules.

Usage: python -m capstan.api.crdgen <out-dir>
"""

from __future__ import annotations

import copy
import inspect
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from capstan.api import GROUP, KINDS, VERSION, KindInfo

_DROP_KEYS = {"title", "additionalProperties", "$defs", "discriminator"}
_MERGE_LIST_KEYS = {"x-kubernetes-validations"}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge sibling keys of a `$ref` into the referenced schema (the field's own keys win)."""
    out = dict(base)
    for key, value in extra.items():
        if key in _MERGE_LIST_KEYS and key in out:
            out[key] = list(out[key]) + [v for v in value if v not in out[key]]
        else:
            out[key] = value
    return out


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        node = _merge(target, node)
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"cannot express anyOf {any_of} structurally")
        node = _merge(_structural(non_null[0], defs), node)
        if len(non_null) < len(any_of):
            node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", "unset") is None:
        del node["default"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items",):
            out[key] = _structural(value, defs)
        elif key == "description":
            out[key] = inspect.cleandoc(value)  # docstrings used as descriptions keep their indentation
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        sample = out["enum"][0]
        out["type"] = "integer" if isinstance(sample, int) else "string"
    if out.get("type") == "object" and "properties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also publish defaults made by a default_factory, so the API server fills them in
    (and CEL rules can rely on lists and nested objects being there)."""

    def default_schema(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            schema = {k: v for k, v in schema.items() if k != "default_factory"}
            value = factory()
            if isinstance(value, BaseModel):  # unset optional fields are left out, not published as null
                value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
            schema["default"] = value
        return super().default_schema(schema)


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's structural OpenAPI v3 schema with camelCase names."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)
    defs = raw.get("$defs", {})
    schema = _structural(raw, defs)
    # A condition or file may carry extra keys written by newer workers: keep them.
    return schema


def _printer_columns(info: KindInfo) -> list[dict[str, Any]]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Task phase."},
        {"name": "Room", "type": "string", "jsonPath": ".status.room", "description": "Room name."},
        {"name": "Mode", "type": "string", "jsonPath": info.mode_path, "description": "Task mode."},
        {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt", "priority": 1,
         "description": "Worker attempt (n>1 means failover)."},
        {"name": "Task", "type": "string", "jsonPath": ".status.taskId", "priority": 1, "description": "Task id."},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1,
         "description": "Latest progress."},
        *info.extra_columns,
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def crd_for(info: KindInfo) -> dict[str, Any]:
    """The CustomResourceDefinition object for one kind."""
    spec_schema = structural_schema(info.spec_model)
    status_schema = structural_schema(info.status_model)
    status_schema.pop("x-kubernetes-validations", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/part-of": "capstan"},
            "annotations": {"capstan.dev/generated-by": "capstan.api.crdgen (do not edit by hand)"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": ["capstan", "all"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": _printer_columns(info),
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": info.description,
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string", "description": "capstan.dev/v1alpha1"},
                        "kind": {"type": "string", "description": info.kind},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": status_schema,
                    },
                }},
            }],
        },
    }


def render(info: KindInfo) -> str:
    header = "# Generated by `make crds` (python -m capstan.api.crdgen) from capstan/api. Do not edit.\n"
    return header + yaml.safe_dump(crd_for(info), sort_keys=False, width=120)


def write_all(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for info in KINDS:
        path = out_dir / f"{GROUP}_{info.plural}.yaml"
        path.write_text(render(info))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "crds")
    for path in write_all(out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
