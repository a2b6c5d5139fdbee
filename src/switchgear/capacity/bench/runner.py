"""A bench run from start to profile: the requests, each level (or a sweep), their figures.

A sweep, like guidellm's: a closed-loop level at high concurrency measures the saturation rate,
then open-loop levels at evenly spaced rates up to it; the highest rate whose level meets the SLO
is the goodput rate, refined by bisection towards the lowest rate above it that failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchgear.capacity.bench.client import Endpoint
from switchgear.capacity.bench.figures import SLO, level_figures
from switchgear.capacity.bench.load import CONCURRENCY, Level, run_level
from switchgear.capacity.bench.progress import ProgressBar
from switchgear.capacity.bench.workload import OPERATION_PATHS, Workload

PROFILE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Target:
    """The server under test and how to talk to it."""

    base_url: str
    model: str
    operation: str
    stream: bool
    api_key: str | None = None
    ignore_eos: bool = False
    max_connections: int = 1024
    timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Sweep:
    """How to sweep: the saturation level's concurrency, how many rates below it, their
    arrivals, how many bisection steps refine the answer, and each level's timing."""

    concurrency: int
    rates: int
    arrival: str
    refine: int
    duration_s: float
    warmup_s: float


LevelDone = Callable[[dict[str, Any]], None]


class Bench:
    """Runs levels against one target with one workload and SLO, and collects the profile."""

    def __init__(self, target: Target, workload: Workload, slo: SLO, seed: int | None,
                 progress: ProgressBar | None = None) -> None:
        self.target = target
        self.workload = workload
        self.slo = slo
        self.seed = seed
        self.progress = progress
        self.endpoint = Endpoint.of(target.base_url, OPERATION_PATHS[target.operation])
        headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
        self.requests = workload.requests(self.endpoint, target.operation, target.model,
                                          stream=target.stream, ignore_eos=target.ignore_eos,
                                          headers=headers)

    async def level(self, level: Level) -> dict[str, Any]:
        """Run one level; its figures."""
        bar = None
        if self.progress:
            bar = self.progress.level(level.label, level.warmup_s + level.duration_s)
        run = await run_level(self.endpoint, self.requests, level,
                              max_connections=self.target.max_connections,
                              timeout_s=self.target.timeout_s, seed=self.seed, progress=bar)
        figures = level_figures(run, self.slo)
        if self.progress:
            self.progress.level_done(_one_line(figures))
        return figures

    async def levels(self, levels: list[Level]) -> dict[str, Any]:
        """Run ``levels`` in turn; the profile."""
        return self.profile([await self.level(level) for level in levels], None)

    async def sweep(self, sweep: Sweep) -> dict[str, Any]:
        """Sweep up to saturation; the profile with its ``sweep`` answer."""
        saturation = await self.level(Level(CONCURRENCY, sweep.duration_s, sweep.warmup_s,
                                            concurrency=sweep.concurrency))
        results = [saturation]
        saturation_rate = saturation["request_rate"]
        if saturation_rate <= 0:
            return self.profile(results, {"saturation_rate": 0.0, "max_rate_within_slo": None,
                                          "saturation_concurrency": sweep.concurrency})
        passed: list[float] = []
        failed: list[float] = []

        async def at(rate: float) -> None:
            figures = await self.level(Level(sweep.arrival, sweep.duration_s, sweep.warmup_s,
                                             rate=round(rate, 3)))
            results.append(figures)
            (passed if figures["meets_slo"] else failed).append(figures["rate"])

        for step in range(1, sweep.rates + 1):
            await at(saturation_rate * step / sweep.rates)
        for _ in range(sweep.refine):
            best = max(passed, default=0.0)
            above = [rate for rate in failed if rate > best]
            if not above:
                break
            await at((best + min(above)) / 2)
        return self.profile(results, {
            "saturation_rate": saturation_rate,
            "saturation_concurrency": sweep.concurrency,
            "max_rate_within_slo": max(passed) if passed else None,
        })

    def profile(self, levels: list[dict[str, Any]], sweep: dict[str, Any] | None
                ) -> dict[str, Any]:
        """The bench profile (the JSON ``--json`` writes)."""
        return {
            "tool": "switchgear bench", "format": PROFILE_FORMAT,
            "target": {"url": self.target.base_url, "model": self.target.model,
                       "endpoint": self.target.operation},
            "workload": {**self.workload.description, "stream": self.target.stream,
                         "ignore_eos": self.target.ignore_eos, "seed": self.seed},
            "slo": self.slo.as_dict(),
            "levels": levels,
            "sweep": sweep,
        }


def _one_line(figures: dict[str, Any]) -> str:
    e2e = figures["latency_s"]["e2e"]
    p95 = "-" if e2e["p95"] is None else f"{e2e['p95'] * 1000:.1f} ms"
    verdict = "meets SLO" if figures["meets_slo"] else "misses SLO"
    return (f"{figures['label']:<18} {figures['request_rate']:.1f} req/s  e2e p95 {p95}  "
            f"errors {figures['sent'] - figures['completed']}/{figures['sent']}  {verdict}")
