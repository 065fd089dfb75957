"""The registry of the metrics Capstan exports (operator and workers), and the series names each one
puts on /metrics: what a dashboard query or an alert expression may name."""

from __future__ import annotations

from functools import cache

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

import capstan.operator.metrics  # noqa: F401  (registers the operator's metrics)
import capstan.worker.metrics  # noqa: F401  (registers the workers')

# Bounded label values only: kinds, phases, outcomes, track kinds, object types.
ALLOWED_LABELS = frozenset({"kind", "phase", "outcome", "track", "type"})
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}


def capstan_families() -> list[Metric]:
    return [m for m in REGISTRY.collect() if m.name.startswith("capstan_")]


@cache
def exported_names() -> frozenset[str]:
    """Every series name a scrape of an operator or a worker can show."""
    return frozenset(f"{m.name}{suffix}" for m in capstan_families() for suffix in SUFFIXES[m.type])
