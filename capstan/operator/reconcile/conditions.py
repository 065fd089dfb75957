"""Kubernetes-style conditions in a status patch (status = phase + conditions + observedGeneration)."""

from __future__ import annotations

import datetime as dt
from typing import Any


def condition(type_: str, status: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    return {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "observedGeneration": generation}


def set_condition(view: dict[str, Any], patch: dict[str, Any], cond: dict[str, Any]) -> None:
    """Replace one condition in `patch` (the list is written whole), keeping its transition time
    when its status did not change; nothing when it is already so."""
    current = list(patch.get("conditions") or view.get("conditions") or [])
    for old in current:
        if old.get("type") == cond["type"]:
            if (old.get("status"), old.get("reason"), old.get("message")) == (
                    cond["status"], cond["reason"], cond["message"]):
                return
            if old.get("status") == cond["status"]:
                cond["lastTransitionTime"] = old.get("lastTransitionTime", cond["lastTransitionTime"])
    patch["conditions"] = [c for c in current if c.get("type") != cond["type"]] + [cond]


def is_true(status: dict[str, Any], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in status.get("conditions") or [])
