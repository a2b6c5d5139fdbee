"""``switchgear plan`` through click: the text table, Markdown, the JSON the scorecard reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from plan_profiles import exponential_samples, mmc_profile, open_level, profile

from switchgear.cli.main import main

ARGS = ["--peak-rate", "40", "--growth", "0.5", "--slo-p95", "0.5", "--slo-p99", "0.8",
        "--price-per-instance-hour", "2.5", "--kw-per-instance", "0.7", "--pue", "1.4",
        "--pipeline-feed", "0.6"]


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(mmc_profile(4, 10.0)))
    return path


def test_text_table(profile_path: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "--profile", str(profile_path), *ARGS])
    assert result.exit_code == 0, result.output
    assert "instances             3 (target utilization 70%)" in result.output
    assert "limiting resource     slots/compute" in result.output
    assert "40.0% of the spend wasted" in result.output
    # What the profile cannot support comes first: it has no open-loop level.
    assert result.output.startswith("WARNING: no open-loop level calibrates the model")
    assert "percentiles: nearest-rank (measured and predicted alike)" in result.output


def test_json_keeps_the_keys_the_scorecard_reads(profile_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(main, ["plan", "--profile", str(profile_path), *ARGS, "--json", str(out)])
    assert result.exit_code == 0, result.output
    plan = json.loads(out.read_text())
    assert plan["instances"] == 3
    assert {"target_utilization", "utilization"} <= plan.keys()
    assert {"p95_s", "p99_s", "max_rate_within_slo"} <= plan["predicted"].keys()
    assert {"per_1k_requests", "per_million_tokens", "marginal_per_1k_on_doubling"} <= plan["cost"].keys()
    assert plan["power"]["kw"] == pytest.approx(2.1)
    assert {"kwh_per_month", "pue"} <= plan["power"].keys()
    assert plan["pipeline"]["wasted_share"] == pytest.approx(0.4)
    assert {"feed_share", "wasted_per_month"} <= plan["pipeline"].keys()
    assert plan["limiting_resource"]["name"] == "slots/compute"
    assert plan["limiting_resource"]["evidence"]
    assert plan["percentile_method"] == "nearest-rank"
    assert {warning["check"] for warning in plan["warnings"]} == {"uncalibrated", "saturation not reached"}
    stdout = CliRunner().invoke(main, ["plan", "--profile", str(profile_path), *ARGS, "--json", "-"])
    assert json.loads(stdout.output) == plan


def test_markdown(profile_path: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "--profile", str(profile_path), *ARGS, "--markdown"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "# Capacity plan"
    assert lines[2].startswith("> **WARNING: no open-loop level calibrates the model")
    assert "| instances | 3 (target utilization 70%) |" in lines
    assert "## What limits scaling" in lines


def test_one_price_only(profile_path: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "--profile", str(profile_path), *ARGS,
                                       "--price-per-million-tokens", "1"])
    assert result.exit_code == 2
    assert "give one price" in result.output


def test_an_unusable_profile_or_slo_is_an_error(tmp_path: Path, profile_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"tool": "wrk"}))
    result = CliRunner().invoke(main, ["plan", "--profile", str(other), "--peak-rate", "1"])
    assert result.exit_code == 1
    assert "not a switchgear bench profile" in result.output
    result = CliRunner().invoke(main, ["plan", "--profile", str(profile_path), "--peak-rate", "1",
                                       "--slo-p95", "0.01"])
    assert result.exit_code == 1
    assert "no arrival rate meets the SLO" in result.output


def test_the_scorecard_reads_every_figure_of_the_plan(profile_path: Path, tmp_path: Path) -> None:
    from switchgear.scorecard.evidence import plan_facts

    out = tmp_path / "plan.json"
    result = CliRunner().invoke(main, ["plan", "--profile", str(profile_path), *ARGS, "--json", str(out)])
    assert result.exit_code == 0, result.output
    facts = plan_facts(json.loads(out.read_text()), str(out))
    assert facts.instances == 3 and facts.limiting_resource == "slots/compute"
    assert facts.feed_share == 0.6 and facts.pue == 1.4
    for name in ("utilization", "target_utilization", "p95_s", "max_rate_within_slo",
                 "cost_per_1k_requests", "marginal_per_1k_on_doubling", "power_kw",
                 "kwh_per_month", "wasted_share"):
        assert getattr(facts, name) is not None, name


def test_several_profiles_of_one_workload_are_planned_from_together(profile_path: Path,
                                                                      tmp_path: Path) -> None:
    # A second run of the same workload with Poisson levels only (say, another --seed): its
    # levels calibrate the model that the first run's closed-loop levels shape.
    later = tmp_path / "poisson.json"
    later.write_text(json.dumps({**profile([open_level(20.0, exponential_samples(0.2))]),
                                 "workload": {**json.loads(profile_path.read_text())["workload"],
                                              "seed": 7}}))
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(main, ["plan", "--profile", str(profile_path), "--profile", str(later),
                                       *ARGS, "--json", str(out)])
    assert result.exit_code == 0, result.output
    scales = json.loads(out.read_text())["calibration"]["time_scales"]
    assert [scale["rate"] for scale in scales] == [20.0] and scales[0]["scale"] > 1
    alone = CliRunner().invoke(main, ["plan", "--profile", str(profile_path), *ARGS, "--json", "-"])
    assert json.loads(alone.output)["calibration"]["time_scales"] == []
    other = tmp_path / "other.json"
    other.write_text(json.dumps(profile([open_level(20.0, exponential_samples(0.2))], stream=False)))
    result = CliRunner().invoke(main, ["plan", "--profile", str(profile_path), "--profile", str(other),
                                       *ARGS])
    assert result.exit_code == 1 and "different workloads" in result.output
