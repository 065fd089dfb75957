"""What kopf keeps on the task objects, cut to what the operator needs (issue 11: API writes per task).

- **No diff base.** kopf stores the last handled spec (`last-handled-configuration`) to tell
  on.create / on.update / on.field handlers what changed: one object PATCH at creation and one at
  every spec edit (`spec.stop`). The operator has no such handlers: its reconcile runs on every
  watch event and reads the spec itself (`spec.stop` in `reconcile.task`, the generation it saw as
  `status.observedGeneration`), and workers watch their own resource for spec edits
  (`spec.subscribe`, `spec.paused`, ...). So kopf is told nothing ever changed: no annotation, no
  PATCH. Its on.delete handler does not need a diff (deletion is seen from `deletionTimestamp`).
  A change handler added later would never fire: use a real diff-base storage then.
- **The finalizer first.** kopf adds its finalizer with a JSON patch conditional on the
  resourceVersion of the event it saw, after that event's on.event handlers ran. A first
  reconcile pass that wrote the status in the same cycle made that patch fail (HTTP 422) and kopf
  try again on the next cycle: two PATCHes more per task. So a new task's first pass waits for the
  finalizer: kopf's patch brings a watch event of its own, and that one is reconciled. (If the
  patch keeps failing, kopf retries it and at last stops the operator: nothing waits silently.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf


class UnchangedDiffBase(kopf.DiffBaseStorage):
    """A diff base kept nowhere: the stored essence is always the object's current one, so kopf
    sees no change (its causes are NOOP, RESUME, DELETE) and writes nothing for it."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence:
        return self.build(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def awaits_finalizer(body: Mapping[str, Any], finalizer: str) -> bool:
    """Whether a task's pass should wait for kopf to add `finalizer` (see the module doc): a task not
    yet accepted, not being deleted, without the finalizer."""
    meta = body.get("metadata") or {}
    return (finalizer not in (meta.get("finalizers") or []) and not meta.get("deletionTimestamp")
            and not (body.get("status") or {}).get("taskId"))
