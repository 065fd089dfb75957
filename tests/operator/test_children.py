from capstan.api import CLOUD_RECORDING
from capstan.operator import children
from capstan.operator.config import OperatorConfig

BODY = {"apiVersion": "capstan.dev/v1alpha1", "kind": "CloudRecording",
        "metadata": {"name": "class-1234", "namespace": "ns1", "uid": "uid-1"},
        "status": {"taskId": "task-1"}}


def test_role_names_only_its_own_resource():
    role = children.role(CLOUD_RECORDING, BODY)
    for rule in role["rules"]:
        assert rule["resourceNames"] == ["class-1234"]
        assert "create" not in rule["verbs"] and "delete" not in rule["verbs"]
    assert {r["resources"][0] for r in role["rules"]} == {"cloudrecordings", "cloudrecordings/status"}


def test_pod_is_deterministic_and_owned():
    cfg = OperatorConfig()
    pod = children.worker_pod(CLOUD_RECORDING, BODY, 2, cfg)
    assert pod == children.worker_pod(CLOUD_RECORDING, BODY, 2, cfg)
    assert pod["metadata"]["name"] == "class-1234-crec-a2"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert pod["spec"]["restartPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["CAPSTAN_ATTEMPT"] == "2" and env["CAPSTAN_TASK_ID"] == "task-1"


def test_long_names_are_shortened_with_a_hash():
    body = {**BODY, "metadata": {**BODY["metadata"], "name": "x" * 80}}
    name = children.pod_name(CLOUD_RECORDING, body["metadata"]["name"], 1)
    assert len(name) <= 63 and name != children.pod_name(CLOUD_RECORDING, "x" * 79, 1)


def test_each_worker_kind_runs_its_own_image():
    from capstan.api import WEB_RECORDING

    cfg = OperatorConfig(worker_images={"recorder": "rec:1", "panorama": "pano:1"})
    assert children.worker_pod(CLOUD_RECORDING, BODY, 1, cfg)["spec"]["containers"][0]["image"] == "rec:1"
    web = {**BODY, "kind": "WebRecording"}
    assert children.worker_pod(WEB_RECORDING, web, 1, cfg)["spec"]["containers"][0]["image"] == "pano:1"


def test_worker_may_only_patch_its_status_never_update_the_object():
    rules = {r["resources"][0]: r["verbs"] for r in children.role(CLOUD_RECORDING, BODY)["rules"]}
    assert rules == {"cloudrecordings": ["get", "list", "watch"], "cloudrecordings/status": ["patch"]}


def test_worker_pod_is_hardened_like_the_operator():
    pod = children.worker_pod(CLOUD_RECORDING, BODY, 1, OperatorConfig())
    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                       "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["runAsNonRoot"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # the only writable places: the task's spool PVC at /work and an emptyDir at /tmp
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/work", "/tmp"}
    assert {v["name"]: next(iter(set(v) - {"name"})) for v in spec["volumes"]} == {
        "work": "persistentVolumeClaim", "tmp": "emptyDir"}
    assert container["resources"]["limits"]["ephemeral-storage"]


def test_worker_resources_are_configurable_per_worker(monkeypatch):
    monkeypatch.setenv("CAPSTAN_WORKER_RESOURCES", '{"default": {"requests": {"cpu": "1"}}, '
                                                   '"recorder": {"limits": {"ephemeral-storage": "50Gi"}}}')
    cfg = OperatorConfig.from_env()
    from capstan.api import STREAM_PUSH

    assert children.worker_pod(CLOUD_RECORDING, BODY, 1, cfg)["spec"]["containers"][0]["resources"] == {
        "limits": {"ephemeral-storage": "50Gi"}}
    push = {**BODY, "kind": "StreamPush"}
    assert children.worker_pod(STREAM_PUSH, push, 1, cfg)["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1"}}


def test_every_attempt_mounts_the_tasks_one_spool_claim():
    cfg = OperatorConfig(spool_size="3Gi", spool_storage_class="fast")
    claim = children.spool_claim(CLOUD_RECORDING, BODY, cfg)
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert claim["spec"]["resources"]["requests"]["storage"] == "3Gi" and claim["spec"]["storageClassName"] == "fast"
    for attempt in (1, 2, 4):
        (work,) = [v for v in children.worker_pod(CLOUD_RECORDING, BODY, attempt, cfg)["spec"]["volumes"]
                   if v["name"] == "work"]
        assert work["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_a_long_task_name_still_makes_valid_labels_and_names():
    """A name over 52 characters used to make a label value over 63: the task never started."""
    body = {**BODY, "metadata": {**BODY["metadata"], "name": "n" * 200}}
    pod = children.worker_pod(CLOUD_RECORDING, body, 3, OperatorConfig())
    claim = children.spool_claim(CLOUD_RECORDING, body, OperatorConfig())
    for obj in (pod, claim, children.role(CLOUD_RECORDING, body), children.service_account(CLOUD_RECORDING, body)):
        assert len(obj["metadata"]["name"]) <= 63
        assert all(len(v) <= 63 for v in obj["metadata"]["labels"].values())


def test_more_failovers_than_the_names_allow_are_refused(monkeypatch):
    import pytest

    monkeypatch.setenv("CAPSTAN_MAX_FAILOVERS", "4")
    with pytest.raises(ValueError, match="0..3"):
        OperatorConfig.from_env()
