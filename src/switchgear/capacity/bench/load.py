"""Running one load level: open loop (constant or Poisson arrivals) or closed loop (N workers).

Open loop: arrivals are drawn up front as offsets from the start; each request's latency counts
from its *scheduled* time, so a late client or a full connection pool cannot hide queueing
(no coordinated omission). Closed loop: ``concurrency`` requests are always outstanding; each one
that ends starts the next. Requests scheduled during the warm-up are run but left out of figures.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import cycle

from switchgear.capacity.bench.client import ConnectionPool, Endpoint, Outcome, Request

CONCURRENCY = "concurrency"
CONSTANT = "constant"
POISSON = "poisson"
MODES = (CONCURRENCY, CONSTANT, POISSON)


@dataclass(frozen=True, slots=True)
class Level:
    """One load level: closed loop at ``concurrency``, or open loop at ``rate`` arrivals/s."""

    mode: str
    duration_s: float
    warmup_s: float = 0.0
    concurrency: int | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if self.mode == CONCURRENCY and not (self.concurrency and self.concurrency > 0):
            raise ValueError("a closed-loop level needs a positive concurrency")
        if self.mode != CONCURRENCY and not (self.rate and self.rate > 0):
            raise ValueError("an open-loop level needs a positive rate")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration must be positive and warm-up not negative")

    @property
    def label(self) -> str:
        """A short name: ``c=8`` or ``poisson 40/s``."""
        if self.mode == CONCURRENCY:
            return f"c={self.concurrency}"
        return f"{self.mode} {self.rate:g}/s"


@dataclass(frozen=True, slots=True)
class LevelRun:
    """The outcomes of one level. ``start`` is when the measured window opens (after the warm-up);
    outcomes scheduled before it are warm-up and left out."""

    level: Level
    start: float
    outcomes: list[Outcome]
    warmup_outcomes: int


def arrival_offsets(mode: str, rate: float, seconds: float,
                    rng: random.Random) -> Iterator[float]:
    """Seconds from the start at which open-loop requests are due, up to ``seconds``:
    evenly spaced (constant) or with exponential gaps (Poisson)."""
    if mode == CONSTANT:
        count = int(seconds * rate)
        return (index / rate for index in range(count))

    def poisson() -> Iterator[float]:
        offset = rng.expovariate(rate)
        while offset < seconds:
            yield offset
            offset += rng.expovariate(rate)
    return poisson()


Progress = Callable[[int, int, int, float], None]
"""Told now and then: requests sent, ended, failed, and seconds elapsed."""


class _Tally:
    """The outcomes as they end, and a future that resolves once nothing is outstanding."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.outcomes: list[Outcome] = []
        self.sent = 0
        self.failed = 0
        self.all_submitted = False
        self.drained: asyncio.Future[None] = loop.create_future()

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if outcome.error is not None:
            self.failed += 1
        if self.all_submitted and len(self.outcomes) == self.sent and not self.drained.done():
            self.drained.set_result(None)

    def submitted_all(self) -> None:
        self.all_submitted = True
        if len(self.outcomes) == self.sent and not self.drained.done():
            self.drained.set_result(None)


async def run_level(endpoint: Endpoint, requests: list[Request], level: Level, *,
                    max_connections: int, timeout_s: float, seed: int | None = None,
                    progress: Progress | None = None) -> LevelRun:
    """Run ``level`` against ``endpoint``, cycling through ``requests``; every request sent is
    waited for (or times out) before this returns."""
    loop = asyncio.get_running_loop()
    tally = _Tally(loop)
    next_request = cycle(requests).__next__
    start = time.perf_counter() + 0.01
    end = start + level.warmup_s + level.duration_s
    connections = level.concurrency if level.mode == CONCURRENCY else max_connections
    assert connections is not None

    def on_outcome(outcome: Outcome) -> None:
        tally.add(outcome)
        if level.mode == CONCURRENCY and not tally.all_submitted:
            now = time.perf_counter()
            if now < end:
                tally.sent += 1
                pool.submit(next_request(), now)
            else:
                tally.submitted_all()

    pool = ConnectionPool(endpoint, connections, timeout_s, on_outcome)
    reporter = loop.create_task(_report(tally, start, progress)) if progress else None
    try:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        if level.mode == CONCURRENCY:
            for _ in range(connections):
                tally.sent += 1
                pool.submit(next_request(), start)
        else:
            assert level.rate is not None
            rng = random.Random(seed)
            for offset in arrival_offsets(level.mode, level.rate,
                                          level.warmup_s + level.duration_s, rng):
                due = start + offset
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tally.sent += 1
                pool.submit(next_request(), due)
            tally.submitted_all()
        await tally.drained
    finally:
        pool.close()
        if reporter is not None:
            reporter.cancel()
    if progress:
        progress(tally.sent, len(tally.outcomes), tally.failed, time.perf_counter() - start)
    window = start + level.warmup_s
    measured = [outcome for outcome in tally.outcomes if outcome.scheduled_at >= window]
    return LevelRun(level, window, measured, len(tally.outcomes) - len(measured))


async def _report(tally: _Tally, start: float, progress: Progress) -> None:
    while True:
        await asyncio.sleep(0.25)
        progress(tally.sent, len(tally.outcomes), tally.failed, max(0.0, time.perf_counter() - start))
