"""A Kubernetes Event for every phase change, including the ones the worker reports itself.

Workers may not create Events (their Role names only their own resource), so the operator
watches the phase and posts `PhaseChanged` events on their behalf.
"""

from __future__ import annotations

from typing import Any

import kopf

from capstan.api import GROUP, KINDS, VERSION


def register(plural: str) -> None:
    @kopf.on.event(GROUP, VERSION, plural, id=f"{plural}-phase-events")
    def phase_changed(body: kopf.Body, status: kopf.Status, memo: kopf.Memo, type: str | None,
                      **_: Any) -> None:
        phase = status.get("phase")
        last = memo.get("last_phase")
        if type == "DELETED" or not phase or phase == last:
            return
        memo["last_phase"] = phase
        if last is None:
            return  # first sight after a (re)start: not a transition we saw happen
        message = f"{last} -> {phase}"
        if status.get("message"):
            message += f": {status['message']}"
        kopf.event(body, type="Warning" if phase == "failed" else "Normal", reason="PhaseChanged",
                   message=message[:1000])


for _info in KINDS:
    register(_info.plural)
