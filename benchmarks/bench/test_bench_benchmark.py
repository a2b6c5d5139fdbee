"""The bench benchmark: a short interleaved run at its three targets prints every tool, the
ratios, the saturation check and the goals; its parsing, rotation and verdicts on known figures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from scripts import load_script

benchmark = load_script(Path(__file__).resolve().parent / "run.py", "bench_benchmark")
TOOLS = all(shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()
            for tool in ("nginx", "wrk", "hey"))


@pytest.mark.skipif(not TOOLS, reason="nginx, wrk and hey: benchmarks/overhead/setup.sh")
def test_a_short_run_prints_every_target_tool_ratio_and_check(
        capsys: pytest.CaptureFixture[str]) -> None:
    # hey prints p99 only from 100 answers on: 1 s at 16 connections gives 300 at 50 ms.
    benchmark.main(["--seconds", "1", "--rounds", "1"])
    out = capsys.readouterr().out
    assert out.startswith("Method: CPython")
    assert "bench's self-measurement: one lag-probe tick costs" in out
    sections = out.split("\n" + "gateway: ")
    assert len(sections) == 2 and "\nzero-latency: " in out and "\n50 ms: " in out
    for tool in ("wrk", "hey", "bench"):
        assert sum(1 for line in out.splitlines() if line.split()[:1] == [tool]) == 3, tool
    for ratio in ("bench/wrk", "bench/hey", "hey/wrk"):
        assert out.count(f"    {ratio} ") == 3
    assert out.count("round 1: ") == 3
    assert out.count("bench's saturation mark: fired in ") == 3
    check = [line for line in out.splitlines() if "the mark fires at the zero-latency" in line]
    assert len(check) == 1 and check[0].endswith((": yes", ": NO"))
    goals = [line for line in out.splitlines() if line.strip().startswith("goal")]
    assert all(line.endswith(("(within 5% of either)", "in every round")) for line in goals)


def test_figures_ratios_and_differences_are_relative_to_the_other_tool() -> None:
    ours = benchmark.Figures("bench", 105.0, 10.0, 20.0, 33.0)
    theirs = benchmark.Figures("wrk", 100.0, 10.0, 25.0, 30.0)
    assert ours.ratios(theirs) == pytest.approx([1.05, 1.0, 0.8, 1.1])
    assert ours.differences(theirs) == pytest.approx([0.05, 0.0, -0.2, 0.1])


def test_each_round_rotates_the_tool_order() -> None:
    orders = [benchmark.rotated(index) for index in range(4)]
    assert orders == [["wrk", "hey", "bench"], ["hey", "bench", "wrk"],
                      ["bench", "wrk", "hey"], ["wrk", "hey", "bench"]]
    assert [order.index("bench") for order in orders[:3]] == [2, 1, 0]  # every position once


HEY_OUTPUT = """
Summary:
  Requests/sec:\t1600.5000
Latency distribution:
  10% in 0.0040 secs
  50% in 0.0081 secs
  90% in 0.0120 secs
  99% in 0.0213 secs

Status code distribution:
  [200]\t7990 responses
  [503]\t8 responses

Error distribution:
  [2]\tPost "http://127.0.0.1:1/v1/chat/completions": EOF
"""


def test_hey_output_is_read_with_errors_and_cpu_per_answer() -> None:
    figures = benchmark.parse_hey(HEY_OUTPUT, cpu_s=0.4)
    assert (figures.rate, figures.p50, figures.p90, figures.p99) == pytest.approx(
        (1600.5, 8.1, 12.0, 21.3))
    assert figures.errors == 10  # 8 non-200 answers and 2 failed requests
    assert figures.cpu_per_request_s == pytest.approx(0.4 / 7998)
    with pytest.raises(benchmark.BenchmarkError, match="p99 needs 100 answers"):
        benchmark.parse_hey("Requests/sec: 3\n  50% in 0.1 secs\n", 0.0)


def _runs(name: str, bench: list[tuple[float, bool]],
          other: float = 10.0) -> Any:
    """A TargetResult whose wrk and hey measured ``other`` ms (and 100/s) every round, and whose
    bench measured each (ms, saturated) given."""
    result = benchmark.TargetResult(name)
    for p50, saturated in bench:
        client = {"saturated": saturated, "cpu_share": 0.5, "loop_lag_p99_s": 0.001,
                  "cpu_per_request_s": 1e-5,
                  "reasons": ["the client used 97% of a core"] if saturated else []}
        result.runs["bench"].append(benchmark.Figures("bench", 100.0, p50, p50, p50, 0, 2e-5,
                                                      client))
        for tool in ("wrk", "hey"):
            result.runs[tool].append(benchmark.Figures(tool, 100.0, other, other, other, 0, 5e-6))
    return result


def test_the_zero_latency_check_needs_the_mark_in_every_round() -> None:
    lines, ok = benchmark.report(_runs(benchmark.ZERO, [(10.0, True), (10.0, True)]))
    assert ok and lines[-1] == "    check: the mark fires at the zero-latency target: yes"
    assert any("fired in 2 of 2 rounds: the client used 97% of a core" in line
               for line in lines)
    lines, ok = benchmark.report(_runs(benchmark.ZERO, [(10.0, True), (10.0, False)]))
    assert not ok and lines[-1].endswith(": NO")


def test_goals_are_judged_only_in_rounds_where_bench_was_not_saturated() -> None:
    # Round 2 is 50% off but saturated: left out; rounds 1 and 3 are 3% and 4% off.
    lines, ok = benchmark.report(_runs(benchmark.FIFTY, [(10.3, False), (15.0, True),
                                                         (10.4, False)]))
    goals = [line.strip() for line in lines if line.strip().startswith("goal")]
    assert ok and len(goals) == 4 and all(line.endswith("met (within 5% of either)")
                                          for line in goals[1:])
    assert goals[1].startswith("goal p50: bench +3.5% from wrk, +3.5% from hey")
    lines, ok = benchmark.report(_runs(benchmark.GATEWAY, [(11.0, False)]))
    assert not ok and any(line.endswith("MISSED (within 5% of either)") for line in lines)
    lines, ok = benchmark.report(_runs(benchmark.GATEWAY, [(50.0, True)]))
    assert ok and lines[-1].endswith("saturated in every round")
