"""The fleet benchmark: a short run prints a row for one and for three replicas in both scopes,
the comparisons and the method; the comparisons pair the right runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scripts import load_script

benchmark = load_script(Path(__file__).resolve().parent / "run.py", "fleet_benchmark")
TOOLS = all(shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists() for tool in ("nginx", "wrk"))


@pytest.mark.postgres
@pytest.mark.skipif(not TOOLS, reason="nginx and wrk: benchmarks/overhead/setup.sh --debian-only")
def test_a_short_run_prints_every_run_both_comparisons_and_the_method(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert benchmark.main(["--upstreams", "zero-latency", "--concurrency", "4", "--seconds", "1",
                           "--warmup-seconds", "1"]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[1].splitlines()
    assert table[0] == benchmark.HEADER
    assert [row.split()[:4] for row in table[1:]] == [
        ["zero-latency", "1", "replica", "4"], ["zero-latency", "1", "fleet", "4"],
        ["zero-latency", "3", "replica", "4"], ["zero-latency", "3", "fleet", "4"]]
    assert all(row.split()[-1] == "0" for row in table[1:])  # no errors
    assert out.count(" -> ") == 2 * 2  # req/s and p99, for each scope
    assert out.count(" us/req, Redis's ") == 2  # one replica, three replicas
    assert "Method: " in out and "not scale-out" in out


def run(replicas: int, scope: str, requests_per_s: float, p99_ms: float, cpu_us: float
        ) -> object:
    """A measured run with only the figures the comparisons read."""
    result = benchmark.LoadResult(requests=1000, requests_per_s=requests_per_s, p50_ms=p99_ms / 2,
                                  p99_ms=p99_ms, non_2xx=0, socket_errors=0)
    return benchmark.Run("zero-latency", replicas, scope, 16, result, cpu_us, 0.0)


def test_the_comparisons_pair_runs_alike_but_for_what_they_compare() -> None:
    runs = [run(1, "replica", 1000, 10, 250), run(1, "fleet", 800, 12, 400),
            run(3, "replica", 900, 30, 300), run(3, "fleet", 700, 40, 500)]
    assert benchmark.scale_lines(runs) == [
        "  zero-latency replica  conc  16: req/s 1,000 -> 900 (x0.90), p99 10.00 -> 30.00 ms",
        "  zero-latency fleet    conc  16: req/s 800 -> 700 (x0.88), p99 12.00 -> 40.00 ms"]
    lines = benchmark.fleet_cost_lines(runs)
    assert len(lines) == 2
    assert lines[0].startswith("  zero-latency 1 replica  conc  16: replicas' CPU +150 us/req")
    assert lines[1].startswith("  zero-latency 3 replicas conc  16: replicas' CPU +200 us/req")
    assert lines[1].endswith("p99 +10.00 ms, req/s -22%")
