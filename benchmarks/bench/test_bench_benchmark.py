"""The bench benchmark runs end to end on short runs and prints both parts and its method."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scripts import load_script

benchmark = load_script(Path(__file__).resolve().parent / "run.py", "bench_benchmark")
TOOLS = all(shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()
            for tool in ("nginx", "wrk", "hey"))


@pytest.mark.skipif(not TOOLS, reason="nginx, wrk and hey: benchmarks/overhead/setup.sh")
def test_a_short_run_prints_both_parts_and_the_method(
        capsys: pytest.CaptureFixture[str]) -> None:
    # hey prints p99 only from 100 answers on: 2 s at 8 connections give about 250.
    benchmark.main(["--seconds", "2", "--concurrency", "8", "--ceiling-connections", "8"])
    out = capsys.readouterr().out
    assert out.startswith("Method: CPython")
    assert "(a) ceiling" in out and "(b) agreement" in out
    targets = [line for line in out.splitlines() if line.strip().startswith("target:")]
    assert len(targets) == 2 and all(line.endswith(("met", "MISSED")) for line in targets)
    for tool in ("wrk", "hey", "switchgear bench"):
        assert any(line.split()[:len(tool.split())] == tool.split()
                   for line in out.splitlines()), tool


def test_figures_differences_are_relative_to_the_other_tool() -> None:
    ours = benchmark.Figures("switchgear bench", 105.0, 10.0, 20.0, 33.0)
    theirs = benchmark.Figures("wrk", 100.0, 10.0, 25.0, 30.0)
    assert ours.differences(theirs) == pytest.approx([0.05, 0.0, -0.2, 0.1])
