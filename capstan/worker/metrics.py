"""Prometheus metrics of a worker Pod (recorder, pusher, panorama), served at :CAPSTAN_METRICS_PORT/metrics.

One worker Pod runs one task, so the Pod's own labels (namespace, pod) that Prometheus adds when it
scrapes (the chart's PodMonitor) say which task a series belongs to: no label here carries a task
id. `track` is the track kind, `video` or `audio`.

The counters are bound to their label values once, here, so the media loops pay one locked add
per frame and nothing else. Serving is best effort: a port that cannot be bound is logged and the
worker goes on (metrics never cost a recording).
"""

from __future__ import annotations

import logging
import os

from prometheus_client import Counter, Gauge, start_http_server

log = logging.getLogger("capstan.worker")
TRACKS = ("video", "audio")

FRAMES_RECEIVED = Counter("capstan_worker_frames_received_total",
                          "Frames the worker took in (decoded from the room, or read from the push source)",
                          ["track"])
FRAMES_ENCODED = Counter("capstan_worker_frames_encoded_total", "Frames handed to an encoder", ["track"])
FRAMES_DROPPED = Counter("capstan_worker_frames_dropped_total",
                         "Frames not recorded: before the start, out of order, or above the frame rate asked for",
                         ["track"])
FRAMES_SENT = Counter("capstan_worker_frames_sent_total", "Frames a pusher handed to the room", ["track"])
ENCODE_SECONDS = Counter("capstan_worker_encode_seconds_total", "Time spent in the encoders", ["track"])
UPLOADED_BYTES = Counter("capstan_worker_uploaded_bytes_total", "Bytes stored in the bucket (confirmed by stat)")
UPLOADED_OBJECTS = Counter("capstan_worker_uploaded_objects_total",
                           "Objects stored in the bucket, by type (segment: .ts, playlist: .m3u8, other)", ["type"])
UPLOAD_RETRIES = Counter("capstan_worker_upload_retries_total", "Failed upload tries (each is retried)")
SPOOL_BYTES = Gauge("capstan_worker_spool_bytes", "Bytes on local disk waiting to be stored")
SPOOL_FILES = Gauge("capstan_worker_spool_files", "Files on local disk waiting to be stored")
PUSH_POSITION = Gauge("capstan_worker_push_position_seconds",
                      "Seconds into the source (vod) or pushed so far (live)")
PUSH_DRIFT = Gauge("capstan_worker_push_drift_seconds",
                   "How late the last pushed frame was handed to the room, after the time it was due", ["track"])

RECEIVED = {t: FRAMES_RECEIVED.labels(t) for t in TRACKS}
ENCODED = {t: FRAMES_ENCODED.labels(t) for t in TRACKS}
DROPPED = {t: FRAMES_DROPPED.labels(t) for t in TRACKS}
SENT = {t: FRAMES_SENT.labels(t) for t in TRACKS}
ENCODING = {t: ENCODE_SECONDS.labels(t) for t in TRACKS}
DRIFT = {t: PUSH_DRIFT.labels(t) for t in TRACKS}


def object_type(key: str) -> str:
    if key.endswith(".ts"):
        return "segment"
    if key.endswith(".m3u8"):
        return "playlist"
    return "other"


for _type in ("segment", "playlist", "other"):
    UPLOADED_OBJECTS.labels(_type)  # present from the start (0), so rate() and absent() behave


def serve(env: dict[str, str] | None = None) -> int | None:
    """Serve /metrics on CAPSTAN_METRICS_PORT (0 or unset: off) at the Pod's IP (CAPSTAN_METRICS_ADDR,
    else CAPSTAN_POD_IP, else every address); the port, or None when not serving."""
    env = dict(os.environ if env is None else env)
    port = int(env.get("CAPSTAN_METRICS_PORT") or 0)
    if port == 0:
        return None
    addr = env.get("CAPSTAN_METRICS_ADDR") or env.get("CAPSTAN_POD_IP") or "0.0.0.0"
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:
        log.warning("metrics not served on %s:%d: %s", addr, port, exc)
        return None
    return port
