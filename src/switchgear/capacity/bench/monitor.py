"""bench watching itself: whether a level's figures measure the server or the client.

While a level runs, ``ClientMonitor`` takes the CPU time of the event loop's thread (over the
level's wall time: 1.0 is one core busy) and the event loop's lag (a timer every
``LAG_PROBE_INTERVAL_S`` that records how late it fired); after it, ``client_health`` adds how
late open-loop requests went out against their schedule (from the outcomes' own stamps: no cost
while running) and marks the level saturated when any of them is over its bound, with the reason
in words. The probe costs about two microseconds a tick: 0.05% of a core at 100 ticks a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from switchgear.percentiles import nearest_rank

#: A client thread busy for this share of its wall time has no slack left: answers wait for it
#: to get round to them, so latencies grow with its own work and throughput is its own ceiling.
SATURATED_CPU_SHARE = 0.9
#: Event-loop lag (p99) above this many seconds means answers were read (and stamped) that much
#: after they arrived: ms-scale, an order above the loop timer's 1 ms granularity under uvloop.
LOOP_LAG_P99_BOUND_S = 0.005
#: Open loop: sends later than this (p99) against the schedule mean the arrivals were not the
#: process asked for (latency still counts from the schedule, but the server saw other gaps).
LATE_P99_BOUND_S = 0.005
#: How often the lag probe fires: 100 samples a second, enough for a p99 in a few seconds.
LAG_PROBE_INTERVAL_S = 0.01
#: The percentile that lag and lateness are judged on.
TAIL = 99


@dataclass(frozen=True, slots=True)
class ClientLoad:
    """What the monitor saw while one level ran: the loop thread's CPU and wall seconds and the
    lag of each probe tick."""

    cpu_s: float
    wall_s: float
    lags_s: list[float]

    @property
    def cpu_share(self) -> float:
        """CPU seconds over wall seconds: 1.0 is one core kept busy."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


class ClientMonitor:
    """Measures the client while a level runs: ``start`` on the event loop, ``stop`` after."""

    def __init__(self, interval_s: float = LAG_PROBE_INTERVAL_S) -> None:
        self._interval = interval_s
        self._lags: list[float] = []
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cpu_start = 0.0
        self._wall_start = 0.0

    def start(self) -> None:
        """Start counting CPU and probing the running loop's lag."""
        self._cpu_start = time.thread_time()
        self._wall_start = time.perf_counter()
        self._schedule(asyncio.get_running_loop())

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = time.perf_counter() + self._interval
        self._handle = loop.call_later(self._interval, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._lags.append(max(0.0, time.perf_counter() - self._due))
        self._schedule(loop)

    def stop(self) -> ClientLoad:
        """Stop probing; what was measured since ``start``."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        return ClientLoad(time.thread_time() - self._cpu_start,
                          time.perf_counter() - self._wall_start, self._lags)


def _tail(values: Sequence[float]) -> float | None:
    return nearest_rank(sorted(values), TAIL) if values else None


def client_health(load: ClientLoad, late_s: Sequence[float] | None, requests: int,
                  queued: int = 0) -> dict[str, Any]:
    """The profile's ``client`` object of one level: CPU share, lag and lateness p99 (None:
    closed loop), CPU seconds per request, and whether (and why) the client was saturated.
    ``queued`` counts open-loop requests that waited for a free connection."""
    lag = _tail(load.lags_s)
    late = None if late_s is None else _tail(late_s)
    reasons = []
    if load.cpu_share >= SATURATED_CPU_SHARE:
        reasons.append(f"the client used {load.cpu_share:.0%} of a core: its figures measure "
                       "itself")
    if lag is not None and lag > LOOP_LAG_P99_BOUND_S:
        reasons.append(f"the client's event loop ran {lag * 1000:.1f} ms late (p{TAIL}): "
                       "answers were read and timed that much after they arrived")
    if late is not None and late > LATE_P99_BOUND_S:
        cause = (f"; {queued} requests waited for a free connection (--max-connections)"
                 if queued else "")
        reasons.append(f"requests went out {late * 1000:.1f} ms late (p{TAIL}) against the "
                       f"schedule{cause}")
    return {"cpu_share": round(load.cpu_share, 4), "loop_lag_p99_s": _rounded(lag),
            "late_p99_s": _rounded(late),
            "cpu_per_request_s": round(load.cpu_s / requests, 9) if requests else None,
            "saturated": bool(reasons), "reasons": reasons}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
