"""Running one load level: open loop (constant or Poisson arrivals) or closed loop (N workers).

Open loop: arrivals are drawn up front as offsets from the start; each request's latency counts
from its *scheduled* time, so a late client or a full connection pool cannot hide queueing
(no coordinated omission). Closed loop: ``concurrency`` requests are always outstanding; each one
that ends starts the next. Requests scheduled during the warm-up are run but left out of figures.

A level stops early when every answer so far is the same client error (401, 404, ...: a wrong key,
model or body, which more requests will not change) once there are ``STOP_AFTER_ANSWERS`` of them
or ``STOP_AFTER_S`` seconds have passed; 408 and 429 are load answers and never stop a level.
A stopped level's figures count every request it sent, warm-up included.

While a level runs, ``ClientMonitor`` measures the client itself (``monitor``) and
``CollectorFreeze`` keeps the garbage collector's full passes off the outcomes it keeps.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import cycle

from switchgear.capacity.bench.client import (
    ConnectionPool,
    Endpoint,
    Outcome,
    Request,
    error_message,
)
from switchgear.capacity.bench.monitor import ClientLoad, ClientMonitor

CONCURRENCY = "concurrency"
CONSTANT = "constant"
POISSON = "poisson"
MODES = (CONCURRENCY, CONSTANT, POISSON)
STOP_AFTER_ANSWERS = 50
STOP_AFTER_S = 2.0
STOP_MIN_ANSWERS = 3
LOAD_STATUSES = frozenset({408, 429})
#: How often a level moves what the garbage collector has seen survive into its permanent
#: generation (``CollectorFreeze``).
FREEZE_INTERVAL_S = 0.01


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
    outcomes scheduled before it are warm-up and left out. ``stopped`` says why the level
    ended early (None: it ran its course). ``client`` is what the client's monitor saw over the
    whole level and ``queued`` how many requests waited for a free connection."""

    level: Level
    start: float
    outcomes: list[Outcome]
    warmup_outcomes: int
    client: ClientLoad
    stopped: str | None = None
    queued: int = 0


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


def is_refusal(status: int) -> bool:
    """Whether an HTTP status is a client error that more requests will not change (4xx but the
    load answers 408 and 429)."""
    return 400 <= status < 500 and status not in LOAD_STATUSES


class RefusalWatch:
    """Watches a level's answers for one client error and nothing else; ``observe`` gives the
    reason to stop once there are enough of them, or they have gone on long enough."""

    def __init__(self, start: float) -> None:
        self._start = start
        self._first: Outcome | None = None
        self._count = 0
        self._mixed = False

    def observe(self, outcome: Outcome, now: float) -> str | None:
        """Count ``outcome``; why the level should stop, or None."""
        if self._mixed:
            return None
        if not is_refusal(outcome.status) or (
                self._first is not None and outcome.status != self._first.status):
            self._mixed = True
            return None
        if self._first is None:
            self._first = outcome
        self._count += 1
        if self._count >= STOP_AFTER_ANSWERS or (
                self._count >= STOP_MIN_ANSWERS and now - self._start >= STOP_AFTER_S):
            return (f"every answer was HTTP {self._first.status}: "
                    f"{error_message(self._first.error_body)}")
        return None


class _Tally:
    """The outcomes as they end, and a future that resolves once nothing is outstanding."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.outcomes: list[Outcome] = []
        self.sent = 0
        self.failed = 0
        self.all_submitted = False
        self.stopped: str | None = None
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


class CollectorFreeze:
    """Keeps the garbage collector's full passes short while a level runs.

    A level keeps every outcome until it ends: hundreds of thousands of objects in a long level,
    which each full collection walked again. At 24,000 requests/s those passes took up to 313 ms
    (1.4 s of a 15 s level), stalls that landed in the tail percentiles as server latency.
    Every ``FREEZE_INTERVAL_S`` this moves every object alive into the permanent generation
    (``gc.freeze``, a constant-time list splice), so each pass walks only what is newer; the
    client's hot path makes no reference cycles, so nothing is left for the collector to free
    meanwhile. ``stop`` unfreezes them (process-wide: bench freezes nothing else)."""

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Freeze now and every ``FREEZE_INTERVAL_S`` after."""
        gc.freeze()
        self._handle = asyncio.get_running_loop().call_later(FREEZE_INTERVAL_S, self.start)

    def stop(self) -> None:
        """Stop freezing; hand everything back to the collector."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        gc.unfreeze()


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
    watch = RefusalWatch(start)
    closed_loop = level.mode == CONCURRENCY

    def on_outcome(outcome: Outcome) -> None:
        now = time.perf_counter()
        if tally.stopped is None and (reason := watch.observe(outcome, now)):
            tally.stopped = reason
            tally.sent -= pool.drop_waiting()
            tally.submitted_all()
        tally.add(outcome)
        if closed_loop and not tally.all_submitted:
            if now < end:
                tally.sent += 1
                pool.submit(next_request(), now)
            else:
                tally.submitted_all()

    pool = ConnectionPool(endpoint, connections, timeout_s, on_outcome)
    reporter = loop.create_task(_report(tally, start, progress)) if progress else None
    monitor = ClientMonitor()
    freeze = CollectorFreeze()
    try:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        freeze.start()
        monitor.start()
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
                if tally.stopped:
                    break
                tally.sent += 1
                pool.submit(next_request(), due)
            tally.submitted_all()
        await tally.drained
    finally:
        client = monitor.stop()
        freeze.stop()
        pool.close()
        if reporter is not None:
            reporter.cancel()
    if progress:
        progress(tally.sent, len(tally.outcomes), tally.failed, time.perf_counter() - start)
    window = start if tally.stopped else start + level.warmup_s
    measured = [outcome for outcome in tally.outcomes if outcome.scheduled_at >= window]
    return LevelRun(level, window, measured, len(tally.outcomes) - len(measured), client,
                    tally.stopped, pool.queued)


async def _report(tally: _Tally, start: float, progress: Progress) -> None:
    while True:
        await asyncio.sleep(0.25)
        progress(tally.sent, len(tally.outcomes), tally.failed, max(0.0, time.perf_counter() - start))
