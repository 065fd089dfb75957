"""Prometheus metrics: names by convention, bounded labels, and each series moved by the code that owns it
(the operator's collector over its task memories, the recorder's writer and encoders, the uploader, the
worker's /metrics endpoint). The stack test (tests/operator/test_metrics_stack.py) scrapes them live."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from capstan.operator import metrics as operator_metrics
from capstan.operator.config import OperatorConfig
from capstan.operator.reconcile.state import OperatorState
from capstan.worker import metrics as worker_metrics
from tests.capstan_metrics import ALLOWED_LABELS, capstan_families, exported_names


def value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_names_follow_prometheus_conventions():
    families = capstan_families()
    assert {f.name for f in families} >= {"capstan_tasks", "capstan_queue_length", "capstan_queue_wait_seconds",
                                          "capstan_task_duration_seconds", "capstan_worker_frames_received"}
    for family in families:
        assert family.name.startswith("capstan_")
        if family.type == "counter":
            assert f"{family.name}_total" in exported_names()
        if family.type == "histogram" or "seconds" in family.name or "bytes" in family.name:
            assert family.name.endswith(("_seconds", "_bytes", "_seconds_total", "_bytes_total")) or \
                family.name.split("_")[-1] in ("seconds", "bytes"), family.name


def test_no_label_can_grow_without_bound():
    """No task id, name or namespace: Prometheus adds the Pod's labels to worker series when it scrapes."""
    for family in capstan_families():
        for metric in REGISTRY.collect():
            if metric.name == family.name:
                for sample in metric.samples:
                    assert set(sample.labels) <= ALLOWED_LABELS | {"le"}, (family.name, sample.labels)
    for collector_labels in (operator_metrics.TASKS_ACCEPTED._labelnames, worker_metrics.FRAMES_RECEIVED._labelnames):
        assert set(collector_labels) <= ALLOWED_LABELS


def _memory(state: OperatorState, plural: str, name: str, status: dict) -> None:
    mem = state.kinds[plural].memory("ns", name, f"uid-{name}")
    mem.body = {"metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
                "status": status}


def test_tasks_by_phase_and_queue_length_come_from_the_operators_memory():
    state = OperatorState.create(OperatorConfig(), lambda *_: None)
    collector = operator_metrics.TaskCollector()  # its own: other operator states in this process do not count
    collector.add(state)

    def gauge(name: str, **labels: str) -> float | None:
        for family in collector.collect():
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return s.value
        return None

    admitted = [{"type": "Admitted", "status": "True"}]
    _memory(state, "cloudrecordings", "a", {"taskId": "1", "phase": "recording", "conditions": admitted})
    _memory(state, "cloudrecordings", "b", {"taskId": "2", "phase": "normal",
                                            "conditions": [{"type": "Queued", "status": "True"}]})
    _memory(state, "cloudrecordings", "c", {"taskId": "3", "phase": "normal"})
    _memory(state, "cloudrecordings", "d", {"taskId": "4", "phase": "finished", "conditions": admitted})
    _memory(state, "cloudrecordings", "e", {})  # not accepted yet: no phase to count
    _memory(state, "streampushes", "p", {"taskId": "5", "phase": "pushing", "conditions": admitted})
    crec = {"kind": "cloudrecordings"}
    assert gauge("capstan_tasks", **crec, phase="recording") == 1
    assert gauge("capstan_tasks", **crec, phase="normal") == 2
    assert gauge("capstan_tasks", **crec, phase="finished") == 1
    assert gauge("capstan_tasks", **crec, phase="failed") == 0  # present, zero
    assert gauge("capstan_queue_length", **crec) == 2
    assert gauge("capstan_tasks", kind="streampushes", phase="pushing") == 1
    assert gauge("capstan_queue_length", kind="streampushes") == 0
    assert gauge("capstan_queue_length", kind="webrecordings") == 0
    state.kinds["cloudrecordings"].forget("ns", "b")
    assert gauge("capstan_queue_length", **crec) == 1
    collector.add(state)  # tracked once, however often it is added
    assert gauge("capstan_queue_length", **crec) == 1
    del state
    import gc

    gc.collect()
    assert gauge("capstan_queue_length", **crec) == 0  # an operator state that is gone counts no more

    tracked = OperatorState.create(OperatorConfig(), lambda *_: None)
    operator_metrics.track(tracked)  # the operator's own registry (handlers.configure does this)
    _memory(tracked, "webrecordings", "w", {"taskId": "6", "phase": "paused", "conditions": admitted})
    assert value("capstan_tasks", {"kind": "webrecordings", "phase": "paused"}) >= 1


