"""`make demo`: Capstan records a real room on the local real stack.

Starts (or reuses) the stack, installs the CRDs, runs the pod runner and the operator, puts two
synthetic anchors (a colour and a tone each) into a real Janus VideoRoom, applies a single-stream
CloudRecording, follows the task through its phases, stops it, and prints where its files are.

The room server is Janus because LiveKit, Capstan's default backend, cannot be built on this
machine (see docs/room-backends.md); the CloudRecording differs only in `room.backend` and `url`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client, config

from capstan.api import GROUP, VERSION
from capstan.rooms.janus import JanusBackend
from capstan.rooms.synthetic import SyntheticAnchor
from devstack.harness import ROOT, BackgroundLoop, OperatorProcess, install_crds, wait_for
from devstack.podrunner import PodRunner
from devstack.stack import ensure_up

RECORD_SECONDS = 12
ANCHORS = {"teacher": ((220, 40, 40), 440.0), "student": ((40, 60, 220), 880.0)}


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def main() -> int:
    say("starting the local stack (first run builds it: see docs/development.md)")
    stack = ensure_up()
    if stack.janus_error:
        say(f"the room server (Janus) cannot run here: {stack.janus_error}")
        return 1
    os.environ.update(stack.env())
    config.load_kube_config(config_file=stack.kubeconfig)
    api_client = client.ApiClient()
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    install_crds(api_client)
    say("CRDs installed: " + ", ".join(p.name for p in sorted((ROOT / "crds").glob("*.yaml"))))

    run = int(time.time())
    namespace, room = f"capstan-demo-{run}", f"demo-{run}"
    core.create_namespace({"metadata": {"name": namespace}}, _request_timeout=30)
    for name, data in (("storage-credentials", {"accessKey": stack.s3_access_key, "secretKey": stack.s3_secret_key}),
                       ("janus-room", {})):
        core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": data},
                                      _request_timeout=30)
    bucket = "recordings"
    s3 = _s3(stack)
    if not s3.bucket_exists(bucket):
        s3.make_bucket(bucket)

    loop = BackgroundLoop()
    on_loop = loop.run
    janus = JanusBackend(stack.janus_url, host_address=stack.room_host_address)
    on_loop(janus.create_room(room, stack.janus_admin_key))
    anchors = []
    for user, (color, tone) in ANCHORS.items():
        anchor = SyntheticAnchor(stack.janus_url, room, user, color=color, tone_hz=tone,
                                 host_address=stack.room_host_address)
        on_loop(anchor.start())
        anchors.append(anchor)
        say(f"anchor {user!r} publishes colour {color} and a {tone:.0f} Hz tone in Janus room {room!r}")

    logs = Path(tempfile.mkdtemp(prefix="capstan-demo-"))
    runner = PodRunner(kubeconfig=stack.kubeconfig)
    runner.start()
    operator = OperatorProcess(namespace, {**os.environ, "CAPSTAN_METRICS_PORT": "0",
                                           "CAPSTAN_RECONCILE_INTERVAL": "1",
                                           "CAPSTAN_WORKER_ENV_ROOM_HOST_ADDRESS": stack.room_host_address},
                               logs / "operator.log")
    operator.start()
    try:
        rec = yaml.safe_load((ROOT / "examples" / "cloudrecording-janus.yaml").read_text())
        rec["spec"]["room"].update({"url": stack.janus_url, "strRoomId": room})
        rec["spec"]["storage"]["endpoint"] = stack.s3_endpoint
        name = rec["metadata"]["name"]
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", rec,
                                               _request_timeout=30)
        say(f"applied CloudRecording {namespace}/{name} (examples/cloudrecording-janus.yaml)")

        def status() -> dict:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", name,
                                                      _request_timeout=30)
            return obj.get("status") or {}

        seen: list[str] = []

        def follow(until: set[str], timeout: float = 180) -> dict:
            def step() -> dict | None:
                st = status()
                phase = st.get("phase")
                if phase and (not seen or seen[-1] != phase):
                    seen.append(phase)
                    say(f"phase {phase:<10} attempt={st.get('attempt')} {st.get('message') or ''}")
                return st if phase in until else None
            return wait_for(step, timeout, what=f"phase in {until}")

        follow({"recording"})
        say(f"recording for {RECORD_SECONDS} s ...")
        time.sleep(RECORD_SECONDS)
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", name,
                                              {"spec": {"stop": True}}, _request_timeout=30)
        say("set spec.stop=true")
        st = follow({"finished", "failed", "canceled"})
        say(f"final phase: {st['phase']} (phases seen: {' -> '.join(seen)})")
        for f in st.get("files") or []:
            extra = f" {f['duration']:.1f}s" if f.get("duration") else ""
            say(f"file: http://{stack.s3_endpoint}/{bucket}/{f['fileName']}  (user {f.get('userId')}, "
                f"{f.get('trackType')}{extra})")
        say(f"all objects: mc ls / aws s3 ls s3://{bucket}/{rec['spec']['output']['prefix']}/{st['taskId']}/ "
            f"(endpoint http://{stack.s3_endpoint}, keys from `make stack-env`)")
        say(f"kubectl: KUBECONFIG={stack.kubeconfig} kubectl get crec -n {namespace} -o wide")
        say(f"operator log: {logs / 'operator.log'}")
        return 0 if st["phase"] == "finished" and st.get("files") else 1
    finally:
        operator.stop()
        runner.stop()
        for anchor in anchors:
            on_loop(anchor.stop())
        loop.close()


def _s3(stack):  # type: ignore[no-untyped-def]
    from capstan.storage.client import client_from_env

    return client_from_env(stack.env())


if __name__ == "__main__":
    sys.exit(main())
