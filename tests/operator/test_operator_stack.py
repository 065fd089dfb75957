"""The operator against the real API server, with the pod runner playing the kubelet."""

from __future__ import annotations

import base64
import copy
import signal

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from capstan.api import GROUP, VERSION
from devstack import podrunner
from tests.conftest import wait_for

ROOM = {"url": "ws://127.0.0.1:7880", "sdkAppId": 1400000000, "roomId": 1234,
        "credentialsSecretRef": {"name": "livekit-credentials"}}
STORAGE = {"endpoint": "127.0.0.1:9000", "bucket": "recordings", "secure": False,
           "credentialsSecretRef": {"name": "storage-credentials"}}


USE = {"labels": {"capstan.dev/use": "true"}}  # Secrets opt in to being used by tasks


def recording(name: str, **spec) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CloudRecording", "metadata": {"name": name},
            "spec": {"room": ROOM, "recorderUserId": f"robot-{name}", "storage": STORAGE, **spec}}


class Tasks:
    def __init__(self, kube_api, namespace):
        self.api = client.CustomObjectsApi(kube_api)
        self.core = client.CoreV1Api(kube_api)
        self.rbac = client.RbacAuthorizationV1Api(kube_api)
        self.ns = namespace

    def create_credentials(self):
        """The Secrets ROOM and STORAGE refer to (the worker gets them only as secretKeyRefs)."""
        for name, data in (("livekit-credentials", {"apiKey": "devkey", "apiSecret": "devsecret" * 4}),
                           ("storage-credentials", {"accessKey": "capstan", "secretKey": "capstan-secret"})):
            self.core.create_namespaced_secret(self.ns, {"metadata": {"name": name, **USE}, "stringData": data},
                                               _request_timeout=30)
        return self

    def create(self, obj):
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, "cloudrecordings", obj,
                                                        _request_timeout=30)

    def get(self, name):
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, "cloudrecordings", name,
                                                         _request_timeout=30)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name):
        return (self.get(name) or {}).get("status") or {}

    def patch_spec(self, name, spec):
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, "cloudrecordings", name,
                                                       {"spec": spec}, _request_timeout=30)

    def delete(self, name):
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, "cloudrecordings", name,
                                                 _request_timeout=30)

    def wait_phase(self, name, phases, timeout=60):
        phases = {phases} if isinstance(phases, str) else set(phases)
        return wait_for(lambda: self.status(name) if self.status(name).get("phase") in phases else None,
                        timeout, what=f"{name} in phase {phases}")

    def pod(self, name):
        try:
            return self.core.read_namespaced_pod(name, self.ns, _request_timeout=30)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def events(self, name):
        evs = self.core.list_namespaced_event(self.ns, field_selector=f"involvedObject.name={name}",
                                              _request_timeout=30).items
        return [(e.reason, e.message) for e in evs]


@pytest.fixture
def tasks(kube_api, namespace):
    return Tasks(kube_api, namespace).create_credentials()


def worker_api(namespace: str, pod: str) -> client.CustomObjectsApi:
    """An API client that authenticates with exactly the token the pod runner gave the worker."""
    from kubernetes import config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(podrunner.pod_dir(namespace, pod) / "kubeconfig"),
                            client_configuration=cfg)
    return client.CustomObjectsApi(client.ApiClient(cfg))


