"""`switchgear scorecard` through click's CliRunner, against a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import yaml
from click.testing import CliRunner

from switchgear.cli.main import main
from switchgear.store import open_store
from switchgear.store.records import RequestRecord

PLAN = {"instances": 2, "utilization": 0.65, "target_utilization": 0.7,
        "predicted": {"p95_s": 0.4, "p99_s": 0.8, "max_rate_within_slo": 30},
        "power": {"kw": 3.0, "kwh_per_month": 2700, "pue": 1.4},
        "pipeline": {"feed_share": 0.9, "wasted_share": 0.1},
        "limiting_resource": {"name": "slots", "evidence": "queueing at 30 req/s"}}


def write_setup(directory: Path) -> tuple[Path, Path]:
    """A config over a SQLite store holding two requests, and a plan file."""
    database = directory / "records.db"
    config = directory / "switchgear.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"url": f"sqlite:///{database}"},
        "tiers": {"capacity": 4},
        "limits": {"per_key": {"rpm": 600}},
        "scorecard": {"facilities": {"kw_per_rack": 30, "cooling": "air",
                                     "lead_time_weeks": 12, "power_budget_kw": 5}},
    }))

    async def fill() -> None:
        store = open_store(f"sqlite:///{database}")
        await store.open()
        try:
            await store.write([RequestRecord(
                f"req-{n}", "t", "smollm2", "embedded", "chat", False, time.time() - 30, None,
                None, 3, 2, 200, None, False, 1, 0.0, priority="standard") for n in range(2)])
        finally:
            await store.close()

    asyncio.run(fill())
    plan = directory / "plan.json"
    plan.write_text(json.dumps(PLAN))
    return config, plan


def test_scores_config_records_and_plan_as_json(tmp_path: Path) -> None:
    config, plan = write_setup(tmp_path)
    result = CliRunner().invoke(main, ["scorecard", "--config", str(config), "--plan", str(plan),
                                       "--since", "1d", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    scores = {c["key"]: c["score"] for c in data["categories"]}
    assert scores["utilization"] == 2  # tiers, a quota and the plan's utilization
    assert scores["facilities"] == 2  # declared, planned at 3 kW within 5 kW
    assert scores["workload_clarity"] == 1  # only the measured tier mix
    assert data["at_risk"] is True  # exit 0 all the same: risk is shown, not an error
    assert "records: 2 requests over the last 1 days" in data["sources"]


def test_writes_markdown_to_a_file(tmp_path: Path) -> None:
    config, _ = write_setup(tmp_path)
    out = tmp_path / "card.md"
    result = CliRunner().invoke(main, ["scorecard", "--config", str(config), "--format",
                                       "markdown", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert out.read_text().startswith("# AI infrastructure scorecard")
    assert "| Utilization plan | 1/2 |" in out.read_text()


def test_unreadable_evidence_exits_2(tmp_path: Path) -> None:
    config, plan = write_setup(tmp_path)
    plan.write_text("[1, 2")
    result = CliRunner().invoke(main, ["scorecard", "--config", str(config), "--plan", str(plan)])
    assert result.exit_code == 2
    assert "switchgear: cannot score:" in result.stderr and "not JSON" in result.stderr
    missing = CliRunner().invoke(main, ["scorecard", "--config", str(config), "--plan",
                                        str(tmp_path / "absent.json")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr


def test_a_bad_window_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["scorecard", "--since", "soon"])
    assert result.exit_code == 2
    assert "--since" in result.stderr
