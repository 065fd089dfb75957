"""Prometheus metrics of the operator (scraped at :CAPSTAN_METRICS_PORT/metrics)."""

from __future__ import annotations

import os

from prometheus_client import Counter, start_http_server

TASKS_ACCEPTED = Counter("capstan_tasks_accepted_total", "Tasks accepted by the operator", ["kind"])
TASKS_ENDED = Counter("capstan_tasks_ended_total", "Tasks that reached a final phase", ["kind", "phase"])
FAILOVERS = Counter("capstan_failovers_total", "Worker attempts replaced after a failure", ["kind"])
CALLBACKS = Counter("capstan_callbacks_total", "Callback deliveries by outcome", ["kind", "outcome"])

_started = False


def serve() -> None:
    """Start the metrics endpoint once; port 0 disables it (tests run several operators)."""
    global _started
    port = int(os.environ.get("CAPSTAN_METRICS_PORT", "8080"))
    if _started or port == 0:
        return
    start_http_server(port, addr=os.environ.get("CAPSTAN_METRICS_ADDR", "0.0.0.0"))
    _started = True