def test_worker_runs_with_its_own_narrow_identity(operator, tasks, namespace):
    tasks.create(recording("alpha"))
    tasks.create(recording("beta", stop=True))  # another task, never started
    st = tasks.wait_phase("alpha", "idle")
    annotations = tasks.get("alpha")["metadata"].get("annotations") or {}
    # kopf keeps no diff base (no change handlers), and nothing under its own prefix
    assert "capstan.dev/last-handled-configuration" not in annotations, annotations
    assert not any(k.startswith("kopf.zalando.org/") for k in annotations), annotations
    assert st["attempt"] == 1 and st["taskId"] and st["room"] == "1234"
    assert st["workerPod"] == "alpha-crec-a1"
    assert "attempt 1" in st["message"]  # written by the worker itself
    # children: pod, service account, role, role binding, all owned by the task
    pod = tasks.pod("alpha-crec-a1")
    assert pod.status.phase == "Running" and pod.spec.service_account_name == "alpha-crec-worker"
    assert pod.metadata.owner_references[0].name == "alpha"
    tasks.core.read_namespaced_service_account("alpha-crec-worker", namespace, _request_timeout=30)
    role = tasks.rbac.read_namespaced_role("alpha-crec-worker", namespace, _request_timeout=30)
    assert all(r.resource_names == ["alpha"] for r in role.rules)
    tasks.rbac.read_namespaced_role_binding("alpha-crec-worker", namespace, _request_timeout=30)

    # The worker's own token: may patch its own status, may not touch another task.
    api = worker_api(namespace, "alpha-crec-a1")
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "cloudrecordings", "alpha",
                                              {"status": {"message": "hello from the worker token"}},
                                              _request_timeout=30)
    assert tasks.status("alpha")["message"] == "hello from the worker token"
    for call in (
        lambda: api.get_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", "beta",
                                                 _request_timeout=30),
        lambda: api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "cloudrecordings", "beta",
                                                          {"status": {"phase": "failed"}}, _request_timeout=30),
        lambda: api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings", "alpha",
                                                   {"spec": {"stop": True}}, _request_timeout=30),
    ):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 403

    tasks.patch_spec("alpha", {"stop": True})
    st = tasks.wait_phase("alpha", "finished", timeout=60)
    assert st["finishTime"] and st["cancelTime"] and st["stopTime"]
    assert tasks.pod("alpha-crec-a1").status.phase == "Succeeded"
    assert tasks.wait_phase("beta", "canceled")["phase"] == "canceled"
    reasons = [r for r, _ in tasks.events("alpha")]
    for reason in ("Accepted", "Admitted", "WorkerCreated", "StopRequested", "Finished"):
        assert reason in reasons, reasons
    transitions = [m.split(":")[0] for r, m in tasks.events("alpha") if r == "PhaseChanged"]
    for change in ("normal -> idle", "idle -> upload"):  # the worker's phases
        assert change in transitions, transitions
    # the end is told once, by `Finished`, not again by a PhaseChanged beside it
    assert not any(t.endswith("-> finished") for t in transitions), transitions
    beta = [r for r, _ in tasks.events("beta")]  # stopped before it started: Accepted, then Canceled only
    assert beta.count("Accepted") == 1 and beta.count("Canceled") == 1, beta
    assert "StopRequested" not in beta and "PhaseChanged" not in beta, beta


def test_killed_worker_is_replaced_by_attempt_two(operator, tasks, namespace):
    tasks.create(recording("gamma"))
    tasks.wait_phase("gamma", "idle")
    task_id = tasks.status("gamma")["taskId"]
    wait_for(lambda: podrunner.container_pid(namespace, "gamma-crec-a1"), 30, what="worker pid")
    podrunner.kill_container(namespace, "gamma-crec-a1", sig=signal.SIGKILL)
    st = wait_for(lambda: (s := tasks.status("gamma")).get("attempt") == 2 and s.get("phase") == "idle"
                  and s, 60, what="attempt 2 recording")
    assert st["taskId"] == task_id and st["failovers"] == 1 and st["workerPod"] == "gamma-crec-a2"
    assert "attempt 2" in st["message"]
    assert tasks.pod("gamma-crec-a2").status.phase == "Running"
    assert any(r == "Failover" and "137" in m for r, m in tasks.events("gamma"))
    tasks.patch_spec("gamma", {"stop": True})
    tasks.wait_phase("gamma", "finished")


