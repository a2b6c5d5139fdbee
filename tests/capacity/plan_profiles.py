"""Constructed bench profiles (the JSON documents ``switchgear bench --json`` writes) for the
planner's tests, with latencies drawn exactly from known distributions (quantile grids)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

SAMPLES = 20000


def quantile_samples(quantile: Callable[[float], float], count: int = SAMPLES) -> list[float]:
    """``count`` samples that are exactly the distribution's quantiles at (i + 0.5) / count."""
    return [quantile((i + 0.5) / count) for i in range(count)]


def exponential_samples(mean: float, count: int = SAMPLES) -> list[float]:
    """Quantile samples of an exponential distribution, scaled so that their mean is exact
    (a finite grid misses a sliver of the tail)."""
    samples = quantile_samples(exponential(mean), count)
    scale = mean * count / math.fsum(samples)
    return [x * scale for x in samples]


def exponential(mean: float) -> Callable[[float], float]:
    """The quantile function of an exponential distribution."""
    return lambda u: -mean * math.log1p(-u)


def closed_level(concurrency: int, throughput: float, latencies: Sequence[float], *,
                 errors: int = 0, input_tokens: int = 128, output_tokens: int = 32) -> dict[str, Any]:
    """A closed-loop level as bench writes it."""
    count = len(latencies)
    return {"mode": "concurrency", "concurrency": concurrency, "rate": None, "duration_s": 20.0,
            "sent": count + errors, "completed": count,
            "errors": {"http_503": errors} if errors else {}, "request_rate": throughput,
            "samples": {"e2e": list(latencies), "ttft": [x / 4 for x in latencies],
                        "input_tokens": [input_tokens] * count,
                        "output_tokens": [output_tokens] * count}}


def open_level(rate: float, latencies: Sequence[float], *, in_order: bool = False,
               client: dict[str, Any] | None = None) -> dict[str, Any]:
    """An open-loop (Poisson) level as bench writes it, its requests scheduled 1 / ``rate``
    apart: ``latencies`` in a fixed shuffled order (a queue that keeps up), or ``in_order``;
    ``client``: what bench measured of itself (absent where None, as in profiles from before
    bench checked itself)."""
    count = len(latencies)
    if not in_order:
        latencies = random.Random(count).sample(list(latencies), count)
    level = {"mode": "poisson", "concurrency": None, "rate": rate, "duration_s": 20.0,
             "sent": count, "completed": count, "errors": {}, "request_rate": rate,
             "samples": {"e2e": list(latencies), "input_tokens": [128] * count,
                         "output_tokens": [32] * count,
                         "scheduled_at": [i / rate for i in range(count)]}}
    return level if client is None else {**level, "client": client}


def backlogged_level(rate: float, growth: float, seconds: float = 20.0) -> dict[str, Any]:
    """An open-loop level the server fell behind on: latency from 0.1 s growing ``growth``
    seconds per second of the level."""
    return open_level(rate, [0.1 + growth * i / rate for i in range(int(rate * seconds))], in_order=True)


def client_check(saturated: bool, *reasons: str) -> dict[str, Any]:
    """The ``client`` object bench writes for a level."""
    return {"cpu_share": 1.0 if saturated else 0.05, "loop_lag_p99_s": 0.001,
            "late_p99_s": None, "saturated": saturated, "reasons": list(reasons)}


def profile(levels: Sequence[dict[str, Any]], *, e2e_p95_s: float | None = 0.5,
            stream: bool = True) -> dict[str, Any]:
    """A whole profile document around ``levels``."""
    return {"tool": "switchgear bench", "format": 1,
            "target": {"url": "http://127.0.0.1:8080/v1", "model": "sim", "endpoint": "chat"},
            "workload": {"kind": "synthetic", "stream": stream, "file": None,
                         "input_tokens": {"mean": 128, "dist": "fixed"},
                         "output_tokens": {"mean": 32, "dist": "fixed"}},
            "slo": {"e2e_p95_s": e2e_p95_s, "error_rate": 0.01}, "levels": list(levels),
            "sweep": None, "a_key_from_a_later_format": {"ignored": True}}


def mmc_profile(servers: int, service_rate: float) -> dict[str, Any]:
    """The closed-loop levels 1, 2, 4, ... up to ``servers`` of an M/M/c server: throughput
    n·μ and exponential service latency (no queueing while n <= c)."""
    levels, n = [], 1
    while True:
        n = min(n, servers)
        levels.append(closed_level(n, n * service_rate, exponential_samples(1 / service_rate)))
        if n == servers:
            return profile(levels)
        n *= 2


def erlang_c(servers: int, service_rate: float, rate: float) -> float:
    """P(an arrival waits) in M/M/c (Erlang's C formula)."""
    offered = rate / service_rate
    rho = offered / servers
    top = offered ** servers / math.factorial(servers) / (1 - rho)
    return top / (sum(offered ** k / math.factorial(k) for k in range(servers)) + top)


def mmc_sojourn_survival(servers: int, service_rate: float, rate: float, t: float) -> float:
    """P(time in an M/M/c FIFO system > t): no wait, or an Exp(cμ-λ) wait, then Exp(μ) service."""
    waits = erlang_c(servers, service_rate, rate)
    delta = servers * service_rate - rate
    both = ((delta * math.exp(-service_rate * t) - service_rate * math.exp(-delta * t))
            / (delta - service_rate))
    return (1 - waits) * math.exp(-service_rate * t) + waits * both


def mmc_percentile(servers: int, service_rate: float, rate: float, q: float) -> float:
    """The q-quantile of M/M/c time in system, by bisection on the survival function."""
    low, high = 0.0, 1000 / service_rate
    for _ in range(100):
        middle = (low + high) / 2
        low, high = ((middle, high) if mmc_sojourn_survival(servers, service_rate, rate, middle) > 1 - q
                     else (low, middle))
    return high
