"""The e2e scenarios on a kind cluster (e2e/run.sh sets it up): record, mix, push and web tasks are
applied as a user would, run by the chart's operator in real Pods, and their files are checked in
MinIO (names as seed 002 gives them, non-empty, the MP4s' duration and size read with PyAV).

Exits 1 when any scenario fails, naming what was missing; 0 only when every scenario passed.
    python -m e2e.scenarios [--scenarios record,mix,push,web] [--namespace e2e]
The checks of what a bucket must hold are pure functions (tests/test_e2e.py runs them here).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capstan.media import naming

HERE = Path(__file__).resolve().parent
SDKAPPID = 1400000000
STORAGE_ENDPOINT = "minio.e2e.svc.cluster.local:9000"
LIVEKIT_URL = "ws://livekit.e2e.svc.cluster.local:7880"
ACCESS_KEY, SECRET_KEY = "e2e-access", "e2e-secret-key-0123456789"
LIVEKIT_KEY, LIVEKIT_SECRET = "e2e-key", "e2e-secret-0123456789abcdef0123456789"
RECORDER_IMAGE = "ghcr.io/capstan-dev/capstan-recorder:e2e"
GROUP, VERSION = "capstan.dev", "v1alpha1"


# --- what the bucket must hold (pure) ---------------------------------------------------------


def missing_single(keys: set[str], task_id: str, room: int | str, users: list[str], prefix: str) -> list[str]:
    """Single-stream files each anchor must have: both playlists, segments of each track, one MP4."""
    missing = []
    for user in users:
        wanted = [naming.single_playlist_name(SDKAPPID, room, user, "main", t) for t in ("video", "audio")]
        wanted.append(naming.single_mp4_name(SDKAPPID, room, user, "main", 1))
        missing += [n for n in wanted if naming.object_key(n, prefix=prefix, task_id=task_id) not in keys]
        for track in ("video", "audio"):
            stem = naming.single_playlist_name(SDKAPPID, room, user, "main", track).removesuffix(".m3u8")
            if not any(k.rsplit("/", 1)[-1].startswith(stem + "_") and k.endswith(".ts") for k in keys):
                missing.append(f"{stem}_<utc>.ts")
    return missing


def missing_mixed(keys: set[str], task_id: str, room: int | str, prefix: str) -> list[str]:
    wanted = [naming.mixed_playlist_name(SDKAPPID, room), naming.mixed_mp4_name(SDKAPPID, room, 1)]
    missing = [n for n in wanted if naming.object_key(n, prefix=prefix, task_id=task_id) not in keys]
    stem = naming.mixed_playlist_name(SDKAPPID, room).removesuffix(".m3u8")
    if not any(k.rsplit("/", 1)[-1].startswith(stem + "_") and k.endswith(".ts") for k in keys):
        missing.append(f"{stem}_<utc>.ts")
    return missing


def missing_web(keys: set[str], target_dir: str) -> list[str]:
    under = [k for k in keys if k.startswith(target_dir.strip("/") + "/")]
    if any(k.endswith(".mp4") for k in under) or (any(k.endswith(".m3u8") for k in under)
                                                   and any(k.endswith(".ts") for k in under)):
        return []
    return [f"{target_dir}/*.mp4 (or an HLS playlist with segments)"]


def short_media(durations: dict[str, float], at_least: float) -> list[str]:
    """MP4s shorter than the anchors were recorded for."""
    return [f"{k}: {d:.1f} s < {at_least:.1f} s" for k, d in sorted(durations.items()) if d < at_least]


# --- the cluster ------------------------------------------------------------------------------


@dataclass
class Cluster:
    namespace: str
    custom: Any
    core: Any
    s3: Any

    def apply(self, body: dict[str, Any]) -> None:
        subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(body), text=True, check=True, timeout=60)

    def task(self, plural: str, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name))

    def wait_phase(self, plural: str, name: str, phases: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.task(plural, name).get("status") or {}
            if status.get("phase") in phases:
                return status
            if status.get("phase") == "failed" and "failed" not in phases:
                raise AssertionError(f"{plural}/{name} failed: {status.get('result')}")
            time.sleep(2)
        raise AssertionError(f"{plural}/{name} not in {sorted(phases)} after {timeout:.0f} s: {status}")

    def stop(self, plural: str, name: str) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name,
                                                   {"spec": {"stop": True}})

    def keys(self, bucket: str) -> set[str]:
        return {o.object_name for o in self.s3.list_objects(bucket, recursive=True)}

    def mp4_durations(self, bucket: str, keys: set[str]) -> dict[str, float]:
        import av

        out = {}
        for key in sorted(k for k in keys if k.endswith(".mp4")):
            data = self.s3.get_object(bucket, key).read()
            with av.open(io.BytesIO(data), "r") as container:
                out[key] = float(container.duration or 0) / av.time_base
        return out

    def anchors(self, name: str, room: str, users: list[str], seconds: int) -> None:
        """A Pod of the recorder image running e2e/publisher.py (from a ConfigMap)."""
        self.core.create_namespaced_config_map(self.namespace, {
            "metadata": {"name": f"{name}-publisher"}, "data": {"publisher.py": (HERE / "publisher.py").read_text()}})
        env = {"LIVEKIT_URL": LIVEKIT_URL, "LIVEKIT_API_KEY": LIVEKIT_KEY, "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
               "ROOM": room, "ANCHORS": ",".join(users), "SECONDS": str(seconds), "HOME": "/tmp"}
        self.core.create_namespaced_pod(self.namespace, {
            "metadata": {"name": f"{name}-anchors", "labels": {"app": "e2e-anchors"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "anchors", "image": RECORDER_IMAGE, "imagePullPolicy": "Never",
                "command": ["python", "/e2e/publisher.py"], "env": [{"name": k, "value": v} for k, v in env.items()],
                "volumeMounts": [{"name": "script", "mountPath": "/e2e"}]}],
                "volumes": [{"name": "script", "configMap": {"name": f"{name}-publisher"}}]}})


def recording(name: str, room: str, bucket: str, mode: str = "single", **spec: Any) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CloudRecording", "metadata": {"name": name},
            "spec": {"room": {"url": LIVEKIT_URL, "sdkAppId": SDKAPPID, "strRoomId": room,
                              "credentialsSecretRef": {"name": "livekit-credentials"}},
                     "recorderUserId": f"recorder_{name}", "recordMode": mode, "maxIdleTime": 30,
                     "video": {"width": 320, "height": 240, "fps": 15, "bitrate": 300000},
                     "output": {"formats": ["hls", "mp4"], "prefix": "e2e", "segmentSeconds": 4},
                     "storage": {"endpoint": STORAGE_ENDPOINT, "bucket": bucket, "secure": False,
                                 "credentialsSecretRef": {"name": "storage-credentials"}}, **spec}}
    return body


def stream_push(name: str, room: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "StreamPush", "metadata": {"name": name},
            "spec": {"videoSrc": f"http://{STORAGE_ENDPOINT}/media/clip.mp4", "mode": "vod", "userId": "teacher",
                     "room": {"url": LIVEKIT_URL, "sdkAppId": SDKAPPID, "strRoomId": room,
                              "credentialsSecretRef": {"name": "livekit-credentials"}}}}


def web_recording(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WebRecording", "metadata": {"name": name},
            "spec": {"recordUrl": f"http://{STORAGE_ENDPOINT}/media/page.html", "width": 640, "height": 360,
                     "maxDurationLimit": 60,
                     "output": {"storage": {"endpoint": STORAGE_ENDPOINT, "bucket": "recordings", "secure": False,
                                            "credentialsSecretRef": {"name": "storage-credentials"}},
                                "targetDir": "web/e2e", "muxer": "mp4"}}}


# --- scenarios --------------------------------------------------------------------------------


def record(c: Cluster) -> list[str]:
    room, users, seconds = "e2e-single", ["alice", "bob"], 20
    c.anchors("record", room, users, seconds + 30)
    time.sleep(10)  # the anchors are in the room
    c.apply({**recording("record", room, "recordings"), "metadata": {"name": "record", "namespace": c.namespace}})
    task_id = c.wait_phase("cloudrecordings", "record", {"recording"}, 300)["taskId"]
    time.sleep(seconds)
    c.stop("cloudrecordings", "record")
    status = c.wait_phase("cloudrecordings", "record", {"finished"}, 300)
    keys = c.keys("recordings")
    problems = missing_single(keys, task_id, room, users, "e2e")
    problems += short_media(c.mp4_durations("recordings", {k for k in keys if f"/{task_id}/" in k}), seconds - 6)
    problems += _ready(status, "record")
    return problems


def mix(c: Cluster) -> list[str]:
    room, users, seconds = "e2e-mix", ["carol", "dave", "erin"], 20
    c.anchors("mix", room, users, seconds + 30)
    time.sleep(10)
    body = recording("mix", room, "recordings", mode="mix",
                     video={"width": 640, "height": 360, "fps": 15, "bitrate": 600000}, mixLayout={"mode": "grid"})
    c.apply({**body, "metadata": {"name": "mix", "namespace": c.namespace}})
    task_id = c.wait_phase("cloudrecordings", "mix", {"recording"}, 300)["taskId"]
    time.sleep(seconds)
    c.stop("cloudrecordings", "mix")
    status = c.wait_phase("cloudrecordings", "mix", {"finished"}, 300)
    keys = c.keys("recordings")
    problems = missing_mixed(keys, task_id, room, "e2e")
    problems += short_media(c.mp4_durations("recordings", {k for k in keys if f"/{task_id}/" in k}), seconds - 6)
    return problems + _ready(status, "mix")


def push(c: Cluster) -> list[str]:
    """A 12 s file pushed into a room while a recorder records the pushing user."""
    room, seconds = "e2e-push", 12
    c.s3.put_object("media", "clip.mp4", io.BytesIO(clip := _clip(seconds)), len(clip), content_type="video/mp4")
    c.apply({**recording("push-rec", room, "recordings"), "metadata": {"name": "push-rec", "namespace": c.namespace}})
    c.wait_phase("cloudrecordings", "push-rec", {"idle", "recording"}, 300)
    c.apply({**stream_push("push", room), "metadata": {"name": "push", "namespace": c.namespace}})
    status = c.wait_phase("streampushes", "push", {"finished"}, 300)
    problems = []
    position = float((status.get("progress") or {}).get("positionSeconds") or 0)
    if position < seconds - 1:
        problems.append(f"push ended at {position:.1f} s of {seconds} s")
    task_id = c.task("cloudrecordings", "push-rec")["status"]["taskId"]
    c.stop("cloudrecordings", "push-rec")
    c.wait_phase("cloudrecordings", "push-rec", {"finished"}, 300)
    problems += missing_single(c.keys("recordings"), task_id, room, ["teacher"], "e2e")
    return problems + _ready(status, "push")


def web(c: Cluster) -> list[str]:
    page = b"<html><body style='background:#2050e0'><h1>Capstan e2e</h1></body></html>"
    c.s3.put_object("media", "page.html", io.BytesIO(page), len(page), content_type="text/html")
    c.apply({**web_recording("web"), "metadata": {"name": "web", "namespace": c.namespace}})
    c.wait_phase("webrecordings", "web", {"recording"}, 300)
    time.sleep(15)
    c.stop("webrecordings", "web")
    status = c.wait_phase("webrecordings", "web", {"finished"}, 300)
    return missing_web(c.keys("recordings"), "web/e2e") + _ready(status, "web")


def _ready(status: dict[str, Any], what: str) -> list[str]:
    """kstatus's Ready condition (what Flux health checks wait for) on a finished task."""
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return [] if ready and ready[0]["status"] == "True" else [f"{what}: no Ready=True condition ({ready})"]