def test_failovers_are_bounded_and_end_in_failed(operator_factory, tasks, namespace):
    operator_factory(CAPSTAN_MAX_FAILOVERS="1")
    tasks.create(recording("delta"))
    for attempt in (1, 2):
        pod = f"delta-crec-a{attempt}"
        wait_for(lambda p=pod: podrunner.container_pid(namespace, p), 60, what=f"{pod} running")
        podrunner.kill_container(namespace, pod, sig=signal.SIGKILL)
    st = tasks.wait_phase("delta", "failed")
    assert "after 1 failovers" in st["result"]["errorMessage"] and st["result"]["errorCode"] == "WorkerFailed"
    assert any(c["type"] == "Finished" for c in st["conditions"])


def test_delete_waits_for_the_worker_to_stop(operator, tasks, namespace):
    tasks.create(recording("epsilon"))
    tasks.wait_phase("epsilon", "idle")
    tasks.delete("epsilon")
    # Still there, held by the finalizer, while the worker finishes.
    obj = tasks.get("epsilon")
    assert obj is not None and obj["metadata"].get("deletionTimestamp")
    assert "capstan.dev/finalizer" in obj["metadata"]["finalizers"]
    wait_for(lambda: tasks.get("epsilon") is None, 60, what="resource gone")
    log = (podrunner.pod_dir(namespace, "epsilon-crec-a1") / "recorder.log").read_text()
    assert "stopping: resource deleted" in log
    assert tasks.pod("epsilon-crec-a1") is None
    with pytest.raises(ApiException):
        tasks.core.read_namespaced_service_account("epsilon-crec-worker", namespace, _request_timeout=30)


def test_operator_restart_neither_loses_nor_duplicates(operator, tasks, namespace):
    tasks.create(recording("zeta"))
    before = tasks.wait_phase("zeta", "idle")
    operator.restart(kill=True)
    tasks.create(recording("eta"))
    tasks.wait_phase("eta", "idle")
    after = tasks.status("zeta")
    assert after["taskId"] == before["taskId"] and after["attempt"] == 1 and after["phase"] == "idle"
    pods = tasks.core.list_namespaced_pod(namespace, label_selector="capstan.dev/task=zeta",
                                          _request_timeout=30).items
    assert [p.metadata.name for p in pods] == ["zeta-crec-a1"]
    for name in ("zeta", "eta"):
        tasks.patch_spec(name, {"stop": True})
    for name in ("zeta", "eta"):
        tasks.wait_phase(name, "finished")


@pytest.mark.timeout(1500)
def test_queue_beyond_the_quota(operator_factory, tasks, namespace):
    """101 tasks with the quota at 100: exactly one waits in `normal` until another ends."""
    operator_factory(CAPSTAN_MAX_TASKS="100")
    template = recording("q")
    for i in range(101):
        obj = copy.deepcopy(template)
        obj["metadata"]["name"] = f"q{i:03d}"
        tasks.create(obj)

    def admitted_and_queued():
        items = tasks.api.list_namespaced_custom_object(GROUP, VERSION, namespace, "cloudrecordings",
                                                        _request_timeout=60)["items"]
        admitted = [o for o in items if any(c["type"] == "Admitted" and c["status"] == "True"
                                            for c in (o.get("status") or {}).get("conditions", []))]
        queued = [o for o in items if any(c["type"] == "Queued" and c["status"] == "True"
                                          for c in (o.get("status") or {}).get("conditions", []))]
        return (len(admitted), len(queued), queued) if len(admitted) + len(queued) == 101 else None

    n_admitted, n_queued, queued = wait_for(admitted_and_queued, 600, interval=2, what="all tasks seen")
    assert (n_admitted, n_queued) == (100, 1)
    waiting = queued[0]["metadata"]["name"]
    assert waiting == "q100" and queued[0]["status"]["phase"] == "normal"
    assert "1 in queue" in queued[0]["status"]["message"]
    tasks.patch_spec("q000", {"stop": True})
    # finished once its worker ran; canceled when the stop came before its Pod started (a loaded machine)
    tasks.wait_phase("q000", {"finished", "canceled"}, timeout=300)
    st = wait_for(lambda: (s := tasks.status(waiting)).get("phase") == "idle" and s, 300,
                  what="queued task admitted")
    assert any(c["type"] == "Admitted" and c["status"] == "True" for c in st["conditions"])
    # clean up: stop everything so the workers exit
    for i in range(101):
        tasks.patch_spec(f"q{i:03d}", {"stop": True})


