"""The Helm chart (deploy/helm/switchgear) and the plain manifests rendered from it
(deploy/kubernetes): helm lints it strictly; every object it renders, with its default values and
with the production example's, passes the Kubernetes schemas (kubernetes-validate) or, for the
Prometheus operator's kinds, that operator's CRD schemas, and promtool loads the SLO rules; the
committed manifests and SLO rules are a fresh render; and what the objects say agrees with the
gateway: its config loader reads the ConfigMap, its probes and port, its drain timings, its
secrets (named, never inlined) and the metric the autoscaler scales on."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import openai
import pytest
import urllib3
import yaml
from chart_support import (
    CHART,
    PRODUCTION,
    ROOT,
    find,
    helm,
    objects,
    parse_command,
    production_arguments,
    render,
)
from prometheus_client.parser import text_string_to_metric_families

from switchgear.config import Config, env_settings, own_secrets, parse_config

from servers import gateway

#: The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest schemas
#: kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
#: Kinds outside the Kubernetes schemas, checked against the Prometheus operator's CRD schemas.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
OPERATOR_MODELS = (ROOT / ".venv" / "kubernetes-tools" / "node_modules" / "@kubernetes-models"
                   / "prometheus-operator" / "monitoring.coreos.com" / "v1")


@pytest.fixture(params=["default", "production"])
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(helm arguments, objects) of the chart with its default values, and with
    deploy/helm/production-values.yaml (its own SLO rules passed in)."""
    arguments = [] if request.param == "default" else production_arguments(tmp_path)
    return arguments, objects(arguments)


def gateway_config(items: list[dict[str, Any]]) -> Config:
    """The ConfigMap's gateway config, read by switchgear's own loader."""
    config: Config = parse_config(yaml.safe_load(render.gateway_config(items)), "ConfigMap")
    return config


def container(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway's container in the Deployment."""
    spec = find(items, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["gateway"]
    found: dict[str, Any] = spec["containers"][0]
    return found


def test_helm_lints_the_chart_strictly(tmp_path: Path) -> None:
    for arguments in ([], production_arguments(tmp_path)):
        linted = helm("lint", "--strict", str(CHART), *arguments)
        assert "0 chart(s) failed" in linted.stdout
        assert "[WARNING]" not in linted.stdout and "[ERROR]" not in linted.stdout


def test_every_object_passes_the_kubernetes_schemas(
        rendered: tuple[list[str], list[dict[str, Any]]]) -> None:
    _, items = rendered
    kinds = {item["kind"] for item in items}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy",
            "ServiceAccount"} <= kinds
    assert "Secret" not in kinds  # secrets are named, never made here
    for item in items:
        if item["kind"] in OPERATOR_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(item, version, strict=True)
    broken = find(items, "Deployment")
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/"
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: no unknown field
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def operator_problems(items: list[dict[str, Any]]) -> list[str]:
    """Each object's problems against the Prometheus operator's CRD schema ("ok" when none)."""
    node = shutil.which("node")
    assert node is not None and OPERATOR_MODELS.is_dir(), \
        "the Prometheus operator's schemas are missing: run scripts/setup --dev"
    script = "".join(f'import {{ {kind} }} from "{OPERATOR_MODELS}/{kind}.js";\n'
                     for kind in sorted(OPERATOR_KINDS))
    script += f"""const kinds = {{ {", ".join(sorted(OPERATOR_KINDS))} }};
for (const item of {json.dumps(items)}) {{
  try {{ new kinds[item.kind](item).validate(); console.log("ok"); }}
  catch (error) {{ console.log(error.message.replace(/\\n/g, " ")); }}
}}
"""
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_monitoring_objects_pass_the_prometheus_operators_schemas_and_promtool(
        rendered: tuple[list[str], list[dict[str, Any]]], tmp_path: Path) -> None:
    _, items = rendered
    monitoring = [item for item in items if item["kind"] in OPERATOR_KINDS]
    assert sorted(item["kind"] for item in monitoring) == ["PrometheusRule", "ServiceMonitor"]
    rule, monitor = (json.loads(json.dumps(find(items, kind)))
                     for kind in ("PrometheusRule", "ServiceMonitor"))
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    monitor["spec"]["endpoints"][0]["interval"] = 15
    problems = operator_problems([*monitoring, rule, monitor])
    assert problems[:2] == ["ok", "ok"], problems
    assert "rules/0 must have required property expr" in problems[2], problems
    assert "endpoints/0/interval must be string" in problems[3], problems
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(find(items, "PrometheusRule")["spec"]))
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: run scripts/setup --dev"
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_the_committed_manifests_and_slo_rules_are_a_fresh_render(tmp_path: Path) -> None:
    chart = tmp_path / "switchgear"
    shutil.copytree(CHART, chart)
    manifests = tmp_path / "switchgear.yaml"
    render.generate(chart, manifests)
    stale = "is stale: run .venv/bin/python deploy/helm/render.py"
    assert manifests.read_text() == render.MANIFESTS.read_text(), f"{render.MANIFESTS} {stale}"
    for shipped in (render.RULES, render.FINGERPRINT):
        fresh = chart / shipped.relative_to(CHART)
        assert fresh.read_text() == shipped.read_text(), f"{shipped} {stale}"


