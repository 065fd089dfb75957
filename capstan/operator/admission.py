"""The concurrency quota (seed 002: 100 tasks at once), pure.

Tasks beyond the quota wait in phase `normal` with a `Queued` condition, first come first
served by creation time, instead of being refused (unless the refuse policy is chosen).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueEntry:
    uid: str
    created: str  # RFC 3339 creationTimestamp: sorts chronologically as text
    name: str
    admitted: bool
    terminal: bool


def queue_position(entries: list[QueueEntry], uid: str, max_tasks: int, reserved: set[str]) -> int:
    """0 if the task may start now, else its 1-based place in the queue.

    `reserved` holds tasks admitted moments ago whose status change the index has not seen yet,
    so two tasks cannot both take the last free place.
    """
    active = sum(1 for e in entries if (e.admitted or e.uid in reserved) and not e.terminal)
    waiting = sorted((e for e in entries if not e.admitted and not e.terminal and e.uid not in reserved),
                     key=lambda e: (e.created, e.name, e.uid))
    free = max(max_tasks - active, 0)
    for index, entry in enumerate(waiting):
        if entry.uid == uid:
            return 0 if index < free else index - free + 1
    return 0