def _clip(seconds: int) -> bytes:
    """A 320x240 15 fps H.264 + AAC MP4 made with PyAV."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=15)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        for i in range(seconds * 15):
            image = np.full((240, 320, 3), (i * 8) % 256, np.uint8)
            picture = av.VideoFrame.from_ndarray(image, format="rgb24")
            picture.pts = i
            container.mux(video.encode(picture))
        for i in range(seconds * 48000 // 1024):
            n = np.arange(i * 1024, (i + 1) * 1024)
            sound = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * n / 48000)).astype(np.float32)
                                               .reshape(1, -1), format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 48000, i * 1024
            container.mux(audio.encode(sound))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return out.getvalue()


SCENARIOS: dict[str, Callable[[Cluster], list[str]]] = {"record": record, "mix": mix, "push": push, "web": web}


@contextlib.contextmanager
def port_forward(namespace: str, target: str, remote: int) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["kubectl", "port-forward", "-n", namespace, target, f"{port}:{remote}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(60):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="e2e")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args(argv)
    from kubernetes import client, config
    from minio import Minio

    config.load_kube_config()
    api = client.ApiClient()
    failures: dict[str, list[str]] = {}
    with port_forward(args.namespace, "svc/minio", 9000) as port:
        s3 = Minio(f"127.0.0.1:{port}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
        for bucket in ("recordings", "media"):
            if not s3.bucket_exists(bucket):
                s3.make_bucket(bucket)
        s3.set_bucket_policy("media", json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"],
            "Resource": ["arn:aws:s3:::media/*"]}]}))
        cluster = Cluster(args.namespace, client.CustomObjectsApi(api), client.CoreV1Api(api), s3)
        for name in args.scenarios.split(","):
            print(f"[e2e] scenario {name}", flush=True)
            try:
                problems = SCENARIOS[name](cluster)
            except Exception as exc:  # noqa: BLE001 - a scenario that raised failed; the others still run
                problems = [f"{type(exc).__name__}: {exc}"]
            if problems:
                failures[name] = problems
            print(f"[e2e] {name}: {'FAILED ' + '; '.join(problems) if problems else 'passed'}", flush=True)
    passed = len(args.scenarios.split(",")) - len(failures)
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