def test_the_shipped_slo_rules_are_refused_for_another_config_slo() -> None:
    other = helm("template", "switchgear", str(CHART), "--set",
                 "config.slo.objectives[0].target=0.9", check=False)
    assert other.returncode != 0
    assert "config.slo is not the one files/slo-rules.yaml was written for" in other.stderr
    assert "--set-file prometheusRule.rules=" in other.stderr


def test_the_configmap_holds_a_config_the_gateway_loads(
        rendered: tuple[list[str], list[dict[str, Any]]]) -> None:
    arguments, items = rendered
    config = gateway_config(items)
    spec = find(items, "Deployment")["spec"]["template"]["spec"]
    mount = next(m for m in container(items)["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in spec["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == find(items, "ConfigMap", "switchgear")["metadata"]["name"]
    args = container(items)["args"]
    assert args[args.index("--config") + 1] == f"{mount['mountPath']}/switchgear.yaml"
    if not arguments:
        assert config.store.url.startswith("sqlite:////var/lib/switchgear/")
        assert list(config.models) == ["smollm2"]  # the embedded model
        return
    assert config.store.url == "postgresql://switchgear@postgres.databases.svc:5432/switchgear" \
                               "?sslmode=require"
    assert config.limits.state_url == config.cache.url == "redis://redis.cache.svc:6379/0"
    assert config.tiers is not None and config.tiers.capacity_scope == "fleet"
    assert {d.max_concurrency_scope for d in config.models["chat"].deployments} == {"fleet"}


def test_probes_port_and_command_are_the_gateways(
        rendered: tuple[list[str], list[dict[str, Any]]]) -> None:
    _, items = rendered
    gateway_container = container(items)
    port = gateway_container["ports"][0]
    assert port["name"] == "http"
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                        ("livenessProbe", "/healthz")):
        assert gateway_container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    args = gateway_container["args"]
    assert parse_command(args).name == "serve"
    assert args[args.index("--port") + 1] == str(port["containerPort"])
    assert args[args.index("--host") + 1] == "0.0.0.0"
    service = find(items, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pod_labels = find(items, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for selector in (service["spec"]["selector"],
                     find(items, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                     find(items, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    monitor = find(items, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["endpoints"][0]["path"] == "/metrics"


def test_the_pod_runs_as_a_non_root_user_on_a_read_only_root(
        rendered: tuple[list[str], list[dict[str, Any]]]) -> None:
    _, items = rendered
    pod = find(items, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
    context = container(items)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    config = gateway_config(items)
    mounts = {m["mountPath"] for m in container(items)["volumeMounts"] if not m.get("readOnly")}
    if config.store.url.startswith("sqlite:"):  # the SQLite file is on a writable volume
        assert any(config.store.url.removeprefix("sqlite:///").startswith(m + "/")
                   for m in mounts)


def test_secrets_are_referenced_by_name_never_inlined(
        rendered: tuple[list[str], list[dict[str, Any]]]) -> None:
    arguments, items = rendered
    config = gateway_config(items)
    env = {e["name"]: e for e in container(items)["env"]}
    needed = own_secrets(config) | {variable for _, variable in env_settings(config)}
    if arguments:
        needed |= {"UPSTREAM_API_KEY", "PGPASSWORD"}
        assert "UPSTREAM_API_KEY" in {v for _, v in env_settings(config)}
    assert needed <= env.keys()
    for name in needed:
        assert set(env[name]) == {"name", "valueFrom"}, name
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["name"] and reference["key"], name
    for url in (config.store.url, config.limits.state_url, config.cache.url):
        assert url is None or "@" not in url.split("://", 1)[1].split("/", 1)[0] \
            or ":" not in url.split("://", 1)[1].split("@", 1)[0], f"a password in {url}"


def test_a_url_with_a_password_is_refused() -> None:
    for setting in ("config.store.url=postgresql://u:hunter2@db/x",
                    "config.limits.state_url=redis://:hunter2@redis:6379/0"):
        refused = helm("template", "switchgear", str(CHART), "--set", setting, check=False)
        assert refused.returncode != 0, setting
        assert "a password in" in refused.stderr and "hunter2" not in refused.stderr


@pytest.mark.parametrize("settings", [[], ["config.server.drain_grace_s=2.5",
                                            "config.server.shutdown_timeout_s=12",
                                            "drain.preStopSleepSeconds=3"]])
def test_the_grace_period_covers_prestop_drain_and_shutdown(settings: list[str]) -> None:
    items = objects([f"--set={s}" for s in settings])
    config = gateway_config(items)  # the gateway's own defaults where the values set none
    spec = find(items, "Deployment")["spec"]["template"]["spec"]
    sleep = container(items)["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    needed = float(sleep[1]) + config.server.drain_grace_s + config.server.shutdown_timeout_s
    margin = yaml.safe_load((CHART / "values.yaml").read_text())["drain"]["marginSeconds"]
    assert spec["terminationGracePeriodSeconds"] == math.ceil(needed + margin)
    assert spec["terminationGracePeriodSeconds"] > needed


def test_the_autoscaler_scales_on_in_flight_requests_or_cpu(tmp_path: Path) -> None:
    items = objects(production_arguments(tmp_path))
    autoscaler = find(items, "HorizontalPodAutoscaler")
    assert "replicas" not in find(items, "Deployment")["spec"]  # the autoscaler owns the count
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == find(items, "Deployment")[
        "metadata"]["name"]
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "switchgear_in_flight_requests"
    cpu = objects([*production_arguments(tmp_path), "--set", "autoscaling.metric=cpu"])
    [metric] = find(cpu, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert container(cpu)["resources"]["requests"]["cpu"]  # utilization needs a request
    wrong = helm("template", "switchgear", str(CHART), "--set", "autoscaling.enabled=true",
                 "--set", "autoscaling.metric=queue", check=False)
    assert wrong.returncode != 0
    assert 'autoscaling.metric must be one of the following: "in_flight", "cpu"' in wrong.stderr


def test_values_the_chart_does_not_know_are_refused() -> None:
    """values.schema.json: a misspelt or mistyped value fails the install, not the pod."""
    for setting in ("replicaCont=3", "port=http", "secrets.env[0].name=A", "redis.tls=maybe"):
        refused = helm("template", "switchgear", str(CHART), "--set", setting, check=False)
        assert refused.returncode != 0, setting
        assert "values don't meet the specifications of the schema" in refused.stderr, setting


def test_the_documented_adapter_rule_serves_the_autoscalers_metric(tmp_path: Path) -> None:
    """values.yaml's prometheus-adapter rule (a comment) parses and names the HPA's metric."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    start = lines.index("#   rules:")
    snippet = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        snippet.append(line.removeprefix("#   "))
    [rule] = yaml.safe_load("\n".join(snippet))["rules"]
    items = objects(production_arguments(tmp_path))
    name = find(items, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert rule["name"]["as"] == name and rule["seriesQuery"].startswith(name + "{")
    assert rule["resources"]["overrides"].keys() == {"namespace", "pod"}


def in_flight(base_url: str) -> float:
    """switchgear_in_flight_requests on the gateway's /metrics (one unlabelled series)."""
    text = urllib3.request("GET", base_url.removesuffix("/v1") + "/metrics").data.decode()
    [family] = [f for f in text_string_to_metric_families(text)
                if f.name == "switchgear_in_flight_requests"]
    [sample] = family.samples
    assert sample.labels == {}  # Prometheus adds namespace and pod; the adapter sums per pod
    return float(sample.value)


def test_the_autoscalers_metric_counts_requests_in_flight_on_a_live_gateway(
        tmp_path: Path) -> None:
    items = objects(production_arguments(tmp_path))
    name = find(items, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert name == "switchgear_in_flight_requests"
    config = parse_config({
        "models": {"chat": {"deployments": [{
            "name": "sim", "backend": "simulated",
            "simulated": {"ttft_ms": 5, "tpot_ms": 40, "mean_output_tokens": 30, "seed": 1}}]}},
        "store": {"url": f"sqlite:///{tmp_path}/records.db"}})
    with gateway(config) as base_url:
        assert in_flight(base_url) == 0
        streaming = threading.Event()
        seen: list[float] = []

        def chat() -> None:
            with openai.OpenAI(base_url=base_url, api_key="none", max_retries=0) as sdk:
                for _ in sdk.chat.completions.create(
                        model="chat", messages=[{"role": "user", "content": "hi"}],
                        max_tokens=30, stream=True):
                    if not streaming.is_set():
                        seen.append(in_flight(base_url))
                        streaming.set()

        thread = threading.Thread(target=chat)
        thread.start()
        thread.join(60)
        assert streaming.is_set() and seen == [1]
        deadline = time.monotonic() + 10
        while in_flight(base_url) != 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert in_flight(base_url) == 0


def test_the_network_policy_opens_what_the_values_name(tmp_path: Path) -> None:
    default = find(objects(), "NetworkPolicy")["spec"]
    assert default["policyTypes"] == ["Ingress", "Egress"]
    callers, scrape = default["ingress"]
    assert callers["from"] == [{"podSelector": {}}]  # the release's namespace only
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert all(rule["ports"] == [{"port": "http", "protocol": "TCP"}]
               for rule in default["ingress"])
    [dns] = default["egress"]  # no PostgreSQL, Redis or model server named: DNS alone
    assert {p["port"] for p in dns["ports"]} == {53}
    production = find(objects(production_arguments(tmp_path)), "NetworkPolicy")["spec"]
    values = yaml.safe_load(PRODUCTION.read_text())
    assert production["ingress"][0]["from"] == values["networkPolicy"]["ingressFrom"]
    ports = [[p["port"] for p in rule["ports"]] for rule in production["egress"]]
    assert ports == [[53, 53], [5432], [6379], [8000], [443]]
    assert production["egress"][1]["to"] == values["networkPolicy"]["egress"]["postgresql"]
    assert production["egress"][2]["to"] == values["networkPolicy"]["egress"]["redis"]


def test_the_dashboards_configmap_holds_each_dashboard_for_grafanas_sidecar() -> None:
    dashboards = find(objects(), "ConfigMap", "switchgear-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(files) == 4
    assert sorted(dashboards["data"]) == [path.name for path in files]
    for path in files:
        assert json.loads(dashboards["data"][path.name]) == json.loads(path.read_text())
    assert not (ROOT / "deploy" / "grafana" / "dashboards").exists()  # one source


#: Values the templates render whole (toYaml), not setting by setting.
WHOLE = {"config", "autoscaling.behavior", "dashboards.labels", "podSecurityContext",
         "securityContext", "resources", "probes.startup", "probes.readiness", "probes.liveness",
         "dataVolume"}


def value_names(value: Any, where: str = "") -> Iterator[str]:
    """The dotted names of a values file's settings (those in WHOLE as one)."""
    if isinstance(value, dict) and value and where not in WHOLE:
        for key, item in value.items():
            yield from value_names(item, f"{where}.{key}" if where else key)
    else:
        yield where


def test_every_value_is_read_by_a_template() -> None:
    templates = "".join(path.read_text() for path in (CHART / "templates").iterdir())
    names = list(value_names(yaml.safe_load((CHART / "values.yaml").read_text())))
    assert len(names) > 50
    unused = [name for name in names if f".{name.split('.')[-1]}" not in templates]
    assert unused == []