def test_recorder_writer_counts_frames_received_encoded_and_dropped(tmp_path: Path):
    from capstan.media.pipeline.encoding import AudioEncoding, VideoEncoding
    from capstan.recorder.hls import HlsOutput, HlsTrackWriter, StreamNames
    from tests.recorder.frames import T0, tone_frames, video_frames

    before = {k: value(f"capstan_worker_frames_{k}_total", {"track": "video"})
              for k in ("received", "encoded", "dropped")}
    seconds_before = value("capstan_worker_encode_seconds_total", {"track": "video"})
    names = StreamNames.single(1400000001, 1234, "alice", "main", "video")
    writer = HlsTrackWriter(names, HlsOutput(tmp_path / "v", segment_seconds=2),
                            VideoEncoding(bitrate=100000, gop_seconds=2, size=(64, 48), max_fps=15))
    frames = list(video_frames(T0, 2.0, fps=15))
    for frame, t in frames:
        writer.write(frame, t)
    frame, t = frames[3]
    writer.write(frame, t)  # out of order: dropped
    writer.close()
    assert value("capstan_worker_frames_received_total", {"track": "video"}) - before["received"] == 31
    assert value("capstan_worker_frames_encoded_total", {"track": "video"}) - before["encoded"] == 30
    assert value("capstan_worker_frames_dropped_total", {"track": "video"}) - before["dropped"] == 1
    assert value("capstan_worker_encode_seconds_total", {"track": "video"}) > seconds_before

    audio_before = value("capstan_worker_frames_encoded_total", {"track": "audio"})
    names = StreamNames.single(1400000001, 1234, "alice", "main", "audio")
    writer = HlsTrackWriter(names, HlsOutput(tmp_path / "a", segment_seconds=2), AudioEncoding())
    received = value("capstan_worker_frames_received_total", {"track": "audio"})
    for frame, t in tone_frames(T0, 1.0, hz=440.0):
        writer.write(frame, t)
    writer.close()
    assert value("capstan_worker_frames_received_total", {"track": "audio"}) - received == 100
    assert value("capstan_worker_frames_encoded_total", {"track": "audio"}) > audio_before


def test_uploader_counts_bytes_objects_retries_and_spool(tmp_path: Path):
    from capstan.storage.uploader import Uploader
    from tests.storage.test_uploader import FakeClient

    client = FakeClient()
    client.down = True
    stored, retries = value("capstan_worker_uploaded_bytes_total"), value("capstan_worker_upload_retries_total")
    segments = value("capstan_worker_uploaded_objects_total", {"type": "segment"})
    spool = value("capstan_worker_spool_bytes")
    up = Uploader(client, "b", tmp_path / "spool", min_backoff=0.05, max_backoff=0.1)
    for i in range(3):
        path = tmp_path / f"s{i}.ts"
        path.write_bytes(b"x" * 1000)
        up.put(path, f"task/s{i}.ts")
    up.put_bytes(b"#EXTM3U\n", "task/a.m3u8")
    up.put_bytes(b"#EXTM3U\n#2\n", "task/a.m3u8")  # replaces the waiting version
    assert value("capstan_worker_spool_bytes") - spool == 3000 + len(b"#EXTM3U\n#2\n")
    assert not up.flush(0.4)
    assert value("capstan_worker_upload_retries_total") > retries
    client.down = False
    assert up.flush(10)
    up.close(1)
    assert value("capstan_worker_uploaded_bytes_total") - stored == 3000 + len(b"#EXTM3U\n#2\n")
    assert value("capstan_worker_uploaded_objects_total", {"type": "segment"}) - segments == 3
    assert value("capstan_worker_spool_bytes") == spool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_serves_metrics_at_its_pod_ip_and_never_fails_on_a_taken_port():
    assert worker_metrics.serve({"CAPSTAN_METRICS_PORT": "0"}) is None
    assert worker_metrics.serve({}) is None
    port = _free_port()
    assert worker_metrics.serve({"CAPSTAN_METRICS_PORT": str(port), "CAPSTAN_POD_IP": "127.0.0.1"}) == port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "capstan_worker_frames_received_total" in text
    # the same address and port again (another worker on it): logged, not raised
    assert worker_metrics.serve({"CAPSTAN_METRICS_PORT": str(port), "CAPSTAN_POD_IP": "127.0.0.1"}) is None


@pytest.mark.parametrize("port", ["9090", "0"])
def test_worker_pod_declares_its_metrics_port(port, monkeypatch):
    from capstan.api import KINDS
    from capstan.operator import children

    monkeypatch.setenv("CAPSTAN_WORKER_METRICS_PORT", port)
    config = OperatorConfig.from_env()
    body = {"kind": "CloudRecording", "metadata": {"name": "t", "namespace": "ns", "uid": "u"},
            "status": {"taskId": "x"}}
    (container,) = children.worker_pod(KINDS[0], body, 1, config)["spec"]["containers"]
    assert {"name": "CAPSTAN_METRICS_PORT", "value": port} in container["env"]
    if port == "0":
        assert "ports" not in container
    else:
        assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
