"""The prompt benchmark runs end to end on a few requests and prints its rows and method."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "prompts_benchmark", Path(__file__).resolve().parent / "run.py")
assert SPEC is not None and SPEC.loader is not None
bench = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = bench
SPEC.loader.exec_module(bench)


def test_a_short_run_prints_both_cases_and_the_method(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert bench.main(["--requests", "50", "--warmup", "5"]) == 0
    out = capsys.readouterr().out
    rows = out.splitlines()
    assert rows[1].startswith("no template ") and rows[2].startswith("template ")
    assert "Method: CPython" in out and "50 timed requests" in out
