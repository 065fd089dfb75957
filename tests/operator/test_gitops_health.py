"""GitOps health: the Argo CD Lua check (docs/argocd/health.lua, run by Debian's lua5.4 the way Argo CD
runs it: a global `obj`, a returned {status, message}) and the operator's kstatus conditions (Ready,
Reconciling, Stalled, observedGeneration) give the documented health for a status of every phase of
every kind, and agree with each other."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from capstan.api import KINDS
from capstan.operator.reconcile.conditions import health, kstatus_conditions

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "argocd" / "health.lua"
ARGOCD_CM = ROOT / "docs" / "argocd" / "argocd-cm.yaml"
ADMITTED = [{"type": "Admitted", "status": "True"}]
QUEUED = [{"type": "Queued", "status": "True"}, {"type": "Admitted", "status": "False"}]

# (name, kinds it applies to (None: all), status, generation, expected health)
SAMPLES: list[tuple[str, set[str] | None, dict[str, Any] | None, int, str]] = [
    ("no status yet", None, None, 1, "Progressing"),
    ("empty status", None, {}, 1, "Progressing"),
    ("normal, queued", None, {"phase": "normal", "taskId": "t", "conditions": QUEUED,
                              "message": "waiting for a free place: 3 in queue"}, 1, "Progressing"),
    ("normal, admitted, starting", None, {"phase": "normal", "taskId": "t", "conditions": ADMITTED}, 1,
     "Progressing"),
    ("idle", {"CloudRecording", "WebRecording"}, {"phase": "idle", "conditions": ADMITTED}, 1, "Healthy"),
    ("recording", {"CloudRecording", "WebRecording"}, {"phase": "recording", "conditions": ADMITTED,
                                                       "message": "recording 2 streams"}, 1, "Healthy"),
    ("pushing", {"StreamPush"}, {"phase": "pushing", "conditions": ADMITTED}, 1, "Healthy"),
    ("paused", {"WebRecording"}, {"phase": "paused", "conditions": ADMITTED}, 2, "Suspended"),
    ("transcode", {"CloudRecording"}, {"phase": "transcode"}, 1, "Progressing"),
    ("upload", None, {"phase": "upload"}, 1, "Progressing"),
    ("callback", None, {"phase": "callback"}, 1, "Progressing"),
    ("finished", None, {"phase": "finished", "result": {}}, 2, "Healthy"),
    ("finished, callbacks failed", None, {"phase": "finished", "result": {
        "errorCode": "CallbackFailed", "errorMessage": "failed after all tries"}}, 2, "Degraded"),
    ("canceled", None, {"phase": "canceled"}, 2, "Healthy"),
    ("failed", None, {"phase": "failed", "result": {"errorCode": "InvalidParameter",
                                                    "errorMessage": "spec.room: Secret not found"}}, 1, "Degraded"),
    ("recording, spec changed not yet seen", {"CloudRecording"},
     {"phase": "recording", "observedGeneration": 1}, 2, "Progressing"),
    ("finished, generation seen", None, {"phase": "finished", "observedGeneration": 3}, 3, "Healthy"),
]
CASES = [(info.kind, name, status, generation, expected) for info in KINDS
         for name, kinds, status, generation, expected in SAMPLES if kinds is None or info.kind in kinds]


def lua(value: Any) -> str:
    """A JSON value as a Lua literal (null: nil, so the key is absent as in Argo CD's table)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are Lua's for these texts
    if isinstance(value, list):
        return "{" + ", ".join(lua(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {lua(v)}" for k, v in value.items()) + "}"


def obj(kind: str, status: dict[str, Any] | None, generation: int) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "capstan.dev/v1alpha1", "kind": kind,
                            "metadata": {"name": "t", "namespace": "ns", "generation": generation}, "spec": {}}
    if status is not None:
        body["status"] = status
    return body


def run_lua(objects: list[dict[str, Any]], script: str) -> list[tuple[str, str]]:
    """The health script on each object, in one lua5.4 process: a function per call, `obj` global."""
    interpreter = shutil.which("lua5.4")
    if interpreter is None:
        pytest.fail("lua5.4 is not installed (devstack/install-system-deps.sh installs it)", pytrace=False)
    program = [f"local check = function()\n{script}\nend"]
    for body in objects:
        program.append(f"obj = {lua(body)}\nlocal hs = check()\nprint(hs.status .. '\\t' .. (hs.message or ''))")
    done = subprocess.run([interpreter, "-"], input="\n".join(program), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [tuple(line.split("\t", 1)) for line in done.stdout.splitlines()]  # type: ignore[misc]


def test_the_argocd_health_script_gives_the_documented_health_for_every_phase_of_every_kind():
    results = run_lua([obj(kind, status, gen) for kind, _, status, gen, _ in CASES], SCRIPT.read_text())
    assert len(results) == len(CASES)
    wrong = [(kind, name, expected, got) for (kind, name, _, _, expected), (got, _) in zip(CASES, results, strict=True)
             if got != expected]
    assert wrong == []
    messages = {(kind, name): message for (kind, name, *_), (_, message) in zip(CASES, results, strict=True)}
    assert messages[("CloudRecording", "failed")] == "spec.room: Secret not found"
    assert messages[("StreamPush", "finished, callbacks failed")] == "CallbackFailed: failed after all tries"
    assert messages[("CloudRecording", "recording, spec changed not yet seen")] == \
        "the operator has not seen generation 2 yet"


@pytest.mark.parametrize(("kind", "name", "status", "generation", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_the_operators_health_and_kstatus_conditions_agree_with_the_script(kind, name, status, generation,
                                                                           expected):
    state, reason, _ = health(status or {}, generation)
    assert state == expected
    ready, reconciling, stalled = kstatus_conditions(status or {}, generation)
    assert [c["type"] for c in (ready, reconciling, stalled)] == ["Ready", "Reconciling", "Stalled"]
    assert ready["status"] == ("True" if expected == "Healthy" else "False")
    assert reconciling["status"] == ("True" if expected == "Progressing" else "False")
    assert stalled["status"] == ("True" if expected == "Degraded" else "False")
    assert all(c["observedGeneration"] == generation and c["reason"] == reason for c in (ready, reconciling, stalled))


def test_the_argocd_config_carries_the_script_for_each_kind():
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    script = SCRIPT.read_text()
    assert data == {f"resource.customizations.health.capstan.dev_{info.kind}": script for info in KINDS}
