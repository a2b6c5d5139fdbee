"""The Grafana dashboards (deploy/helm/switchgear/dashboards, provisioned by deploy/grafana and
by the Helm chart): they type-check against Grafana's own dashboard schema (the TypeScript types
Grafana generates from it, @grafana/schema), pick their Prometheus through a variable, and every
PromQL expression in them and in the shipped SLO rules names series and labels that a live
gateway's /metrics exports after real traffic through simulators."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from switchgear.cli.main import main
from switchgear.config import Config, parse_config
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import fetch_records, gateway

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
#: The dashboards live in the Helm chart, whose ConfigMap for Grafana's sidecar can only read
#: files inside the chart; deploy/grafana's provisioning mounts the same folder.
DASHBOARDS = sorted((ROOT / "deploy" / "helm" / "switchgear" / "dashboards").glob("*.json"))
PROMETHEUS = GRAFANA / "prometheus"
#: Where scripts/setup --dev installs Grafana's schema types and TypeScript (npm ci).
SCHEMA_TOOLS = ROOT / ".venv" / "grafana-schema" / "node_modules"
RAW_TYPES = SCHEMA_TOOLS / "@grafana" / "schema" / "dist" / "types" / "raw"
#: Panel types whose options (and custom field config, where the type has one) are checked
#: against their own schema.
PANEL_SCHEMAS = {"timeseries": True, "stat": False, "table": True}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: Grafana's own variables, and the labels Prometheus adds to every scraped series.
BUILTIN_VARIABLES = {"__rate_interval", "__range", "__interval"}
TARGET_LABELS = {"instance", "job"}
#: Strips Grafana's enums to the literal values a JSON file holds (the schema's TypeScript
#: types use enums, which a plain string or number in a JSON file cannot name).
PLAIN = """type Plain<T> = T extends string ? (string extends T ? string : `${T}`)
  : T extends number | boolean | null | undefined ? T
  : T extends Array<infer U> ? Array<Plain<U>>
  : T extends object ? { [K in keyof T]: Plain<T[K]> } : T;