def test_missing_secret_fails_the_task_naming_the_field(operator, kube_api, namespace):
    tasks = Tasks(kube_api, namespace)  # no credentials Secrets
    tasks.create(recording("nosecret"))
    st = tasks.wait_phase("nosecret", "failed")
    assert st["result"]["errorCode"] == "InvalidParameter"
    assert st["result"]["errorMessage"].startswith("spec.room.credentialsSecretRef")
    assert "livekit-credentials" in st["result"]["errorMessage"]
    # the Event is posted right after the status write that failed the task
    wait_for(lambda: any(r == "InvalidParameter" for r, _ in tasks.events("nosecret")), 30,
             what="the InvalidParameter Event")
    assert tasks.pod("nosecret-crec-a1") is None


def test_worker_pod_gets_secrets_only_as_references(operator, tasks, namespace):
    tasks.create(recording("refs"))
    tasks.wait_phase("refs", "idle")
    pod = tasks.pod("refs-crec-a1")
    env = {e.name: e for e in pod.spec.containers[0].env}
    assert env["ROOM_TOKEN"].value_from.secret_key_ref.name == "refs-crec-token"
    assert env["S3_SECRET_KEY"].value_from.secret_key_ref.name == "storage-credentials"
    literal = " ".join(e.value or "" for e in pod.spec.containers[0].env)
    assert "capstan-secret" not in literal and "devsecret" not in literal
    token = tasks.core.read_namespaced_secret("refs-crec-token", namespace, _request_timeout=30)
    assert token.metadata.owner_references[0].name == "refs"
    assert base64.b64decode(token.data["token"]).count(b".") == 2  # a JWT
    tasks.patch_spec("refs", {"stop": True})
    tasks.wait_phase("refs", "finished")


def test_a_task_the_worker_refuses_fails_clearly_without_failover(operator_factory, tasks):
    """A worker that cannot do a task however often it is retried (exit 3) ends it at once, naming why."""
    operator_factory(CAPSTAN_WORKER_ENV_CAPSTAN_WORKER_MODE="media")
    # a custom window past the default canvas (1280x720): the API server cannot know the default
    region = {"userId": "a", "top": 0, "left": 1600, "width": 100, "height": 100}
    tasks.create(recording("mixed", recordMode="mix", mixLayout={"mode": "custom", "regions": [region]}))
    st = tasks.wait_phase("mixed", "failed", timeout=120)  # media mode imports PyAV first: slow when loaded
    assert st["attempt"] == 1 and st["failovers"] == 0
    assert st["result"]["errorCode"] == "InvalidParameter"
    assert st["result"]["errorMessage"].startswith("spec.mixLayout.regions[0]")


def test_operator_exposes_prometheus_metrics(operator_factory, tasks):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    operator_factory(CAPSTAN_METRICS_PORT=str(port), CAPSTAN_METRICS_ADDR="127.0.0.1")
    tasks.create(recording("metered"))
    tasks.wait_phase("metered", "idle")
    tasks.patch_spec("metered", {"stop": True})
    tasks.wait_phase("metered", "finished")

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    def finished_counted() -> str | None:
        text = scrape()
        return text if 'phase="finished"' in text else None

    text = wait_for(finished_counted, 30, what="metrics")
    assert 'capstan_tasks_accepted_total{kind="cloudrecordings"} 1.0' in text
    assert 'capstan_tasks_ended_total{kind="cloudrecordings",phase="finished"} 1.0' in text
