"""The batch benchmark runs end to end on a small fleet and batch, and prints both phases, the
utilization, the batch's run against the idle capacity, and its method."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import load_script

bench = load_script(Path(__file__).resolve().parent / "run.py", "batch_benchmark")


def test_a_short_run_prints_both_phases_and_the_batchs_figures(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--simulators", "2", "--slots", "2", "--seconds", "2", "--warmup", "1",
                       "--lines", "60", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "alone " in out and "with batch " in out and "fleet utilization: " in out
    assert "batch: completed in " in out and "every line exactly once: yes" in out
    assert "idle capacity allowed: " in out and "Method: " in out
