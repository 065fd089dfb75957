"""kopf's persistence cut to what the operator needs, and which phase changes get a PhaseChanged Event
(the pure parts; tests/operator/test_writes_stack.py shows the writes on the real API server)."""

from __future__ import annotations

import kopf

from capstan.operator.kopf_persistence import UnchangedDiffBase
from capstan.operator.phase_events import phase_change


def test_kopf_sees_no_change_and_stores_nothing():
    storage = UnchangedDiffBase()
    before = kopf.Body({"metadata": {"name": "t", "labels": {"a": "1"}}, "spec": {"stop": False}})
    after = kopf.Body({"metadata": {"name": "t", "labels": {"a": "1"}}, "spec": {"stop": True}})
    assert storage.fetch(body=after) == storage.build(body=after)  # no diff: kopf's cause is NOOP
    assert storage.build(body=before) == storage.build(body=after) == {}  # nothing copied of the body
    patch = kopf.Patch()
    storage.store(body=after, patch=patch, essence=storage.build(body=after))
    assert not patch  # nothing written to the object


def test_phase_changed_only_where_no_other_event_says_it():
    assert phase_change("normal", "idle", "attempt 1 idle") == "normal -> idle: attempt 1 idle"
    assert phase_change("idle", "upload", None) == "idle -> upload"
    assert phase_change("upload", "callback", None) == "upload -> callback"
    assert phase_change(None, "idle", None) is None  # first sight after a restart
    assert phase_change("idle", "idle", None) is None
    # announced by the operator's own Event: Canceled, Finished, WorkerFailed/..., Accepted/Failover
    for phase in ("canceled", "finished", "failed", "normal"):
        assert phase_change("idle", phase, "why") is None, phase