"""


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows too (rows themselves excluded)."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel["panels"]
        else:
            yield panel


def expressions(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: its panels' and its variables' queries."""
    found = [target["expr"] for panel in panels(board) for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def rule_expressions() -> list[tuple[str | None, str]]:
    """(recorded series or None for an alert, expression) of every shipped SLO rule."""
    groups = yaml.safe_load((PROMETHEUS / "slo-rules.yaml").read_text())["groups"]
    return [(rule.get("record"), rule["expr"]) for group in groups for rule in group["rules"]]


#: Function and aggregation calls, keywords and label-list clauses are not series names.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_NAME = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "label_values"}


def parse_promql(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The series an expression selects, each with the label names its matchers use, and the
    label names its by/without/on/ignoring clauses group on (``label_values(m, l)`` selects
    ``m`` and groups on ``l``)."""
    text = _STRING.sub('""', _VARIABLE.sub("v", expr))
    text = re.sub(r"\[[^\]]*\]", "", text)
    grouped: set[str] = set()
    for clause in _CLAUSE.finditer(text):
        grouped |= {label.strip() for label in clause.group(2).split(",") if label.strip()}
    text = _CLAUSE.sub(" ", text)
    values = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", text)
    if values:
        text, label = values.group(1), values.group(2)
        grouped.add(label)
    selected = []
    for match in _NAME.finditer(text):
        name, matchers = match.group(1), match.group(2)
        if name in _KEYWORDS or text[match.end():].startswith("("):
            continue
        selected.append((name, set(_MATCHER.findall(matchers or ""))))
    return selected, grouped


def test_the_promql_reader_finds_series_and_labels() -> None:
    selected, grouped = parse_promql(
        'histogram_quantile(0.95, sum by (le, model) (rate(a_bucket{model=~"$model",x="}"}'
        '[$__rate_interval]))) / on (model) group_left 1e6 * b:rec{slo="s"} or vector(0) '
        "and time() - c offset 5m")
    assert selected == [("a_bucket", {"model", "x"}), ("b:rec", {"slo"}), ("c", set())]
    assert grouped == {"le", "model"}
    assert parse_promql('label_values(m_total{model=~"$model"}, deployment)') == \
        ([("m_total", {"model"})], {"deployment"})


def test_the_dashboards_type_check_against_grafanas_dashboard_schema(tmp_path: Path) -> None:
    """One TypeScript file per dashboard assigns it to Grafana's ``Dashboard`` type and each
    panel's options and custom field config to its panel type's; a broken copy must fail."""
    node = shutil.which("node")
    assert node is not None and RAW_TYPES.is_dir(), \
        "Grafana's schema types are missing: run scripts/setup --dev (Debian packages nodejs, npm)"
    imports = "".join(
        f'import type * as {kind} from "{RAW_TYPES}/composable/{kind}/panelcfg/x/types.gen";\n'
        for kind in PANEL_SCHEMAS)
    header = f'import type {{ Dashboard }} from "{RAW_TYPES}/dashboard/x/types.gen";\n' \
             f"{imports}{PLAIN}"

    def source(board: dict[str, Any]) -> str:
        lines = [header, f"export const dashboard: Plain<Dashboard> = {json.dumps(board)};"]
        for panel in panels(board):
            kind = panel["type"]
            if kind in PANEL_SCHEMAS:
                lines.append(f"export const options{panel['id']}: Plain<Partial<{kind}.Options>>"
                             f" = {json.dumps(panel['options'])};")
                custom = panel["fieldConfig"]["defaults"].get("custom")
                assert (custom is not None) == PANEL_SCHEMAS[kind], panel["title"]
                if custom is not None:
                        lines.append(f"export const custom{panel['id']}: Plain<Partial<"
                                 f"{kind}.FieldConfig>> = {json.dumps(custom)};")
        return "\n".join(lines) + "\n"

    files = []
    for path in DASHBOARDS:
        files.append(tmp_path / f"{path.stem}.ts")
        files[-1].write_text(source(load(path)))
    broken = load(DASHBOARDS[0])
    broken["graphTooltip"] = 7
    broken["panels"][0]["gridPos"]["depth"] = 3
    first = next(panel for panel in panels(broken) if panel["type"] == "timeseries")
    first["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "lines"
    (tmp_path / "broken.ts").write_text(source(broken))
    checked = subprocess.run(
        [node, str(SCHEMA_TOOLS / "typescript" / "bin" / "tsc"), "--noEmit", "--strict",
         "--skipLibCheck", "--target", "es2022", "--module", "commonjs", "--moduleResolution",
         "node10", *map(str, files), str(tmp_path / "broken.ts")],
        capture_output=True, text=True, check=False, cwd=tmp_path)
    errors = [line for line in checked.stdout.splitlines() if ": error TS" in line]
    assert errors and all(line.startswith("broken.ts") for line in errors), checked.stdout
    assert len(errors) == 3, errors
    assert "'7' is not assignable" in errors[0] or any("'7'" in e for e in errors)
    assert any('"depth"' in e for e in errors) and any('"lines"' in e for e in errors)


def test_the_dashboards_are_provisionable_and_pick_prometheus_through_a_variable() -> None:
    assert {path.stem for path in DASHBOARDS} == {
        "switchgear-overview", "switchgear-cost", "switchgear-slo", "switchgear-routing"}
    for path in DASHBOARDS:
        board, text = load(path), path.read_text()
        assert board["uid"] == path.stem and board["id"] is None
        assert not re.search(r"https?://|localhost|\d+\.\d+\.\d+\.\d+:", text), path
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        used = set(_VARIABLE.findall(text)) - BUILTIN_VARIABLES
        assert used <= variables.keys(), (path, used - variables.keys())
        rows = [panel for panel in board["panels"] if panel["type"] == "row"]
        ids = [panel["id"] for panel in [*rows, *panels(board)]]
        assert len(ids) == len(set(ids))
        taken: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
            cells = {(grid["x"] + dx, grid["y"] + dy)
                     for dx in range(grid["w"]) for dy in range(grid["h"])}
            assert not cells & taken, (path, panel["title"])  # no two panels overlap
            taken |= cells
        for panel in panels(board):
            assert panel["datasource"] == DATASOURCE, panel["title"]
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)) and refs
            assert all(target["datasource"] == DATASOURCE for target in panel["targets"])
    for variable in (v for path in DASHBOARDS for v in load(path)["templating"]["list"]
                     if v["type"] == "query"):
        assert variable["datasource"] == DATASOURCE
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "switchgear.yaml").read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"
    source = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert source["datasources"][0]["type"] == "prometheus"
    assert source["datasources"][0]["url"] == "${PROMETHEUS_URL}"  # no host named here


def promtool() -> str:
    path = shutil.which("promtool")
    assert path is not None, "promtool is missing: run scripts/setup --dev (Debian: prometheus)"
    return path


def test_the_shipped_slo_rules_are_what_the_command_writes_and_prometheus_loads_them(
        tmp_path: Path) -> None:
    output = tmp_path / "slo-rules.yaml"
    result = CliRunner().invoke(main, ["slo", "rules", "--config",
                                       str(PROMETHEUS / "switchgear.yaml"), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_text() == (PROMETHEUS / "slo-rules.yaml").read_text(), \
        "deploy/grafana/prometheus/slo-rules.yaml is stale: regenerate it (see its README.md)"
    checked = subprocess.run([promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "44 rules found" in checked.stdout


NO_EJECTION = {"consecutive_failures": 1_000_000, "min_requests": 1_000_000}
SLOW = ModelOptions(ttft_ms=40, tpot_ms=2, mean_output_tokens=8, seed=5)


@pytest.fixture
def busy_config(make_config: Callable[..., Config],
                simulators: Callable[..., RunningSimulator]) -> Config:
    """Two priced deployments of ``chat`` (one failing most of its requests, so some are
    retried), the cache, an output check, a one-place priority gate with no queue (so some
    requests are shed) and the example config's SLOs, evaluated every 0.1 s."""
    flaky, steady = simulators(SLOW, Faults(error_rate=0.7)), simulators(SLOW)
    price = {"input_per_million": 0.1, "output_per_million": 0.4}
    data = make_config({"chat": {"deployments": [
        {"name": name, "backend": "openai_http", "url": sim.base_url, "model": "sim",
         "price": price} for name, sim in (("flaky", flaky), ("steady", steady))]}}
    ).model_dump(mode="json")
    example = yaml.safe_load((PROMETHEUS / "switchgear.yaml").read_text())
    no_queue = {"max_queue": 0, "wait_target_ms": 50}
    data.update({
        "routing": {"outlier": NO_EJECTION, "health_check_interval_s": None},
        "cache": {"enabled": True},
        "guards": {"output": [{"check": "empty"}]},
        "tiers": {"capacity": 1, "max_waiting": 0, "interactive": no_queue,
                  "standard": no_queue, "batch": no_queue},
        "slo": {**example["slo"], "evaluate_every": 0.1, "time_scale": 0.002},
    })
    return parse_config(data)


def drive(base_url: str) -> int:
    """Real traffic: plain and streamed chats, repeats the cache answers, and bursts from six
    threads at once (the gate sheds); the number of requests sent."""
    sent = [0]

    def chat(sdk: openai.OpenAI, content: str, stream: bool) -> None:
        with contextlib.suppress(openai.APIStatusError):
            reply = sdk.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": content}],
                temperature=0, max_tokens=8, stream=stream)
            if stream:
                for _ in reply:  # type: ignore[union-attr]
                    pass
        sent[0] += 1

    with openai.OpenAI(base_url=base_url, api_key="none", max_retries=0) as sdk:
        for number in range(16):  # the last four are cache hits
            chat(sdk, f"hello {number % 12}", stream=number % 2 == 1)
        threads = [threading.Thread(target=chat, args=(sdk, f"burst {n}", True))
                   for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    return sent[0]


def test_every_query_names_series_and_labels_a_live_gateway_exports(busy_config: Config) -> None:
    with gateway(busy_config) as base_url:
        sent = drive(base_url)
        metrics = base_url.removesuffix("/v1") + "/metrics"
        records = []
        for _ in range(200):  # the request log is written, and the SLO monitor has counted it
            records = fetch_records(busy_config.store.url)
            text = urllib3.request("GET", metrics).data.decode()
            if len(records) == sent and f'switchgear_slo_requests{{slo="chat-availability"}} ' \
                    f"{float(sent)}" in text:
                break
            time.sleep(0.05)
    assert len(records) == sent
    labels: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels[sample.name] |= set(sample.labels)
    assert labels["switchgear_shed_requests_total"], "no request was shed"
    assert labels["switchgear_retries_total"], "no request was retried"
    recorded = {name for name, _ in rule_expressions() if name is not None}
    checked = [(path.name, expr) for path in DASHBOARDS for expr in expressions(load(path))]
    checked += [("slo-rules.yaml", expr) for _, expr in rule_expressions()]
    missing = []
    for where, expr in checked:
        selected, grouped = parse_promql(expr)
        assert selected, (where, expr)
        known: set[str] = set(TARGET_LABELS)
        for name, matched in selected:
            if name in recorded:
                known |= {"slo"}
                continue
            if name not in labels:
                missing.append(f"{where}: {name} (in {expr})")
                continue
            known |= labels[name]
            if unknown := matched - labels[name]:
                missing.append(f"{where}: {name} has no label {sorted(unknown)}")
        if unknown := grouped - known:
            missing.append(f"{where}: no series it selects has {sorted(unknown)} (in {expr})")
    assert missing == []
    assert len(checked) > 60
