"""A bench run from start to profile: the requests, each level (or a sweep), their figures.

A sweep, like guidellm's, measures the saturation rate in closed loop, then open-loop levels at
evenly spaced rates up to it; the highest rate whose level meets the SLO is the goodput rate,
refined by bisection towards the lowest rate above it that failed. Its closed-loop levels climb
from concurrency 1, doubling, to the sweep's concurrency, and stop one doubling past saturation
(throughput rose by less than ``PLATEAU_GAIN``): what ``switchgear plan`` builds its model from
(the latency of a request served alone, and throughput against concurrency up to saturation),
so a sweep's profile is one plan can use.

A level that stops early (every answer the same client error) ends the run: the rest would
only repeat it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchgear.capacity.bench.client import Endpoint
from switchgear.capacity.bench.figures import SLO, level_figures
from switchgear.capacity.bench.load import CONCURRENCY, Level, run_level
from switchgear.capacity.bench.preflight import check_target
from switchgear.capacity.bench.progress import ProgressBar
from switchgear.capacity.bench.workload import OPERATION_PATHS, Workload
from switchgear.percentiles import METHOD

PROFILE_FORMAT = 1
#: A doubling of concurrency that raised throughput by less than this factor is past saturation.
PLATEAU_GAIN = 1.05


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
    """How to sweep: the highest closed-loop concurrency, how many rates below saturation, their
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
        self.headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
        self.requests = workload.requests(self.endpoint, target.operation, target.model,
                                          stream=target.stream, ignore_eos=target.ignore_eos,
                                          headers=self.headers)

    async def check_target(self) -> str | None:
        """Before any level: raise ``TargetRefused`` when the target does not serve the model
        (or refuses us); else a warning worth printing, or None."""
        return await check_target(self.target.base_url, self.target.model, self.headers,
                                  self.endpoint, self.requests[0], self.target.timeout_s)

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
        """Run ``levels`` in turn, up to one that stopped early; the profile."""
        results: list[dict[str, Any]] = []
        for level in levels:
            results.append(await self.level(level))
            if results[-1]["stopped"]:
                break
        return self.profile(results, None)

    async def _climb(self, sweep: Sweep, results: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The sweep's closed-loop levels, concurrency 1 doubling up to ``sweep.concurrency``
        until throughput stops rising (or none completed); the level of the highest throughput
        (None: one stopped)."""
        concurrency, best = 1, None
        while True:
            figures = await self.level(Level(CONCURRENCY, sweep.duration_s, sweep.warmup_s,
                                             concurrency=concurrency))
            results.append(figures)
            if figures["stopped"]:
                return None
            rising = figures["request_rate"] > 0 and (
                best is None or figures["request_rate"] >= PLATEAU_GAIN * best["request_rate"])
            if best is None or figures["request_rate"] > best["request_rate"]:
                best = figures
            if not rising or concurrency >= sweep.concurrency:
                return best
            concurrency = min(2 * concurrency, sweep.concurrency)

    async def sweep(self, sweep: Sweep) -> dict[str, Any]:
        """Sweep up to saturation; the profile with its ``sweep`` answer."""
        results: list[dict[str, Any]] = []
        saturation = await self._climb(sweep, results)
        saturation_rate = saturation["request_rate"] if saturation else 0.0
        answer: dict[str, Any] = {
            "saturation_rate": saturation_rate,
            "saturation_concurrency": saturation["concurrency"] if saturation else None,
            "max_rate_within_slo": None}
        if saturation_rate <= 0:
            return self.profile(results, answer)
        passed: list[float] = []
        failed: list[float] = []

        async def at(rate: float) -> bool:
            figures = await self.level(Level(sweep.arrival, sweep.duration_s, sweep.warmup_s,
                                             rate=round(rate, 3)))
            results.append(figures)
            (passed if figures["meets_slo"] else failed).append(figures["rate"])
            return not figures["stopped"]

        going = True
        for step in range(1, sweep.rates + 1):
            going = going and await at(saturation_rate * step / sweep.rates)
        for _ in range(sweep.refine if going else 0):
            best = max(passed, default=0.0)
            above = [rate for rate in failed if rate > best]
            if not above or not await at((best + min(above)) / 2):
                break
        answer["max_rate_within_slo"] = max(passed) if passed else None
        return self.profile(results, answer)

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
            "percentile_method": METHOD,
            "levels": levels,
            "sweep": sweep,
        }


def _one_line(figures: dict[str, Any]) -> str:
    e2e = figures["latency_s"]["e2e"]
    p95 = "-" if e2e["p95"] is None else f"{e2e['p95'] * 1000:.1f} ms"
    verdict = "meets SLO" if figures["meets_slo"] else "misses SLO"
    if figures["stopped"]:
        verdict = f"stopped: {figures['stopped']}"
    client = figures["client"]
    mark = f"  CLIENT SATURATED: {'; '.join(client['reasons'])}" if client["saturated"] else ""
    return (f"{figures['label']:<18} {figures['request_rate']:.1f} req/s  e2e p95 {p95}  "
            f"errors {figures['sent'] - figures['completed']}/{figures['sent']}  "
            f"client CPU {client['cpu_share']:.0%}  {verdict}{mark}")
