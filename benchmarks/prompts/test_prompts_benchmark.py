"""The prompt benchmark runs end to end on a few requests and prints its rows and method."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import load_script

bench = load_script(Path(__file__).resolve().parent / "run.py", "prompts_benchmark")


def test_a_short_run_prints_both_cases_and_the_method(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert bench.main(["--requests", "50", "--warmup", "5"]) == 0
    out = capsys.readouterr().out
    rows = out.splitlines()
    assert rows[1].startswith("no template ") and rows[2].startswith("template ")
    assert "Method: CPython" in out and "50 timed requests" in out
