"""`make demo`: Capstan on the local real stack, end to end as far as it is built.

Starts (or reuses) the stack, installs the CRDs, runs the pod runner and the operator, applies
the example Secrets and a CloudRecording, follows the task through its phases, stops it, and
prints where its files are. The recorder's media pipeline needs a LiveKit server, which cannot be
built on this machine (see devstack/README.md): until it exists, the worker does only its base
work and the demo says so instead of pretending to have recorded.
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
from devstack.harness import ROOT, OperatorProcess, install_crds, wait_for
from devstack.podrunner import PodRunner
from devstack.stack import ensure_up

NAMESPACE = "capstan-demo"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def main() -> int:
    say("starting the local stack (first run builds it: see docs/development.md)")
    stack = ensure_up()
    os.environ.update(stack.env())
    config.load_kube_config(config_file=stack.kubeconfig)
    api_client = client.ApiClient()
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    install_crds(api_client)
    say("CRDs installed: " + ", ".join(p.name for p in sorted((ROOT / "crds").glob("*.yaml"))))

    run = int(time.time())
    namespace = f"{NAMESPACE}-{run}"
    core.create_namespace({"metadata": {"name": namespace}}, _request_timeout=30)
    for doc in yaml.safe_load_all((ROOT / "examples" / "secrets.yaml").read_text()):
        if doc["metadata"]["name"] == "storage-credentials":
            doc["stringData"] = {"accessKey": stack.s3_access_key, "secretKey": stack.s3_secret_key}
        core.create_namespaced_secret(namespace, doc, _request_timeout=30)

    logs = Path(tempfile.mkdtemp(prefix="capstan-demo-"))
    runner = PodRunner(kubeconfig=stack.kubeconfig)
    runner.start()
    operator = OperatorProcess(namespace, {**os.environ, "CAPSTAN_METRICS_PORT": "0",
                                           "CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE": "base",
                                           "CAPSTAN_RECONCILE_INTERVAL": "1"}, logs / "operator.log")
    operator.start()
    try:
        rec = yaml.safe_load((ROOT / "examples" / "cloudrecording-single.yaml").read_text())
        rec["spec"]["storage"]["endpoint"] = stack.s3_endpoint
        rec["spec"].pop("callback", None)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", rec,
                                               _request_timeout=30)
        name = rec["metadata"]["name"]
        say(f"applied CloudRecording {namespace}/{name}")

        def status() -> dict:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", name,
                                                      _request_timeout=30)
            return obj.get("status") or {}

        seen: list[str] = []

        def follow(until: set[str]) -> dict:
            def step() -> dict | None:
                st = status()
                phase = st.get("phase")
                if phase and (not seen or seen[-1] != phase):
                    seen.append(phase)
                    say(f"phase {phase:<10} attempt={st.get('attempt')} {st.get('message') or ''}")
                return st if phase in until else None
            return wait_for(step, 120, what=f"phase in {until}")

        st = follow({"recording", "idle"})
        say(f"worker pod {st['workerPod']} runs as its own ServiceAccount; task id {st['taskId']}")
        time.sleep(3)
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", name,
                                              {"spec": {"stop": True}}, _request_timeout=30)
        say("set spec.stop=true")
        st = follow({"finished", "failed", "canceled"})
        say(f"final phase: {st['phase']} (phases seen: {' -> '.join(seen)})")
        files = st.get("files") or []
        bucket, prefix = rec["spec"]["storage"]["bucket"], rec["spec"]["output"].get("prefix", "")
        if files:
            for f in files:
                say(f"file: s3://{bucket}/{f['fileName']}  {f.get('url') or ''}")
        else:
            say(f"no media files: the recorder's media pipeline is not built yet (LiveKit server is not "
                f"buildable here, see devstack/README.md). Files will go to s3://{bucket}/{prefix}/{st['taskId']}/")
        say(f"kubectl: KUBECONFIG={stack.kubeconfig} kubectl get crec -n {namespace} -o wide")
        say(f"operator log: {logs / 'operator.log'}")
        return 0 if st["phase"] == "finished" else 1
    finally:
        operator.stop()
        runner.stop()


if __name__ == "__main__":
    sys.exit(main())
