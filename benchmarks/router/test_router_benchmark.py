"""The router benchmark runs end to end on a few decisions and prints every row and its method."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import load_script

bench = load_script(Path(__file__).resolve().parent / "run.py", "router_benchmark")


def test_a_short_run_prints_the_table_and_the_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--decisions", "50", "--warmup", "5"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:2] for line in out.splitlines()]
    for policy in bench.POLICIES:
        assert [policy, "3"] in rows and [policy, "100"] in rows
    assert "Method: CPython" in out and "50 timed one by one" in out


def test_every_policy_plans_every_deployment() -> None:
    for policy in bench.POLICIES:
        router = bench.build_router(policy, 100, seed=1)
        assert len(router.plan(bench.ALIAS)) == 100
