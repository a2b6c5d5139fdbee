"""The router benchmark runs end to end on a few decisions and prints every row and its method."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_benchmark() -> ModuleType:
    """benchmarks/router/run.py as the module ``router_benchmark`` (``run`` alone would clash
    with benchmarks/overhead/run.py in one pytest session)."""
    spec = importlib.util.spec_from_file_location(
        "router_benchmark", Path(__file__).resolve().parent / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = load_benchmark()


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
