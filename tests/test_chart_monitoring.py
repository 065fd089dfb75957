"""The chart's monitoring and its values, rendered by the real helm: every dashboard query and alert
expression names only metrics Capstan exports (parsed out of the PromQL, compared with the registry),
`promtool check rules` passes on the alerts and on the dashboard's queries, `helm lint` passes with
the default and with non-default values, and a non-default render says what those values ask."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from capstan.operator.defaults import TaskDefaults
from devstack.stack import binaries
from tests.capstan_metrics import exported_names
from tests.operator.chart_rbac import CHART, KUBE_VERSION

pytestmark = pytest.mark.stack  # helm and promtool are built by the stack (make stack-up)

DASHBOARD = CHART / "dashboards" / "capstan.json"
ALERTS = {"CapstanOperatorDown", "CapstanTasksFailing", "CapstanCallbacksGivingUp", "CapstanQueueGrowing",
          "CapstanFailovers", "CapstanReconcileErrors", "CapstanUploadsRetrying", "CapstanWorkerFrameRateCollapsed",
          "CapstanWorkerDroppingFrames"}
# PromQL words that look like metric names: keywords, and aggregation modifiers.
KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                      "offset", "bool", "inf", "nan", "atan2", "start", "end"})
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w.:$])[a-zA-Z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables allowed where values go)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = GROUPING.sub(" ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        word, rest = match.group(), text[match.end():].lstrip()
        if word in KEYWORDS or rest.startswith("("):
            continue  # a keyword, or a function / aggregation
        names.add(word)
    return names


def test_metric_names_are_parsed_out_of_promql():
    assert metric_names('sum by (kind, le) (rate(capstan_x_bucket{kind="a",b=~"c|d"}[5m] offset 1h))') == \
        {"capstan_x_bucket"}
    assert metric_names("a / on(pod) group_left(node) b > 0.5 * c and absent(d) unless e{x='or'}") == \
        {"a", "b", "c", "d", "e"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[$__rate_interval])))") == {"h_bucket"}
    assert metric_names('max without (instance) (g{namespace=~"$namespace"}) > 1e3') == {"g"}
    assert metric_names("sum(rate(x[5m:1m])) by (kind)") == {"x"}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    path = binaries()["helm"]
    if not path.exists():
        pytest.fail(f"helm is not built ({path}): run `make stack-up`", pytrace=False)
    return subprocess.run([str(path), *args], capture_output=True, text=True, timeout=120, check=check)


def render(values: dict[str, Any], tmp_path: Path, release: str = "capstan") -> list[dict[str, Any]]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = helm("template", release, str(CHART), "--namespace", "capstan-system", "-f", str(values_file),
               "--kube-version", KUBE_VERSION).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert inner, var["query"]
            queries.append(inner.group(1))
    return queries


def alert_rules(tmp_path: Path) -> list[dict[str, Any]]:
    (rule,) = of_kind(render({"prometheusRule": {"enabled": True}}, tmp_path), "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def test_every_dashboard_query_names_only_exported_metrics():
    queries = dashboard_queries()
    assert len(queries) >= 20
    named = set()
    for query in queries:
        names = metric_names(query)
        assert names, f"no metric in {query!r}"
        assert names <= exported_names(), f"{query!r} names {sorted(names - exported_names())}, not exported"
        named |= names
    # the dashboard shows both sides: the operator's tasks and queue, the workers' frames and uploads
    assert {"capstan_tasks", "capstan_queue_length", "capstan_worker_frames_received_total",
            "capstan_worker_uploaded_bytes_total", "capstan_worker_push_drift_seconds"} <= named


def test_every_alert_expression_names_only_exported_metrics(tmp_path):
    rules = alert_rules(tmp_path)
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= exported_names(), (rule["alert"], sorted(names - exported_names()))
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def promtool_check(groups: list[dict[str, Any]], tmp_path: Path, name: str) -> str:
    path = binaries()["promtool"]
    if not path.exists():
        pytest.fail(f"promtool is not built ({path}): run `make stack-up`", pytrace=False)
    rules = tmp_path / f"{name}.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    done = subprocess.run([str(path), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_alerts(tmp_path):
    (rule,) = of_kind(render({"prometheusRule": {"enabled": True}}, tmp_path), "PrometheusRule")
    out = promtool_check(rule["spec"]["groups"], tmp_path, "alerts")
    assert f"SUCCESS: {len(ALERTS)} rules found" in out


def test_promtool_parses_every_dashboard_query(tmp_path):
    """As recording rules, with Grafana's variables put as Grafana would."""
    queries = [q.replace("$__rate_interval", "5m").replace("$namespace", ".*") for q in dashboard_queries()]
    rules = [{"record": f"capstan:dashboard_query_{i}", "expr": q} for i, q in enumerate(queries)]
    out = promtool_check([{"name": "dashboard", "rules": rules}], tmp_path, "dashboard")
    assert f"SUCCESS: {len(rules)} rules found" in out


