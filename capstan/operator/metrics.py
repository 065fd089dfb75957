"""Prometheus metrics of the operator (scraped at :CAPSTAN_METRICS_PORT/metrics).

Named by Prometheus conventions: `capstan_` prefix, base units (seconds) in names, `_total` for
counters. Labels are bounded: the kind (plural), a phase or an outcome -- never a task id or name,
which would grow without bound. Tasks by phase and the queue length are read at scrape time from
what the operator process remembers of each task (`track`), so they can never drift from it.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from capstan.api import KINDS
from capstan.api.common import Phase
from capstan.operator.reconcile.conditions import is_true

if TYPE_CHECKING:
    from capstan.operator.reconcile.state import OperatorState

TASKS_ACCEPTED = Counter("capstan_tasks_accepted_total", "Tasks accepted by the operator", ["kind"])
TASKS_ENDED = Counter("capstan_tasks_ended_total", "Tasks that reached a final phase", ["kind", "phase"])
FAILOVERS = Counter("capstan_failovers_total", "Worker attempts replaced after a failure", ["kind"])
CALLBACKS = Counter("capstan_callbacks_total",
                    "Callback tries by outcome (delivered, retry = a failed try, gave_up, refused)",
                    ["kind", "outcome"])
CALLBACK_DURATION = Histogram("capstan_callback_duration_seconds", "Time of one callback HTTP try", ["kind"],
                              buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
ADMISSIONS_REFUSED = Counter("capstan_admissions_refused_total",
                             "Tasks refused at once because the concurrency limit was reached (queuePolicy refuse)",
                             ["kind"])
RECONCILE_ERRORS = Counter("capstan_reconcile_errors_total", "Reconcile passes that ended in an error", ["kind"])
QUEUE_WAIT = Histogram("capstan_queue_wait_seconds", "Time from a task's creation to its admission", ["kind"],
                       buckets=(0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0))
TASK_DURATION = Histogram("capstan_task_duration_seconds", "Time from a task's acceptance to its final phase",
                          ["kind", "phase"],
                          buckets=(10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0))

TERMINAL = frozenset({Phase.finished.value, Phase.failed.value, Phase.canceled.value})


class PeeringWatch(logging.Handler):
    """Whether kopf peering has paused this operator, from kopf's own peering log records.

    kopf keeps its pause toggle private; its peering engine logs "Pausing operations ..." (a
    higher-priority peer is alive, or one of the same priority) and "Resuming operations ..." as it
    flips it. A paused operator's memory of the tasks goes stale, so it exports no task gauges (a
    dashboard summing both operators would count the tasks twice, taking the max could show the
    standby's stale figures) and says `capstan_operator_active 0`."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.active = True

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(("Pausing operations", "Pausing all operators")):
            self.active = False
        elif message.startswith("Resuming operations"):
            self.active = True


PEERING = PeeringWatch()
_PEERING_LOG = logging.getLogger("kopf._core.engines.peering")
_PEERING_LOG.addHandler(PEERING)
_PEERING_LOG.setLevel(logging.INFO)  # the pause and resume records even when the operator runs --quiet


class TaskCollector(Collector):
    """`capstan_tasks{kind,phase}` and `capstan_queue_length{kind}` from the tracked operator states."""

    def __init__(self) -> None:
        self._states: list[weakref.ref[OperatorState]] = []  # weak: an ended operator's state goes

    def add(self, state: OperatorState) -> None:
        self._states = [r for r in self._states if r() is not None and r() is not state] + [weakref.ref(state)]

    @property
    def states(self) -> list[OperatorState]:
        return [s for r in self._states if (s := r()) is not None]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily("capstan_operator_active",
                                   "1 while this operator works, 0 while kopf peering pauses it (a standby)")
        active.add_metric([], 1.0 if PEERING.active else 0.0)
        yield active
        if not PEERING.active:
            return  # a paused operator's task figures are stale: the active one exports them
        tasks = GaugeMetricFamily("capstan_tasks", "Tasks the operator knows, by kind and phase",
                                  labels=["kind", "phase"])
        queue = GaugeMetricFamily("capstan_queue_length", "Tasks waiting for a free place under the limit",
                                  labels=["kind"])
        for plural, by_phase, waiting in self.counts():
            for phase, count in sorted(by_phase.items()):
                tasks.add_metric([plural, phase], count)
            queue.add_metric([plural], waiting)
        yield tasks
        yield queue

    def counts(self) -> list[tuple[str, dict[str, int], int]]:
        """(kind, tasks by phase, queued tasks) per kind, every phase present (0 when none)."""
        out = []
        for info in KINDS:
            by_phase = {p.value: 0 for p in Phase}
            waiting = 0
            for state in self.states:
                kind = state.kinds.get(info.plural)
                for mem in list(kind.tasks.values()) if kind else ():
                    status = dict((mem.body or {}).get("status") or {})
                    if not status.get("taskId"):
                        continue  # not accepted yet: no phase
                    phase = str(status.get("phase") or Phase.normal.value)
                    by_phase[phase] = by_phase.get(phase, 0) + 1
                    if phase not in TERMINAL and not is_true(status, "Admitted"):
                        waiting += 1
            out.append((info.plural, by_phase, waiting))
        return out


COLLECTOR = TaskCollector()
REGISTRY.register(COLLECTOR)


def track(state: OperatorState) -> None:
    """Count this operator state's tasks in `capstan_tasks` and `capstan_queue_length`."""
    COLLECTOR.add(state)


_started = False


def serve() -> None:
    """Start the metrics endpoint once; port 0 disables it (tests run several operators)."""
    global _started
    port = int(os.environ.get("CAPSTAN_METRICS_PORT", "8080"))
    if _started or port == 0:
        return
    start_http_server(port, addr=os.environ.get("CAPSTAN_METRICS_ADDR", "0.0.0.0"))
    _started = True
