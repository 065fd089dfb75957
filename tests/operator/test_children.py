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
    # the only writable places are emptyDirs
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/work", "/tmp"}
    assert all("emptyDir" in v for v in spec["volumes"])
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
