"""The hedging benchmark runs end to end on a small load and prints both runs and its method."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import load_script

bench = load_script(Path(__file__).resolve().parent / "run.py", "hedging_benchmark")


def test_a_short_run_prints_both_runs_and_the_method(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--requests", "60", "--warmup", "30", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no hedging " in out and "hedged after p95 " in out and "Method: " in out
