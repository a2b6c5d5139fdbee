"""The capacity model: a load-dependent birth-death queue calibrated on closed-loop levels.

From closed-loop levels at concurrency n (1, 2, 4, ...) it takes the measured throughput X(n)
and the latency samples L_n. For open arrivals at rate λ the number of requests in the system
is a birth-death chain with birth rate λ and death rate μ(k) = X(k) (linear between measured n,
made non-decreasing, flat at X(n_max) beyond). By PASTA an arrival finding k others is served
like a request of the closed-loop level k+1 (quantile functions interpolated between measured
levels); finding k >= n_max others it first waits for k+1-n_max departures at rate X(n_max).
Given that it waits, that number is geometric, so the wait is exponential and its latency is
that wait plus a draw from L_{n_max}. The latency CDF is the exact mixture over states, on a grid
of quantiles of each level; percentiles come from it by bisection.

Where the throughput has saturated, the chain's ratio p(k+1)/p(k) = λ/X is raised to 1/β with
β = (1 + CV²)/2 of the service time (the latency at the lowest concurrency): queues of requests
that take about the same time are shorter than with exponential ones (Allen-Cunneen; exact as
the load -> 1 for the mean). With X(n) = min(n, c)·μ and exponential L up to n = c, β = 1 and this is
exactly M/M/c.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from switchgear.capacity.plan.profile import Level, ProfileError

Array = npt.NDArray[np.float64]

QUANTILE_POINTS = 2000
BISECTION_STEPS = 60
SATURATED = 0.03


def queue_factor(service_times: Array) -> float:
    """(1 + CV^2) / 2 of the service times: how much queueing there is against exponential
    service (the Allen-Cunneen factor; 1 for exponential, 1/2 for constant service)."""
    mean = float(service_times.mean())
    return (1 + float(service_times.var()) / mean**2) / 2 if mean > 0 else 1.0


class QueueModel:
    """Latency and errors of one instance under Poisson arrivals, from its closed-loop levels."""

    def __init__(self, levels: Sequence[Level], latency_scale: float = 1.0) -> None:
        usable = sorted((lv for lv in levels if lv.concurrency and lv.latencies),
                        key=lambda lv: lv.concurrency or 0)
        if not usable:
            raise ProfileError("the profile has no closed-loop level with latency samples")
        self.levels = tuple(usable)
        self.latency_scale = latency_scale
        self.concurrency = np.array([float(lv.concurrency or 0) for lv in usable])
        self.throughput = np.maximum.accumulate(np.array([lv.request_rate for lv in usable]))
        self.error_share = np.array([lv.error_share for lv in usable])
        self.n_max = int(self.concurrency[-1])
        self.saturation = float(self.throughput[-1])
        grid = (np.arange(QUANTILE_POINTS) + 0.5) / QUANTILE_POINTS
        measured = np.array([np.quantile(np.array(lv.latencies), grid) for lv in usable])
        self._quantiles = np.array([self._interpolate(measured, m) for m in range(1, self.n_max + 1)])
        self._service_rates = np.interp(np.arange(1, self.n_max + 1),
                                        np.concatenate(([0.0], self.concurrency)),
                                        np.concatenate(([0.0], self.throughput)))
        self.queue_factor = queue_factor(np.array(usable[0].latencies))
        self._saturated = self._service_rates >= (1 - SATURATED) * self.saturation

    def _interpolate(self, measured: Array, m: int) -> Array:
        """The quantile function of level m: between the measured levels around it, weighted."""
        above = int(np.searchsorted(self.concurrency, m))
        if above == 0:
            return np.asarray(measured[0], dtype=np.float64)
        low, high = self.concurrency[above - 1], self.concurrency[above]
        weight = (m - low) / (high - low)
        return np.asarray((1 - weight) * measured[above - 1] + weight * measured[above], dtype=np.float64)

    def with_latency_scale(self, scale: float) -> QueueModel:
        """The same model with every latency multiplied by ``scale`` (an open-loop correction)."""
        return QueueModel(self.levels, scale)

    def stable(self, rate: float) -> bool:
        """Whether the queue stays finite at ``rate`` arrivals/s."""
        return 0 <= rate < self.saturation

    def _state_weights(self, rate: float) -> tuple[Array, float]:
        """P(an arrival finds m-1 others) for m = 1..n_max, and P(it finds n_max or more)."""
        if rate <= 0:
            weights = np.zeros(self.n_max)
            weights[0] = 1.0
            return weights, 0.0
        # log p_k = sum_{j<=k} log(rate / mu(j)), k = 0..n_max-1; beyond, geometric with rho.
        steps = np.log(rate / self._service_rates[:-1])
        steps = np.where(self._saturated[:-1], steps / self.queue_factor, steps)
        logs = np.concatenate(([0.0], np.cumsum(steps)))
        ratio = self._tail_ratio(rate)
        log_tail = logs[-1] + math.log(ratio / (1 - ratio))
        top = max(float(logs.max()), log_tail)
        weights = np.exp(logs - top)
        tail = math.exp(log_tail - top)
        total = float(weights.sum()) + tail
        return weights / total, tail / total

    def _tail_ratio(self, rate: float) -> float:
        """p(k+1) / p(k) in the saturated states."""
        return float((rate / self.saturation) ** (1 / self.queue_factor))

    def cdf(self, rate: float, latency: float) -> float:
        """P(latency <= ``latency`` seconds) for a request arriving at ``rate`` arrivals/s."""
        if not self.stable(rate):
            return 0.0
        t = latency / self.latency_scale
        weights, tail = self._state_weights(rate)
        served = (self._quantiles <= t).mean(axis=1)
        last = self._quantiles[-1]
        wait_rate = self.saturation * (1 - self._tail_ratio(rate))
        queued = float(np.where(last <= t, -np.expm1(-wait_rate * (t - last)), 0.0).mean())
        return float(weights @ served) + tail * queued

    def percentile(self, rate: float, q: float) -> float:
        """The q-quantile (0 < q < 1) of latency in seconds at ``rate``; inf where unstable."""
        if not self.stable(rate):
            return math.inf
        low, high = 0.0, float(self._quantiles.max()) * self.latency_scale
        while self.cdf(rate, high) < q:
            low, high = high, high * 2 + 1e-3
        for _ in range(BISECTION_STEPS):
            middle = (low + high) / 2
            low, high = (middle, high) if self.cdf(rate, middle) < q else (low, middle)
        return high

    def mean(self, rate: float) -> float:
        """Mean latency in seconds at ``rate``; inf where unstable."""
        if not self.stable(rate):
            return math.inf
        weights, tail = self._state_weights(rate)
        means = self._quantiles.mean(axis=1)
        wait = 1 / (self.saturation * (1 - self._tail_ratio(rate)))
        return (float(weights @ means) + tail * (wait + float(means[-1]))) * self.latency_scale

    def error_rate(self, rate: float) -> float:
        """Share of requests failing at ``rate``: each state's level's measured error share."""
        if not self.stable(rate):
            return 1.0
        weights, tail = self._state_weights(rate)
        shares = np.interp(np.arange(1, self.n_max + 1), self.concurrency, self.error_share)
        return float(weights @ shares) + tail * float(shares[-1])

    def throughput_at(self, concurrency: float) -> float:
        """Measured throughput with ``concurrency`` requests in the instance (interpolated)."""
        return float(np.interp(concurrency, np.concatenate(([0.0], self.concurrency)),
                               np.concatenate(([0.0], self.throughput))))

    def meets(self, rate: float, percentiles: Mapping[float, float], error_cap: float | None) -> bool:
        """Whether at ``rate`` every percentile target {q: seconds} and the error cap hold."""
        if not self.stable(rate):
            return False
        if error_cap is not None and self.error_rate(rate) > error_cap:
            return False
        return all(self.percentile(rate, q) <= target for q, target in percentiles.items())

    def max_rate(self, percentiles: Mapping[float, float], error_cap: float | None = None) -> float:
        """The highest arrival rate at which :meth:`meets` holds (0 where none does)."""
        low, high = 0.0, self.saturation
        if not self.meets(1e-9 * self.saturation, percentiles, error_cap):
            return 0.0
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if self.meets(middle, percentiles, error_cap) else (low, middle)
        return low