NON_DEFAULT = {
    "watchNamespaces": ["team-a", "team-b"],
    "operator": {"priority": 200, "standby": {"enabled": True, "priority": 150}},
    "metrics": {"bindAddress": "podIP", "workerPort": 0, "serviceMonitor": {"enabled": True},
                "podMonitor": {"enabled": True, "labels": {"release": "kps"}}},
    "prometheusRule": {"enabled": True, "queueLength": 3, "labels": {"release": "kps"}},
    "networkPolicy": {"enabled": True,
                      "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    "dashboards": {"namespace": "grafana", "annotations": {"grafana_folder": "Capstan"}},
    "maxTasks": 7, "queuePolicy": "refuse",
    "urlPolicy": {"allowHosts": [".svc.cluster.local"]},
    "callbacks": {"timeoutSeconds": 3, "giveUpSeconds": 300},
    "workerImage": "registry.local/capstan-worker:1",
    "defaults": {"room": {"backend": "janus", "url": "ws://janus.rooms.svc:8188", "credentialsSecret": "janus-shared"},
                 "storage": {"endpoint": "minio.storage:9000", "bucket": "recordings", "region": "eu-west-1",
                             "secure": False, "credentialsSecret": "s3-shared",
                             "publicBaseUrl": "https://cdn.example/recordings"}},
}


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_helm_lint_with_default_and_non_default_values(tmp_path):
    helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION)
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(NON_DEFAULT))
    done = helm("lint", str(CHART), "--strict", "-f", str(values), "--kube-version", KUBE_VERSION)
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_default_render_runs_two_operators_with_distinct_priorities(tmp_path):
    docs = render({}, tmp_path)
    deployments = {d["metadata"]["labels"]["capstan.dev/operator-role"]: d for d in of_kind(docs, "Deployment")}
    assert sorted(deployments) == ["main", "standby"]
    priorities = {role: [a for a in d["spec"]["template"]["spec"]["containers"][0]["args"]
                         if a.startswith("--priority=")] for role, d in deployments.items()}
    assert priorities == {"main": ["--priority=100"], "standby": ["--priority=50"]}
    for d in deployments.values():
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate"
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] and spec["affinity"]["podAntiAffinity"]
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
        assert env_of(d)["CAPSTAN_WORKER_METRICS_PORT"] == "9090"
        assert "CAPSTAN_METRICS_ADDR" not in env_of(d)
        env = env_of(d)  # no default room server or storage: tasks must name theirs
        assert (env["CAPSTAN_DEFAULT_ROOM_BACKEND"], env["CAPSTAN_DEFAULT_ROOM_URL"]) == ("livekit", "")
        assert (env["CAPSTAN_DEFAULT_STORAGE_ENDPOINT"], env["CAPSTAN_DEFAULT_STORAGE_SECURE"]) == ("", "true")
    (dashboard,) = of_kind(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["capstan.json"]) == json.loads(DASHBOARD.read_text())
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"PodMonitor", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"}  # need their CRDs / opt-in
    (test_pod,) = [d for d in of_kind(docs, "Pod") if d["metadata"]["annotations"]["helm.sh/hook"] == "test"]
    assert "http://capstan-metrics.capstan-system.svc:8080/metrics" in test_pod["spec"]["containers"][0]["command"][2]


