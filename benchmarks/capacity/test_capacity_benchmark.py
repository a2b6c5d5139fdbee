"""The capacity benchmark end to end on the simulator with one-second levels (its figures are
then too noisy to judge: this checks that it runs, predicts, measures and prints every line)."""

from __future__ import annotations

import json
from pathlib import Path

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
        "p95 at 50% of saturation (s)", "p95 at 80% of saturation (s)",
        "highest rate within SLO (req/s)"]
    for result in results:
        assert result["predicted"] > 0 and result["measured"] > 0 and result["samples"] > 0
        assert f"{result['predicted']:.3f}" in printed
    assert "Method:" in printed and "within 10%" in printed


def test_an_error_beyond_ten_percent_is_missed() -> None:
    close = bench.Comparison("t", "f", predicted=1.09, measured=1.0, samples=10)
    far = bench.Comparison("t", "f", predicted=0.85, measured=1.0, samples=10)
    assert close.met and not far.met
    lines = bench.render([close, far])
    assert lines[1].endswith("met") and lines[2].endswith("MISSED")
    assert "+9.0%" in lines[1] and "-15.0%" in lines[2]
