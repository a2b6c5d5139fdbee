"""bench watching itself: whether a level's figures measure the server or the client.

While a level runs, ``ClientMonitor`` takes the CPU time of the event loop's thread (over the
level's wall time: 1.0 is one core busy), the time that thread waited for a CPU other work held
(Linux's run-queue wait, ``/proc/thread-self/schedstat``; zero where there is none), and the
event loop's lag (a timer every ``LAG_PROBE_INTERVAL_S`` that records how late it fired, and how
much of that the thread spent waiting for a CPU). After it, ``client_health`` adds how late
open-loop requests went out against their schedule (from the outcomes' own stamps: no cost while
running) and marks the level saturated when the client itself was the limit: busy (or waiting
for a CPU) nearly all the time, its own work holding its loop, or its sends late; each with the
reason in words. A loop late only because the machine's other work held the CPU is a note, not
the mark: the figures are still off by that much, but bench is not what to fix. The probe costs
about three microseconds a tick: 0.03% of a core at 100 ticks a second (benchmarks/bench).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from switchgear.percentiles import nearest_rank

#: A client thread busy (or waiting for a CPU to be busy on) for this share of its wall time has
#: no slack left: answers wait for it to get round to them, so latencies grow with its own work
#: and throughput is its own ceiling.
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
#: Where Linux counts a thread's time on a CPU and waiting for one (nanoseconds).
SCHEDSTAT = "/proc/thread-self/schedstat"


class RunQueueClock:
    """Seconds the calling thread has waited for a CPU (runnable, not running), read from
    Linux's schedstat through a descriptor kept open (0.6 us a read); always 0 elsewhere."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(SCHEDSTAT, os.O_RDONLY)
        except OSError:
            self._fd = None

    def waited(self) -> float:
        """Run-queue seconds so far."""
        if self._fd is None:
            return 0.0
        return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9

    def close(self) -> None:
        """Close the descriptor."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True, slots=True)
class ClientLoad:
    """What the monitor saw while one level ran: the loop thread's CPU and wall seconds, its
    seconds waiting for a CPU, the lag of each probe tick and the part of each lag that was not
    such waiting (the client's own work holding the loop)."""

    cpu_s: float
    wall_s: float
    lags_s: list[float]
    wait_s: float = 0.0
    own_lags_s: list[float] | None = None

    @property
    def cpu_share(self) -> float:
        """CPU seconds over wall seconds: 1.0 is one core kept busy."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def wait_share(self) -> float:
        """Seconds waiting for a CPU over wall seconds."""
        return self.wait_s / self.wall_s if self.wall_s > 0 else 0.0


class ClientMonitor:
    """Measures the client while a level runs: ``start`` on the event loop, ``stop`` after."""

    def __init__(self, interval_s: float = LAG_PROBE_INTERVAL_S) -> None:
        self._interval = interval_s
        self._lags: list[float] = []
        self._own_lags: list[float] = []
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cpu_start = 0.0
        self._wall_start = 0.0
        self._run_queue: RunQueueClock | None = None
        self._wait_start = 0.0
        self._waited = 0.0

    def start(self) -> None:
        """Start counting CPU and probing the running loop's lag (call it on the loop)."""
        self._run_queue = RunQueueClock()
        self._wait_start = self._waited = self._run_queue.waited()
        self._cpu_start = time.thread_time()
        self._wall_start = time.perf_counter()
        self._schedule(asyncio.get_running_loop())

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = time.perf_counter() + self._interval
        self._handle = loop.call_later(self._interval, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        lag = max(0.0, time.perf_counter() - self._due)
        assert self._run_queue is not None
        waited = self._run_queue.waited()
        self._lags.append(lag)
        self._own_lags.append(max(0.0, lag - (waited - self._waited)))
        self._waited = waited
        self._schedule(loop)

    def stop(self) -> ClientLoad:
        """Stop probing; what was measured since ``start``."""
        cpu, wall = time.thread_time() - self._cpu_start, time.perf_counter() - self._wall_start
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        wait = 0.0
        if self._run_queue is not None:
            wait = self._run_queue.waited() - self._wait_start
            self._run_queue.close()
        return ClientLoad(cpu, wall, self._lags, wait, self._own_lags)


def _tail(values: Sequence[float]) -> float | None:
    return nearest_rank(sorted(values), TAIL) if values else None


def client_health(load: ClientLoad, late_s: Sequence[float] | None, requests: int,
                  queued: int = 0) -> dict[str, Any]:
    """The profile's ``client`` object of one level: CPU share, lag and lateness p99 (None:
    closed loop), CPU seconds per request, the share of time it waited for a CPU, whether (and
    why) the client was saturated, and notes on what distorted its figures without being the
    client's own limit. ``queued`` counts open-loop requests that waited for a free
    connection."""
    lag = _tail(load.lags_s)
    own_lag = _tail(load.lags_s if load.own_lags_s is None else load.own_lags_s)
    late = None if late_s is None else _tail(late_s)
    reasons, notes = [], []
    if load.cpu_share + load.wait_share >= SATURATED_CPU_SHARE:
        waiting = (f" and waited {load.wait_share:.0%} of the time for one (the machine was "
                   "busy)" if load.wait_share >= 0.05 else "")
        reasons.append(f"the client used {load.cpu_share:.0%} of a core{waiting}: its figures "
                       "measure itself")
    if own_lag is not None and own_lag > LOOP_LAG_P99_BOUND_S:
        reasons.append(f"the client's event loop ran {own_lag * 1000:.1f} ms late (p{TAIL}) "
                       "with its own work: answers were read and timed that much after they "
                       "arrived")
    elif lag is not None and lag > LOOP_LAG_P99_BOUND_S:
        notes.append(f"the machine was busy: the client waited {load.wait_share:.0%} of the "
                     f"level for a CPU and its event loop ran {lag * 1000:.1f} ms late (p{TAIL})"
                     ", so its latencies may be that much high")
    if late is not None and late > LATE_P99_BOUND_S:
        cause = (f"; {queued} requests waited for a free connection (--max-connections)"
                 if queued else "")
        reasons.append(f"requests went out {late * 1000:.1f} ms late (p{TAIL}) against the "
                       f"schedule{cause}")
    return {"cpu_share": round(load.cpu_share, 4), "cpu_wait_share": round(load.wait_share, 4),
            "loop_lag_p99_s": _rounded(lag), "late_p99_s": _rounded(late),
            "cpu_per_request_s": round(load.cpu_s / requests, 9) if requests else None,
            "saturated": bool(reasons), "reasons": reasons, "notes": notes}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
