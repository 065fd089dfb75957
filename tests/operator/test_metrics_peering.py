"""The operator's `capstan_operator_active` follows kopf peering's pause and resume (read from
kopf's own peering log records), and a paused operator exports no task gauges."""

from __future__ import annotations

import logging

from prometheus_client import generate_latest

from capstan.operator import metrics

PEERING_LOG = logging.getLogger("kopf._core.engines.peering")


def scrape() -> str:
    return generate_latest().decode()


def test_a_paused_operator_says_so_and_exports_no_task_gauges() -> None:
    assert metrics.PEERING.active
    assert "capstan_operator_active 1.0" in scrape() and "capstan_tasks{" in scrape()
    try:
        PEERING_LOG.info("Pausing operations in favour of [Peer(identity='main', priority=100)].")
        text = scrape()
        assert "capstan_operator_active 0.0" in text
        assert "capstan_tasks{" not in text and "capstan_queue_length{" not in text
        PEERING_LOG.info("Resuming operations after the pause. Conflicting operators with the same priority are gone.")
        assert "capstan_operator_active 1.0" in scrape() and "capstan_tasks{" in scrape()
        PEERING_LOG.warning("Pausing all operators, including self: []")
        assert "capstan_operator_active 0.0" in scrape()
    finally:
        metrics.PEERING.active = True
