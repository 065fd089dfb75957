"""`make demo`: Capstan records a real room on the local real stack.

Starts (or reuses) the stack, installs the CRDs, runs the pod runner and the operator, puts two
synthetic anchors (a colour and a tone each) into a real room — LiveKit by default, Janus VideoRoom
with ``--room janus`` (``make demo ROOM=janus``) — applies a single-stream CloudRecording
(examples/cloudrecording-single.yaml, or -janus.yaml), follows the task through its phases, stops
it, and prints where its files are.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client, config

from capstan.api import GROUP, VERSION
from devstack.anchors import SyntheticAnchor
from devstack.harness import ROOT, BackgroundLoop, OperatorProcess, install_crds, wait_for
from devstack.podrunner import PodRunner
from devstack.rooms import BACKENDS, RoomServer
from devstack.stack import ensure_up

RECORD_SECONDS = 12
EXAMPLES = {"livekit": "cloudrecording-single.yaml", "janus": "cloudrecording-janus.yaml"}
ANCHORS = {"teacher": ((220, 40, 40), 440.0), "student": ((40, 60, 220), 880.0)}


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--room", choices=BACKENDS, default="livekit", help="the room backend (default livekit)")
    backend = parser.parse_args(argv).room
    say("starting the local stack (first run builds it: see docs/development.md)")
    stack = ensure_up()
    try:
        server = RoomServer.from_stack(backend, stack)
    except RuntimeError as exc:
        say(f"the room server cannot run here: {exc}")
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
    example = yaml.safe_load((ROOT / "examples" / EXAMPLES[backend]).read_text())
    room_secret = example["spec"]["room"]["credentialsSecretRef"]["name"]
    for name, data in (("storage-credentials", {"accessKey": stack.s3_access_key, "secretKey": stack.s3_secret_key}),
                       (room_secret, server.secret_data())):
        core.create_namespaced_secret(namespace, {"metadata": {"name": name, "labels": {"capstan.dev/use": "true"}},
                                                  "stringData": data},
                                      _request_timeout=30)
    bucket = "recordings"
    s3 = _s3(stack)
    if not s3.bucket_exists(bucket):
        s3.make_bucket(bucket)

    loop = BackgroundLoop()
    on_loop = loop.run
    control = server.control()
    on_loop(control.create_room(room))
    anchors = []
    for user, (color, tone) in ANCHORS.items():
        anchor = SyntheticAnchor(server, room, user, color=color, tone_hz=tone)
        on_loop(anchor.start())
        anchors.append(anchor)
        say(f"anchor {user!r} publishes colour {color} and a {tone:.0f} Hz tone in {backend} room {room!r}")

    logs = Path(tempfile.mkdtemp(prefix="capstan-demo-"))
    runner = PodRunner(kubeconfig=stack.kubeconfig, namespace_prefix=namespace)
    runner.start()
    operator = OperatorProcess(namespace, {**os.environ, "CAPSTAN_METRICS_PORT": "0",
                                           "CAPSTAN_RECONCILE_INTERVAL": "1", **server.worker_env()},
                               logs / "operator.log")
    operator.start()
    try:
        rec = example
        rec["spec"]["room"].pop("roomId", None)
        rec["spec"]["room"].update({"url": server.url, "strRoomId": room})
        rec["spec"]["storage"]["endpoint"] = stack.s3_endpoint
        rec["spec"].pop("callback", None)  # the demo runs no callback receiver
        name = rec["metadata"]["name"]
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", rec,
                                               _request_timeout=30)
        say(f"applied CloudRecording {namespace}/{name} (examples/{EXAMPLES[backend]}, with this room and MinIO)")

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
        on_loop(control.close_room(room))
        on_loop(control.aclose())
        loop.close()


def _s3(stack):  # type: ignore[no-untyped-def]
    from capstan.storage.client import client_from_env

    return client_from_env(stack.env())


if __name__ == "__main__":
    sys.exit(main())
