"""`switchgear slo rules`: promtool accepts the rules, and its rule tests see the page fire on
synthetic metrics; bad SLO config exits 2 naming the field."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from switchgear.cli.main import main

MODELS = {"chat": {"deployments": [{"name": "sim", "backend": "simulated"}]}}
AVAILABILITY = {"name": "chat-availability", "owner": "team-chat",
                "description": "Chat answers without server errors.",
                "sli": {"kind": "availability"}, "scope": {"model": "chat"}, "target": 0.995}
OBJECTIVES = [
    AVAILABILITY,
    {"name": "chat-ttft", "owner": "team-chat", "target": 0.99, "window": "7d",
     "sli": {"kind": "latency", "measure": "ttft", "threshold": "500ms"},
     "scope": {"model": "chat", "tenant": 'acme "quoted"', "feature": "search"}},
    {"name": "chat-answers-pass-checks", "owner": "team-chat", "target": 0.98,
     "sli": {"kind": "checks"}, "scope": {"model": "chat"}},
    {"name": "everything-fast", "owner": "sre", "target": 0.9,
     "sli": {"kind": "latency", "threshold": 2.5},
     "alerting": {"webhook_url": "http://127.0.0.1:9/hook",
                  "policy": [{"long": "1h", "short": "5m", "burn_rate": 10, "severity": "page"}]}},
]


def promtool() -> str:
    path = shutil.which("promtool")
    assert path is not None, "promtool is missing: run scripts/setup (Debian package prometheus)"
    return path


def write_config(tmp_path: Path, objectives: list[dict[str, Any]], **slo: Any) -> Path:
    path = tmp_path / "switchgear.yaml"
    path.write_text(yaml.safe_dump({"models": MODELS,
                                    "slo": {"objectives": objectives, **slo}}))
    return path


def rules_of(config: Path, tmp_path: Path) -> Path:
    output = tmp_path / "slo-rules.yaml"
    result = CliRunner().invoke(main, ["slo", "rules", "--config", str(config), "-o", str(output)])
    assert result.exit_code == 0, result.output
    return output


@pytest.mark.parametrize("time_scale", [1.0, 0.001])
def test_promtool_accepts_the_rules(tmp_path: Path, time_scale: float) -> None:
    rules = rules_of(write_config(tmp_path, OBJECTIVES, time_scale=time_scale), tmp_path)
    checked = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    groups = yaml.safe_load(rules.read_text())["groups"]
    assert [g["name"] for g in groups] == [f"switchgear-slo-{o['name']}" for o in OBJECTIVES]
    alerts = [rule for rule in groups[3]["rules"] if "alert" in rule]
    assert [a["labels"]["severity"] for a in alerts] == ["page"]  # its policy has no ticket
    assert 'le="2.5"' in groups[3]["rules"][0]["expr"]
    assert 'switchgear_output_checked_requests_total{model="chat",verdict="fail"}' in \
        groups[2]["rules"][0]["expr"]


def test_promtool_sees_the_page_fire_and_clear_on_synthetic_metrics(tmp_path: Path) -> None:
    """An hour healthy, an hour at 1 error in 6, then healthy: the page fires inside the failing
    hour and clears after; nothing before."""
    rules = rules_of(write_config(tmp_path, [AVAILABILITY]), tmp_path)
    labels = 'model="chat",deployment="sim",tenant="default",feature=""'
    page = {"slo": "chat-availability", "severity": "page", "owner": "team-chat", "model": "chat"}
    annotations = {"summary": "SLO chat-availability is burning its error budget "
                              "(target 0.995 over 30d)",
                   "description": AVAILABILITY["description"]}
    ticket = {**page, "severity": "ticket"}
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f'switchgear_requests_total{{{labels},status="200"}}',
                 "values": "0+100x240"},
                {"series": f'switchgear_requests_total{{{labels},status="500"}}',
                 "values": "0x60 0+20x60 1200x120"},
            ],
            "alert_rule_test": [
                {"eval_time": "55m", "alertname": "SLOErrorBudgetBurn", "exp_alerts": []},
                {"eval_time": "110m", "alertname": "SLOErrorBudgetBurn", "exp_alerts": [
                    {"exp_labels": page, "exp_annotations": annotations},
                    {"exp_labels": ticket, "exp_annotations": annotations}]},
                {"eval_time": "200m", "alertname": "SLOErrorBudgetBurn", "exp_alerts": [
                    {"exp_labels": ticket, "exp_annotations": annotations}]},
            ],
        }],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    tested = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True,
                            text=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize(("change", "named"), [
    ({"sli": {"kind": "latency", "threshold": "300ms"}}, "slo.objectives.0.sli.threshold"),
    ({"sli": {"kind": "latency"}}, "a latency SLI needs a threshold"),
    ({"sli": {"kind": "availability", "threshold": 1}}, "an availability SLI has no threshold"),
    ({"sli": {"kind": "guesswork"}}, "slo.objectives.0.sli.kind"),
    ({"sli": {"kind": "checks", "threshold": 1}}, "slo.objectives.0.sli"),
    ({"target": 1.5}, "slo.objectives.0.target"),
    ({"window": "7x"}, "slo.objectives.0.window"),
    ({"owner": ""}, "slo.objectives.0.owner"),
    ({"oner": "typo"}, "slo.objectives.0.oner"),
    ({"name": "has space"}, "slo.objectives.0.name"),
    ({"scope": {"model": "nope"}}, "slo.objectives.0.scope.model"),
    ({"scope": {"route": "x"}}, "slo.objectives.0.scope.route"),
    ({"alerting": {"webhook_url": "ftp://x"}}, "slo.objectives.0.alerting.webhook_url"),
    ({"alerting": {"webhook_url": "http://x", "webhook_url_env": "X"}}, "not both"),
    ({"alerting": {"policy": [{"long": "5m", "short": "1h", "burn_rate": 2,
                               "severity": "page"}]}}, "slo.objectives.0.alerting.policy.0"),
])
def test_bad_slo_config_exits_2_naming_the_field(tmp_path: Path, change: dict[str, Any],
                                                 named: str) -> None:
    config = write_config(tmp_path, [{**AVAILABILITY, **change}])
    for command in (["slo", "rules"], ["serve"]):
        result = CliRunner().invoke(main, [*command, "--config", str(config)])
        assert result.exit_code == 2, result.output
        assert "invalid config" in result.output and named in result.output


def test_an_unset_webhook_variable_stops_serve_but_not_rules(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SG_TEST_ABSENT_HOOK", raising=False)
    config = write_config(tmp_path, [{**AVAILABILITY,
                                      "alerting": {"webhook_url_env": "SG_TEST_ABSENT_HOOK"}}])
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 2 and "SG_TEST_ABSENT_HOOK" in result.output
    assert CliRunner().invoke(main, ["slo", "rules", "--config", str(config)]).exit_code == 0


def test_duplicate_slo_names_and_bad_settings_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["slo", "rules", "--config", str(
        write_config(tmp_path, [AVAILABILITY, AVAILABILITY]))])
    assert result.exit_code == 2 and "SLO names must be unique" in result.output
    result = CliRunner().invoke(main, ["slo", "rules", "--config", str(
        write_config(tmp_path, [AVAILABILITY], time_scale=0))])
    assert result.exit_code == 2 and "slo.time_scale" in result.output


def test_no_slos_write_an_empty_rules_file(tmp_path: Path) -> None:
    rules = rules_of(write_config(tmp_path, []), tmp_path)
    assert yaml.safe_load(rules.read_text()) == {"groups": []}
    checked = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True,
                             check=False)
    assert checked.returncode == 0


@pytest.mark.parametrize("args", [["slo", "--help"], ["slo", "status", "--help"],
                                  ["slo", "rules", "--help"]])
def test_slo_commands_have_help(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "Usage:" in result.output
