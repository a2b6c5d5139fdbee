"""A `bench --sweep` profile goes through `plan` (a real sweep on the simulator), and a profile
without the levels the model needs is refused with the level named and the bench line to run.

``data/sweep-simulator-2026-12-06.json.gz`` is a real sweep: `switchgear simulate --port 18431
--seed 1` (8 slots, the defaults) and `switchgear bench --url http://127.0.0.1:18431/v1 --model
sim --sweep --duration 10 --warmup 3 --slo-e2e-p95 0.5 --json sweep.json` on a 2-core machine
shared with other work. Closed loop saturated at 53.7 req/s (concurrency 8); of the Poisson
levels, the one at 53.71 req/s fell behind (latency growing 0.061 s per second), where the
model, calibrated on the others, saturates at 55.7 req/s."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from plan_profiles import closed_level, exponential_samples, open_level, profile

from switchgear.cli.main import main
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

Simulators = Callable[..., RunningSimulator]
#: 2 slots, each request (5 tokens) 10 ms + 4 x 2 ms = 18 ms: at most 2 / 0.018 = 111 requests/s.
SLOTS, SERVICE_S = 2, 0.018


def _run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_a_sweep_profile_yields_a_plan(simulators: Simulators, tmp_path: Path) -> None:
    sim = simulators(ModelOptions(slots=SLOTS, ttft_ms=10, tpot_ms=2, mean_output_tokens=1000,
                                  load_factor=0, seed=1))
    out = tmp_path / "sweep.json"
    bench = _run("bench", "--url", sim.base_url, "--model", "sim", "--sweep",
                 "--sweep-concurrency", "8", "--sweep-rates", "2", "--refine", "0",
                 "--duration", "0.8", "--warmup", "0.1", "--output-tokens", "5", "--ignore-eos",
                 "--slo-e2e-p95", "0.1", "--json", str(out))
    assert bench.exit_code == 0, bench.output
    levels = json.loads(out.read_text())["levels"]
    closed = [level["concurrency"] for level in levels if level["mode"] == "concurrency"]
    # From 1, doubling, one doubling past the 2 slots (throughput stopped rising), or up to 8.
    assert closed[:3] == [1, 2, 4] and len(closed) <= 4

    # Levels of 0.8 s are too short to support a plan (its top Poisson level may fall behind
    # below the modelled saturation: refused, as the stored sweep below shows), so this checks
    # the model's figures, forced.
    result = _run("plan", "--profile", str(out), "--peak-rate", "100", "--json", "-", "--force")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    predicted = plan["predicted"]
    # Levels bench marked itself saturated on are left out, but for concurrency 1 (on a busy
    # machine bench's check of itself flags some of these 0.8 s levels now and then).
    kept = [level for level in levels if level["mode"] == "concurrency"
            and (level["concurrency"] == 1 or not (level.get("client") or {}).get("saturated"))]
    assert ([level["concurrency"] for level in plan["calibration"]["closed_loop_levels"]]
            == [level["concurrency"] for level in kept])
    if kept[-1]["concurrency"] < SLOTS:  # none left with the slots busy: no knee to model
        assert "saturation not reached" in [warning["check"] for warning in plan["warnings"]]
        return
    # The open-loop levels rescale service times (between 0.25x and 4x), so saturation is
    # near the server's capacity and the closed-loop throughput, not equal to them.
    top = max(level["request_rate"] for level in kept)
    for reference in (SLOTS / SERVICE_S, top):
        assert 0.7 * reference <= predicted["saturation_rate"] <= 1.5 * reference
    assert plan["calibration"]["slots"] in (SLOTS, 2 * SLOTS)
    # 100 req/s at 70% of a saturation of 78-167 req/s: 1 to 2 instances, and the SLO (p95
    # within 100 ms, the profile's) holds at the rate each one gets.
    assert 1 <= plan["instances"] <= 2
    assert predicted["rate_per_instance"] == 100 / plan["instances"]
    alone = levels[0]["latency_s"]["e2e"]["mean"]
    assert 0.5 * alone <= predicted["mean_s"] <= predicted["p95_s"] <= 0.1


def _plan_of(tmp_path: Path, document: dict[str, Any]) -> Any:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(document))
    return _run("plan", "--profile", str(path), "--peak-rate", "10")


def test_a_profile_without_concurrency_1_names_the_level_and_how_to_bench_it(
        tmp_path: Path) -> None:
    # What `bench --sweep` used to write: one closed-loop level at 64, then open-loop rates.
    saturated = profile([closed_level(64, 40.0, exponential_samples(1.6)),
                         open_level(20.0, exponential_samples(0.1))])
    result = _plan_of(tmp_path, saturated)
    assert result.exit_code == 1
    assert ("the profile has no closed-loop level at concurrency 1 (its closed-loop levels: "
            "concurrency 64)" in result.output)
    assert "bench one with `switchgear bench --url http://127.0.0.1:8080/v1 --model sim -c 1`" \
        in result.output
    assert "measured at concurrency 1" not in result.output


def test_a_profile_without_closed_loop_levels_is_refused(tmp_path: Path) -> None:
    result = _plan_of(tmp_path, profile([open_level(20.0, exponential_samples(0.1))]))
    assert result.exit_code == 1
    assert "the profile has no closed-loop level (it has 1 open-loop level(s))" in result.output
    assert "-c 1 -c 2 -c 4 -c 8" in result.output


def test_a_concurrency_1_level_that_completed_nothing_is_named(tmp_path: Path) -> None:
    failed = closed_level(1, 0.0, [], errors=30)
    result = _plan_of(tmp_path, profile([failed, closed_level(2, 20.0, exponential_samples(0.1))]))
    assert result.exit_code == 1
    assert "closed-loop level at concurrency 1 completed no request (30 sent)" in result.output


def test_one_closed_loop_level_plans_with_a_warning(tmp_path: Path) -> None:
    alone = profile([closed_level(1, 10.0, exponential_samples(0.1))])
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(alone))
    result = _run("plan", "--profile", str(path), "--peak-rate", "2", "--json", "-")
    assert result.exit_code == 0, result.output
    warnings = {w["check"]: w["message"] for w in json.loads(result.output)["warnings"]}
    assert warnings["saturation not reached"].startswith(
        "the profile has one closed-loop level (concurrency 1)")
    assert "is a lower bound" in warnings["saturation not reached"]


SWEEP = Path(__file__).parent / "data" / "sweep-simulator-2026-12-06.json.gz"
UNSERVED = "the poisson level at 53.71 req/s was not served (its latency grew 0.061 s per second"


@pytest.fixture
def sweep_path(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.json"
    path.write_bytes(gzip.decompress(SWEEP.read_bytes()))
    return path


def test_a_real_sweep_whose_top_level_fell_behind_refuses_a_plan_that_stands_on_it(
        sweep_path: Path) -> None:
    # Within a p95 of 1 s the model allows 53.7 req/s per instance: past the level that fell
    # behind, below the modelled saturation (55.7).
    refused = _run("plan", "--profile", str(sweep_path), "--peak-rate", "100", "--slo-p95", "1")
    assert refused.exit_code == 1
    assert refused.output.startswith("switchgear plan: the profile contradicts this plan (--force "
                                     "plans anyway):\n  - " + UNSERVED)
    assert "below the modelled saturation of 55.7" in refused.output
    assert "at or below the rate the plan stands on (53.7" in refused.output
    forced = _run("plan", "--profile", str(sweep_path), "--peak-rate", "100", "--slo-p95", "1", "--force")
    assert forced.exit_code == 0, forced.output
    assert forced.output.startswith("REFUSED, FORCED: " + UNSERVED)


def test_a_real_sweep_warns_where_the_contradiction_lies_above_the_answer(sweep_path: Path) -> None:
    # Within the profile's p95 of 0.5 s the model allows 52.0 req/s: below the level that fell
    # behind, so the plan stands, with the saturation flagged first thing in its output.
    result = _run("plan", "--profile", str(sweep_path), "--peak-rate", "100", "--json", "-")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["percentile_method"] == "nearest-rank"
    (warning,) = plan["warnings"]
    assert warning["check"] == "unserved below the modelled saturation" and not warning["overridden"]
    assert warning["message"].startswith(UNSERVED)
    assert "above the rate the plan stands on (52.0" in warning["message"]
    assert plan["predicted"]["saturation_rate"] == pytest.approx(55.7, abs=0.1)
    # The level that fell behind is not calibrated on; the nine others are, each to its p95.
    checks = plan["calibration"]["open_loop_checks"]
    assert len(checks) == 9 and 53.706 not in [check["rate"] for check in checks]