def test_non_default_render(tmp_path):
    docs = render(NON_DEFAULT, tmp_path)
    deployments = {d["metadata"]["labels"]["capstan.dev/operator-role"]: d for d in of_kind(docs, "Deployment")}
    main = deployments["main"]
    args = main["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["--priority=200", "--namespace=team-a", "--namespace=team-b"]
    assert deployments["standby"]["spec"]["template"]["spec"]["containers"][0]["args"][0] == "--priority=150"
    env = env_of(main)
    assert env["CAPSTAN_METRICS_ADDR"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["CAPSTAN_WORKER_METRICS_PORT"] == "0"
    assert (env["CAPSTAN_MAX_TASKS"], env["CAPSTAN_QUEUE_POLICY"]) == ("7", "refuse")
    assert (env["CAPSTAN_CALLBACK_TIMEOUT"], env["CAPSTAN_CALLBACK_GIVE_UP_SECONDS"]) == ("3", "300")
    assert env["CAPSTAN_URL_ALLOW_HOSTS"] == ".svc.cluster.local"
    assert env["CAPSTAN_WORKER_IMAGE"] == "registry.local/capstan-worker:1"
    assert "CAPSTAN_WORKER_IMAGE_RECORDER" not in env
    for deployment in deployments.values():  # main and standby apply the same defaults
        env = env_of(deployment)
        assert {k: v for k, v in env.items() if k.startswith("CAPSTAN_DEFAULT_")} == {
            "CAPSTAN_DEFAULT_ROOM_BACKEND": "janus", "CAPSTAN_DEFAULT_ROOM_URL": "ws://janus.rooms.svc:8188",
            "CAPSTAN_DEFAULT_ROOM_SECRET": "janus-shared", "CAPSTAN_DEFAULT_STORAGE_ENDPOINT": "minio.storage:9000",
            "CAPSTAN_DEFAULT_STORAGE_BUCKET": "recordings", "CAPSTAN_DEFAULT_STORAGE_REGION": "eu-west-1",
            "CAPSTAN_DEFAULT_STORAGE_SECURE": "false", "CAPSTAN_DEFAULT_STORAGE_SECRET": "s3-shared",
            "CAPSTAN_DEFAULT_STORAGE_PUBLIC_BASE_URL": "https://cdn.example/recordings"}
        # what the chart renders is what the operator accepts
        defaults = TaskDefaults.from_env(env)
        assert defaults.room.backend == "janus" and not defaults.storage.secure

    (pod_monitor,) = of_kind(docs, "PodMonitor")
    assert pod_monitor["metadata"]["labels"]["release"] == "kps"
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "capstan"}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    (service_monitor,) = of_kind(docs, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (rule,) = of_kind(docs, "PrometheusRule")
    growing = next(r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "CapstanQueueGrowing")
    assert "capstan_queue_length) > 3" in growing["expr"]

    policies = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in of_kind(docs, "NetworkPolicy")}
    assert sorted(policies) == [("capstan-system", "capstan-operator"), ("team-a", "capstan-workers"),
                                ("team-b", "capstan-workers")]
    operator_policy = policies[("capstan-system", "capstan-operator")]["spec"]
    assert operator_policy["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}],
                                           "from": NON_DEFAULT["networkPolicy"]["metricsFrom"]}]
    assert policies[("team-a", "capstan-workers")]["spec"]["ingress"] == []  # workerPort 0: nothing comes in

    (dashboard,) = of_kind(docs, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "grafana"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Capstan"}
    roles = {(r["metadata"]["namespace"]) for r in of_kind(docs, "Role")}
    assert roles == {"team-a", "team-b"}


@pytest.mark.parametrize(("values", "message"), [
    ({"operator": {"replicas": 2}}, "operator.replicas must be 0 or 1"),
    ({"operator": {"priority": 100, "standby": {"enabled": True, "priority": 100}}},
     "operator.standby.priority must be lower"),
])
def test_values_that_would_freeze_the_operators_are_refused(values, message, tmp_path):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    done = helm("template", "x", str(CHART), "-f", str(values_file), "--kube-version", KUBE_VERSION, check=False)
    assert done.returncode != 0 and message in done.stderr


@pytest.mark.parametrize(("values", "message"), [
    ({"defaults": {"room": {"url": "ws://livekit:7880"}}},
     "defaults.room.url and defaults.room.credentialsSecret are given together"),
    ({"defaults": {"storage": {"endpoint": "minio:9000", "credentialsSecret": "s3"}}},
     "defaults.storage.endpoint, .bucket and .credentialsSecret are given together"),
])
def test_half_given_defaults_are_refused(values, message, tmp_path):
    """The operator would refuse them at start (TaskDefaults.from_env): helm says so first."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    done = helm("template", "x", str(CHART), "-f", str(values_file), "--kube-version", KUBE_VERSION, check=False)
    assert done.returncode != 0 and message in done.stderr


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_pod_monitor_and_network_policy_select_the_worker_pods_the_operator_makes(tmp_path):
    from capstan.api import KINDS
    from capstan.operator import children
    from capstan.operator.config import OperatorConfig

    docs = render({"watchNamespaces": ["team-a"], "metrics": {"podMonitor": {"enabled": True}},
                   "networkPolicy": {"enabled": True}}, tmp_path)
    (pod_monitor,) = of_kind(docs, "PodMonitor")
    worker_policy = next(p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["namespace"] == "team-a")
    (deployment, *_) = of_kind(docs, "Deployment")
    port = int(env_of(deployment)["CAPSTAN_WORKER_METRICS_PORT"])
    for info in KINDS:
        body = {"kind": info.kind, "metadata": {"name": "t", "namespace": "team-a", "uid": "u"},
                "status": {"taskId": "x"}}
        pod = children.worker_pod(info, body, 1, OperatorConfig(worker_metrics_port=port))
        labels = pod["metadata"]["labels"]
        assert _selects(pod_monitor["spec"]["selector"], labels), info.kind
        assert _selects(worker_policy["spec"]["podSelector"], labels), info.kind
        (container,) = pod["spec"]["containers"]
        assert {p["name"] for p in container["ports"]} == {pod_monitor["spec"]["podMetricsEndpoints"][0]["port"]}
    operator_pod = deployment["spec"]["template"]["metadata"]["labels"]
    assert not _selects(pod_monitor["spec"]["selector"], operator_pod)  # the ServiceMonitor scrapes those
