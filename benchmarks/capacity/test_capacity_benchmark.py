"""The capacity benchmark end to end on the simulator with one-second levels (its figures are
then too noisy to judge: this checks that it runs, predicts, measures and prints every line)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from scripts import load_script

pytest.importorskip("switchgear.cli.bench", reason="needs switchgear bench")


bench = load_script(Path(__file__).resolve().parent / "run.py", "capacity_benchmark")


def test_a_short_run_prints_predicted_against_measured(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    code = bench.main(["--only", "simulator", "--level-seconds", "1", "--poisson-seconds", "1",
                       "--warmup-seconds", "0.2", "--poisson-warmup-seconds", "0.2",
                       "--json", str(out)])
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert code == (0 if all(result["met"] for result in results) else 1)
    assert [result["figure"] for result in results] == [
        "p95 at 70% of X (s)", "p95 at 80% of X (s)", "highest rate within SLO (req/s)"]
    for result in results:
        assert result["predicted"] > 0 and result["measured"] > 0 and result["samples"] > 0
        assert f"{result['predicted']:.3f}" in printed
    assert "Method:" in printed and "within 10%" in printed and "paired by round" in printed


def test_an_error_beyond_ten_percent_is_missed() -> None:
    close = bench.Comparison("t", "f", predicted=1.09, measured=1.0, samples=10)
    far = bench.Comparison("t", "f", predicted=0.85, measured=1.0, samples=10)
    assert close.met and not far.met
    lines = bench.render([close, far])
    assert lines[1].endswith("met") and lines[2].endswith("MISSED")
    assert "+9.0%" in lines[1] and "-15.0%" in lines[2]


def test_a_level_p95_carries_its_batch_means_standard_error() -> None:
    # Six batches in time order, every latency of batch i equal to i + 1 (listed newest first):
    # the batch p95s are 1..6, their standard deviation sqrt(3.5) over sqrt(6) is the error.
    times = [float(t) for t in range(60)]
    level = {"completed": 60, "latency_s": {"e2e": {"p95": 6.0}},
             "samples": {"scheduled_at": times[::-1], "e2e": [1.0 + t // 10 for t in times[::-1]]}}
    measured = bench.Measured.of(level)
    assert measured.value == 6.0 and measured.samples == 60
    assert measured.noise == pytest.approx(3.5 ** 0.5 / 6 ** 0.5 / 6.0)
    assert bench.Measured.of({**level, "samples": {"scheduled_at": times[:30],
                                                    "e2e": [1.0] * 30}}).noise is None


def test_rounds_at_one_rate_pool_into_one_level_in_run_order() -> None:
    def level(times: list[float], e2e: list[float]) -> dict[str, Any]:
        return {"mode": "poisson", "rate": 2.0, "duration_s": 10.0, "sent": len(e2e) + 1,
                "completed": len(e2e), "latency_s": {"e2e": {"p95": max(e2e)}, "ttft": {}},
                "samples": {"scheduled_at": times, "e2e": e2e}}

    pooled = bench.pool([level([105.0, 100.0], [0.2, 0.1]), level([7.0, 9.0, 8.0], [0.3, 0.5, 0.4])])
    # each run's times from its own first arrival, the second run one second after the first
    assert pooled["samples"]["scheduled_at"] == [5.0, 0.0, 6.0, 8.0, 7.0]
    assert pooled["samples"]["e2e"] == [0.2, 0.1, 0.3, 0.5, 0.4]
    assert (pooled["sent"], pooled["completed"], pooled["duration_s"]) == (7, 5, 20.0)
    assert pooled["request_rate"] == 0.25 and pooled["rate"] == 2.0
    assert pooled["latency_s"]["e2e"]["p95"] == bench.percentile([0.1, 0.2, 0.3, 0.4, 0.5], 95)


def test_the_crossing_is_linear_between_the_levels_around_the_slo() -> None:
    p95s = {1.0: bench.Measured(1.0, 100, 0.1), 2.0: bench.Measured(3.0, 100, 0.1)}
    crossed = bench.crossing(p95s, 2.0)
    assert crossed.value == pytest.approx(1.5) and crossed.samples == 200
    # d rate / d p95 is 1/4 at each end here; errors 0.1 and 0.3 s: sqrt(0.025^2 + 0.075^2) / 1.5
    assert crossed.noise == pytest.approx((0.025 ** 2 + 0.075 ** 2) ** 0.5 / 1.5)
    assert bench.crossing(p95s, 0.5).value == 0.0
    assert bench.crossing(p95s, 5.0).value == 2.0


replayed = load_script(Path(__file__).resolve().parent / "replay.py", "capacity_replay")


def test_the_replay_predicts_every_stored_level_not_calibrated_on(capsys: pytest.CaptureFixture[str]) -> None:
    assert replayed.main(["--calibrate", "1.766,2.8257"]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in printed if line[:1].isdigit()]
    stored = replayed.load(replayed.DEFAULT_PROFILE)["levels"]
    poisson = sorted(level["rate"] for level in stored if level["mode"] == "poisson")
    assert [float(row[0]) for row in rows] == pytest.approx(
        [rate for rate in poisson if rate not in (1.766, 2.8257)], abs=1e-3)
    assert "time scale 1.192 at 1.766, 1.150 at 2.826" in printed[0]


def test_each_target_is_checked_at_its_own_shares_unless_told() -> None:
    simulator, engine = bench.target_specs(bench.parse_arguments([]))
    assert (engine.calibrate_at, engine.loads, engine.slo_at) == ((0.35, 0.45, 0.55), (0.4, 0.5), 0.475)
    assert (simulator.calibrate_at, simulator.loads, simulator.slo_at) == ((0.6, 0.9), (0.7, 0.8), 0.75)
    told = bench.target_specs(bench.parse_arguments(["--loads", "0.2,0.3", "--calibrate-at", "",
                                                     "--slo-at", "0.25", "--rounds", "2"]))
    assert {(spec.calibrate_at, spec.loads, spec.slo_at, spec.rounds) for spec in told} == {
        ((), (0.2, 0.3), 0.25, 2)}


def test_paired_errors_are_the_geometric_mean_over_rounds_with_its_standard_error() -> None:
    from capacity.plan_profiles import exponential_samples, mmc_profile, open_level

    document = mmc_profile(2, 10.0)  # an M/M/2 server, 10 req/s a slot

    def level(rate: float, p95: float) -> dict[str, Any]:
        return {**open_level(rate, exponential_samples(0.1, 2000)), "latency_s": {"e2e": {"p95": p95}}}

    calibration = level(8.0, 0.35)
    one_round = {8.0: [calibration], 12.0: [level(12.0, 0.5)]}
    (alone,) = bench.paired_errors(document, one_round, 1, 2).values()
    assert alone[1] == 0.0
    # the same calibration in both rounds; the check measured twice and half as long as before
    two_rounds = {8.0: [calibration, calibration], 12.0: [level(12.0, 1.0), level(12.0, 0.25)]}
    error, noise = bench.paired_errors(document, two_rounds, 1, 2)[12.0]
    assert error == pytest.approx(alone[0], rel=1e-6)
    assert noise == pytest.approx(math.log(4) / 2 ** 0.5 / 2 ** 0.5, rel=1e-6)
    # a round that completed nothing at the check rate has no p95 and is left out
    empty = {8.0: [calibration, calibration], 12.0: [level(12.0, 0.5), level(12.0, 0.0)]}
    assert bench.paired_errors(document, empty, 1, 2)[12.0] == pytest.approx(alone)
