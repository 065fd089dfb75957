"""The gateway with exactly the chart's RBAC: `helm template` renders gateway-rbac.yaml, its ServiceAccount,
Roles and bindings are applied to the stack's API server, and the gateway runs with a TokenRequest token
of that ServiceAccount (not as the admin). Every action it serves works, and nothing is refused to it."""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.operator.chart_rbac import CHART, render

from .conftest import SDKAPPID, launch
from .test_gateway_stack import get, sdk_error, storage

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


@pytest.fixture
def release_namespace(kube_api: Any) -> Any:
    from devstack.pytest_plugin import SESSION_NAMESPACE_PREFIX

    name = f"{SESSION_NAMESPACE_PREFIX}gw-sys-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name, "labels": {"capstan-test": "1"}}}, _request_timeout=30)
    yield name
    with contextlib.suppress(Exception):
        core.delete_namespace(name, _request_timeout=30)


def apply_gateway_rbac(kube_api: Any, stack: Any, release_ns: str, namespaces: list[str]) -> str:
    """Apply the chart's gateway ServiceAccount and RBAC; the name of the ServiceAccount."""
    docs = render(stack.helm, "gw", release_ns, {"gateway": {"enabled": True, "namespaces": namespaces}}, CHART)
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    mine = [d for d in docs if d["metadata"]["name"].startswith("gw-capstan-gateway")]
    sa = next(d for d in mine if d["kind"] == "ServiceAccount")
    core.create_namespaced_service_account(release_ns, sa, _request_timeout=30)
    for obj in mine:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] == "Role":
            rbac.create_namespaced_role(ns, obj, _request_timeout=30)
        elif obj["kind"] == "RoleBinding":
            rbac.create_namespaced_role_binding(ns, obj, _request_timeout=30)
        elif obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            raise AssertionError("with gateway.namespaces set there is no cluster-wide RBAC")
    return str(sa["metadata"]["name"])


def kubeconfig_for(kube_api: Any, stack: Any, namespace: str, sa: str, path: Any) -> str:
    token = client.CoreV1Api(kube_api).create_namespaced_service_account_token(
        sa, namespace, {"spec": {"expirationSeconds": 3600}}, _request_timeout=30).status.token
    user = f"system:serviceaccount:{namespace}:{sa}"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "devstack", "cluster": {"server": stack.apiserver_url,
                                                      "certificate-authority": stack.ca_file}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": user}}],
        "current-context": "devstack"}))
    return str(path)


def test_the_gateway_needs_no_more_than_the_chart_grants(stack, kube_api, crds, namespace, other_namespace,
                                                         release_namespace, bucket, tmp_path):
    sa = apply_gateway_rbac(kube_api, stack, release_namespace, [namespace, other_namespace])
    kubeconfig = kubeconfig_for(kube_api, stack, release_namespace, sa, tmp_path / "gateway.kubeconfig")
    gw = launch(stack, kube_api, release_namespace, namespace, other_namespace, tmp_path,
                env={"KUBECONFIG": kubeconfig})
    try:
        body = {"SdkAppId": SDKAPPID, "RoomId": "99", "UserId": "robot", "UserSig": "token",
                "RecordParams": {"RecordMode": 1}, "StorageParams": storage(bucket, stack)}
        task_id = gw.call("CreateCloudRecording", body).TaskId
        obj = get(kube_api, namespace, "cloudrecordings", task_id)
        secret = client.CoreV1Api(kube_api).read_namespaced_secret(f"trtc-{task_id}-storage", namespace,
                                                                   _request_timeout=30)
        assert secret.metadata.owner_references[0].uid == obj["metadata"]["uid"]  # the patch was allowed
        assert gw.call("DescribeCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id}).Status == "Idle"
        gw.call("ModifyCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id,
                                         "SubscribeStreamUserIds": {"SubscribeAudioUserIds": ["a"]}})
        gw.call("DeleteCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id})
        assert get(kube_api, namespace, "cloudrecordings", task_id)["spec"]["stop"] is True
        web = {"SdkAppId": SDKAPPID, "RecordUrl": "https://class.example/", "StorageParams": storage(bucket, stack),
               "RecordId": "r1"}
        web_id = gw.call("StartWebRecord", web).TaskId  # lists by label first
        assert gw.call("DescribeWebRecord", {"SdkAppId": SDKAPPID, "RecordId": "r1"}).TaskId == web_id
        gw.call("StopWebRecord", {"TaskId": web_id})
        # the other namespace is searched too (team B's tasks would be there): allowed, and not found
        err = sdk_error(lambda: gw.call("DescribeCloudRecording", {"SdkAppId": SDKAPPID, "TaskId": task_id},
                                        key=("AKIDgatewayTeamB0001", "team-b-secret-key-for-tests-0001")))
        assert err.code == "ResourceNotFound"
        log = gw.log()
        # a 403 as a status, not inside the gateway's random port number
        assert not re.search(r"\b403\b", log) and "orbidden" not in log, log[-3000:]
        # and it cannot read Secrets: the token is refused what the chart did not grant
        from kubernetes import config as kconfig

        api = kconfig.new_client_from_config(config_file=kubeconfig)
        with pytest.raises(client.exceptions.ApiException) as denied:
            client.CoreV1Api(api).read_namespaced_secret(f"trtc-{task_id}-storage", namespace, _request_timeout=30)
        assert denied.value.status == 403
    finally:
        gw.stop()
