"""The concurrency quota (seed 002: 100 tasks at once), pure.

Tasks beyond the quota wait in phase `normal` with a `Queued` condition, first come first
served by creation time, instead of being refused (unless the refuse policy is chosen).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


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


@dataclass
class Quota:
    """The quota as this operator process knows it: what the watch shows, overlaid with what the
    operator itself decided and the watch may not have delivered yet.

    Both marks are sticky: a stale view of a task (the watch lagging behind the operator's own
    write) can neither admit it a second time nor hand its place to another task.
    """

    max_tasks: int
    admitted: set[str] = field(default_factory=set)  # admitted here; not yet shown by the watch
    ended: set[str] = field(default_factory=set)  # ended here; not yet shown by the watch

    def view(self, entries: list[QueueEntry]) -> list[QueueEntry]:
        """The entries with this operator's own decisions applied; marks the watch shows are dropped."""
        shown_admitted = {e.uid for e in entries if e.admitted}
        shown_ended = {e.uid for e in entries if e.terminal}
        self.admitted -= shown_admitted
        self.ended -= shown_ended
        return [dataclasses.replace(e, admitted=e.admitted or e.uid in self.admitted,
                                    terminal=e.terminal or e.uid in self.ended)
                if e.uid in self.admitted or e.uid in self.ended else e for e in entries]

    def free(self, view: list[QueueEntry]) -> int:
        return max(self.max_tasks - sum(1 for e in view if e.admitted and not e.terminal), 0)

    @staticmethod
    def waiting(view: list[QueueEntry]) -> list[QueueEntry]:
        """Queued tasks, first come first served."""
        return sorted((e for e in view if not e.admitted and not e.terminal), key=_order)

    def place(self, entries: list[QueueEntry], entry: QueueEntry) -> int:
        """0 if `entry` may start now, else its 1-based place in the queue.

        One pass, no sort and no copies: it runs on every event of every task, so with a thousand
        queued tasks building the sorted view each time was a third of the operator's CPU (issue 11)."""
        self._drop_shown(entries)
        mine = next((e for e in entries if e.uid == entry.uid), entry)  # not indexed yet: it queues
        if self._holds(mine) or self._ended(mine):
            return 0
        key, active, ahead = _order(mine), 0, 0
        for e in entries:
            if self._ended(e):
                continue
            if self._holds(e):
                active += 1
            elif _order(e) < key:
                ahead += 1
        free = max(self.max_tasks - active, 0)
        return 0 if ahead < free else ahead - free + 1

    def has_free_place_for_someone(self, entries: list[QueueEntry]) -> bool:
        """A place is free and a task waits for it (one pass, like `place`)."""
        self._drop_shown(entries)
        active, waiting = 0, False
        for e in entries:
            if self._ended(e):
                continue
            if self._holds(e):
                active += 1
            else:
                waiting = True
        return waiting and active < self.max_tasks

    def _drop_shown(self, entries: list[QueueEntry]) -> None:
        """Forget the marks the watch shows now (as `view` does)."""
        if self.admitted or self.ended:
            for e in entries:
                if e.admitted:
                    self.admitted.discard(e.uid)
                if e.terminal:
                    self.ended.discard(e.uid)

    def _holds(self, e: QueueEntry) -> bool:
        return e.admitted or e.uid in self.admitted

    def _ended(self, e: QueueEntry) -> bool:
        return e.terminal or e.uid in self.ended

    def admit(self, uid: str) -> None:
        self.admitted.add(uid)

    def end(self, uid: str) -> None:
        self.ended.add(uid)
        self.admitted.discard(uid)

    def forget(self, uid: str) -> None:
        self.admitted.discard(uid)
        self.ended.discard(uid)


def _order(e: QueueEntry) -> tuple[str, str, str]:
    """First come first served: creation time, then name and uid (unique) for the same second."""
    return e.created, e.name, e.uid


def place_worth_showing(shown: int | None, place: int) -> bool:
    """Whether a queued task's shown place should be rewritten.

    Places only shrink (first come first served), so a shown place stays a true upper bound.
    It is rewritten when it drops into a lower power of ten, and when the task is next: at most
    five writes per task for a queue of a thousand, however often the queue moves.
    """
    if shown is None:
        return True
    if place >= shown:
        return False
    return len(str(place)) < len(str(shown)) or place == 1
