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


# Health for GitOps tools, from the phase (docs/gitops.md): Argo CD's Lua check (docs/argocd/health.lua)
# applies the same rules, and these conditions are kstatus's (Flux healthChecks): `Ready`, with
# `Reconciling` while a task is on its way and `Stalled` once it failed.
HEALTHY, PROGRESSING, DEGRADED, SUSPENDED = "Healthy", "Progressing", "Degraded", "Suspended"
_RUNNING = frozenset({"idle", "recording", "pushing"})
_ENDING = frozenset({"transcode", "upload", "callback"})


def health(status: dict[str, Any], generation: int | None) -> tuple[str, str, str]:
    """(health, reason, message) of a task with this status: Healthy while it runs or once it ended as
    asked, Progressing while it is queued, starting or storing its files, Suspended while paused,
    Degraded once it failed (or finished with an error in `result`)."""
    phase = str(status.get("phase") or "")
    result = status.get("result") or {}
    observed = status.get("observedGeneration")
    if not phase:
        return PROGRESSING, "Pending", "the operator has not accepted the task yet"
    if generation is not None and observed is not None and int(observed) < int(generation):
        return PROGRESSING, "SpecChanged", f"the operator has not seen generation {generation} yet"
    if phase == "failed":
        return DEGRADED, "Failed", str(result.get("errorMessage") or status.get("message") or "the task failed")
    if phase == "finished" and result.get("errorCode"):
        return DEGRADED, str(result["errorCode"]), str(result.get("errorMessage") or "")
    if phase in ("finished", "canceled"):
        return HEALTHY, phase.capitalize(), f"the task is {phase}"
    if phase == "paused":
        return SUSPENDED, "Paused", "paused (spec.paused)"
    if phase in _RUNNING:
        return HEALTHY, phase.capitalize(), f"the task is {phase}"  # not status.message: it changes often
    if phase in _ENDING:
        return PROGRESSING, phase.capitalize(), f"storing the results ({phase})"
    if is_true(status, "Queued"):
        return PROGRESSING, "Queued", "waiting for a free place (status.message says which)"
    return PROGRESSING, "Starting", "starting the worker"


def kstatus_conditions(status: dict[str, Any], generation: int | None) -> list[dict[str, Any]]:
    """Ready, Reconciling and Stalled as kstatus reads them (Reconciling True: in progress; Stalled
    True: failed; neither: current), each carrying the generation it describes."""
    state, reason, message = health(status, generation)
    message = message[:1000]
    return [condition("Ready", state == HEALTHY, reason, message, generation),
            condition("Reconciling", state == PROGRESSING, reason, message, generation),
            condition("Stalled", state == DEGRADED, reason, message, generation)]
