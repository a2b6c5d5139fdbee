"""Helpers for the bench tests: run bench levels against real servers from a test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from switchgear.capacity.bench.figures import SLO
from switchgear.capacity.bench.load import Level
from switchgear.capacity.bench.runner import Bench, Sweep, Target
from switchgear.capacity.bench.workload import Lengths, Workload, synthetic

RunLevels = Callable[..., dict[str, Any]]


def _short_workload(output_tokens: int = 4, input_tokens: int = 16) -> Workload:
    """A few small synthetic prompts asking for ``output_tokens`` each."""
    return synthetic(Lengths(input_tokens), Lengths(output_tokens), count=8, seed=1)


@pytest.fixture
def run_levels() -> RunLevels:
    """Run levels (or a sweep) with bench against ``url``; the profile.
    Keyword arguments go to ``Target`` (stream, ignore_eos, timeout_s, ...)."""

    def run(url: str, levels: list[Level] | Sweep, workload: Workload | None = None,
            slo: SLO | None = None, seed: int = 0, **target: Any) -> dict[str, Any]:
        bench = Bench(Target(url, target.pop("model", "sim"), target.pop("operation", "chat"),
                             target.pop("stream", True), **target),
                      workload or _short_workload(), slo or SLO(), seed)
        if isinstance(levels, Sweep):
            return asyncio.run(bench.sweep(levels))
        return asyncio.run(bench.levels(levels))

    return run
