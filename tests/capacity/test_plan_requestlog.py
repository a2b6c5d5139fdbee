"""The planner calibrated on the request log: concurrency over each request's lifetime, levels
from a real SQLite store, and ``switchgear plan --from-log``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from switchgear.capacity.plan.profile import ProfileError
from switchgear.capacity.plan.requestlog import LogRow, profile_from_log, sojourn_concurrency
from switchgear.cli.main import main
from switchgear.store import open_store
from switchgear.store.records import RequestRecord


def test_concurrency_is_averaged_over_each_requests_own_lifetime() -> None:
    # [0, 2] and [1, 3] overlap for half of each; a request alone at [5, 6].
    received, done = np.array([0.0, 1.0, 5.0]), np.array([2.0, 3.0, 6.0])
    assert sojourn_concurrency(received, done).tolist() == pytest.approx([1.5, 1.5, 1.0])
    # Three lanes back to back: every request shares its whole life with two others.
    lanes = np.array([float(k) for k in range(10) for _ in range(3)])
    assert sojourn_concurrency(lanes, lanes + 1.0).tolist() == pytest.approx([3.0] * 30)


def traffic(start: float) -> list[LogRow]:
    """One client back to back (0.1 s each), then four (0.3 s each; one lane fails with 503
    now and then), and a few client errors (400) that are not the deployment's."""
    rows: list[LogRow] = [(start + 0.1 * k, start + 0.1 * k + 0.02, start + 0.1 * (k + 1), 200, 10, 5,
                           True) for k in range(40)]
    later = start + 10.0
    for lane in range(4):
        for k in range(30):
            status = 503 if lane == 3 and k % 3 == 0 else 200
            rows.append((later + 0.3 * k, later + 0.3 * k + 0.05, later + 0.3 * (k + 1), status, 10,
                         5, True))
    rows += [(start + 30.0 + k, None, start + 30.0 + k + 0.001, 400, 10, 0, False) for k in range(5)]
    return rows


def test_levels_group_the_log_by_concurrency() -> None:
    profile = profile_from_log(traffic(0.0))
    assert [level.concurrency for level in profile.closed_loop] == [1, 4]
    one, four = profile.closed_loop
    assert np.mean(one.latencies) == pytest.approx(0.1)
    assert np.mean(four.latencies) == pytest.approx(0.3)
    assert four.request_rate == pytest.approx(4 / 0.3)
    assert (four.sent, four.completed) == (120, 110)  # 10 answers were 503s
    assert one.error_share == 0 and four.error_share == pytest.approx(10 / 120)
    assert profile.stream
    ttft = profile_from_log(traffic(0.0), latency="ttft")
    assert np.mean(ttft.closed_loop[1].latencies) == pytest.approx(0.05)


def test_a_log_without_enough_requests_at_any_concurrency_is_refused() -> None:
    with pytest.raises(ProfileError, match="answered requests"):
        profile_from_log(traffic(0.0)[:10])
    with pytest.raises(ProfileError, match="no finished requests"):
        profile_from_log([])


def write_log(directory: Path) -> Path:
    """A config whose SQLite store holds ``traffic`` for deployment "embedded" (and some for
    another deployment and some cache hits, which the plan must not count)."""
    database = directory / "records.db"
    config = directory / "switchgear.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{database}"}}))
    start = time.time() - 3600

    def record(number: int, row: LogRow, **changes: object) -> RequestRecord:
        received, first, done, status, prompt, completion, stream = row
        fields: dict[str, object] = {
            "request_id": f"req-{number}", "tenant": "t", "model": "smollm2",
            "deployment": "embedded", "operation": "chat", "stream": stream, "received_at": received,
            "first_token_at": first, "done_at": done, "prompt_tokens": prompt,
            "completion_tokens": completion, "status": status, "error_type": None,
            "truncated": False, "attempts": 1, "cost": 0.0}
        return RequestRecord(**(fields | changes))  # type: ignore[arg-type]

    rows = traffic(start)
    records = [record(n, row) for n, row in enumerate(rows)]
    # The same hour again elsewhere: another deployment, and cache hits of this one.
    records += [record(1000 + n, row, deployment="other") for n, row in enumerate(rows)]
    records += [record(2000 + n, row, cache_status="hit") for n, row in enumerate(rows)]

    async def fill() -> None:
        store = open_store(f"sqlite:///{database}")
        await store.open()
        try:
            await store.write(records)
        finally:
            await store.close()

    asyncio.run(fill())
    return config


def test_plan_from_the_request_log_of_a_sqlite_store(tmp_path: Path) -> None:
    config = write_log(tmp_path)
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(main, ["plan", "--from-log", "--config", str(config),
                                       "--deployment", "embedded", "--since", "1d",
                                       "--peak-rate", "20", "--slo-p95", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    plan = json.loads(out.read_text())
    levels = plan["calibration"]["closed_loop_levels"]
    assert [level["concurrency"] for level in levels] == [1, 4]
    assert levels[1]["request_rate"] == pytest.approx(4 / 0.3, rel=1e-3)
    # 13.3 req/s per instance at most: 20 req/s at 70% needs three.
    assert plan["instances"] == 3
    # Production traffic has no bench client to have saturated, and no open-loop level.
    assert not any("bench itself kept up" in note for note in plan["calibration"]["notes"])
    assert "uncalibrated" in [warning["check"] for warning in plan["warnings"]]


@pytest.mark.parametrize(("arguments", "message"), [
    ([], "give one source"),
    (["--profile", "{config}", "--from-log"], "give one source"),
    (["--from-log"], "--deployment"),
])
def test_the_source_must_be_one_profile_or_the_log(tmp_path: Path, arguments: list[str],
                                                   message: str) -> None:
    config = write_log(tmp_path)
    given = [argument.format(config=config) for argument in arguments]
    result = CliRunner().invoke(main, ["plan", *given, "--config", str(config), "--peak-rate", "1"])
    assert result.exit_code == 2
    assert message in result.output


def test_a_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "switchgear.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path / 'none.db'}"}}))
    result = CliRunner().invoke(main, ["plan", "--from-log", "--config", str(config),
                                       "--deployment", "embedded", "--peak-rate", "1"])
    assert result.exit_code == 1
    assert "no record store at" in result.output
    assert not (tmp_path / "none.db").exists()
