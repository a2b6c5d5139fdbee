"""The capacity model: a processor-sharing queue calibrated on closed-loop levels, simulated.

From closed-loop levels at concurrency n (1, 2, 4, ...) it takes the mean latency m_n, the
throughput X(n) = n / m_n (Little's law: a level's own request count over its seconds runs high
when latencies are long against the level, by the requests it finishes from its warm-up) and the
latency samples of the lowest level. An instance has ``slots`` (the server's
concurrency limit where the operator knows it, else the lowest measured n whose throughput is
within 3% of the highest). With k requests in service, k <= slots, each advances at speed
m_1 / m(k), where k / m(k) is linear in k between the measured levels: a closed-loop level n is
served in its measured mean latency, and a request is slowed by those that arrive while it runs,
as on a continuous-batching engine, not only by those it finds. Requests beyond the slots wait
for one in arrival order. Each request's work is drawn from the lowest level's latencies.

A ``time_scale`` s stretches every service time by s (the instance is s times slower than its
closed-loop levels say): at rate λ a latency is s times the unscaled model's at λ s. Calibration
fits s on open-loop levels, where an engine batches worse than under closed-loop clients that
arrive together.

Under Poisson arrivals at a rate the queue is simulated (``simulation.simulate``; fixed seed and
the same draws for every rate, so answers are repeatable and move smoothly with the rate), and
latency percentiles, the mean and the error share are read from the simulated requests. With
n / m_n = min(n, c) μ and exponential work this is M/M/c; with one slot and constant work, M/D/1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from switchgear.capacity.plan.profile import Level, ProfileError
from switchgear.capacity.plan.simulation import Simulated, simulate

Array = npt.NDArray[np.float64]

SATURATED = 0.03
SIMULATED_REQUESTS = 60_000
WARMUP_SHARE = 0.05
RATE_PRECISION = 1e-4


class QueueModel:
    """Latency and errors of one instance under Poisson arrivals, from its closed-loop levels."""

    def __init__(self, levels: Sequence[Level], time_scale: float = 1.0,
                 slots: int | None = None, requests: int = SIMULATED_REQUESTS, seed: int = 0) -> None:
        usable = sorted((lv for lv in levels if lv.concurrency and lv.latencies),
                        key=lambda lv: lv.concurrency or 0)
        if not usable:
            raise ProfileError("the profile has no closed-loop level with latency samples")
        self.levels = tuple(usable)
        self.time_scale = time_scale
        self.concurrency = np.array([float(lv.concurrency or 0) for lv in usable])
        means = np.array([np.mean(lv.latencies) for lv in usable])
        self.throughput = np.maximum.accumulate(self.concurrency / means)
        self.error_share = np.array([lv.error_share for lv in usable])
        self.n_max = int(self.concurrency[-1])
        self.slots = slots or self._knee()
        self._requests, self._seed = requests, seed
        self.work = np.array(usable[0].latencies, dtype=np.float64)
        self._speeds = self._speeds_by_concurrency(float(means[0]))
        self.saturation = self.throughput_at(self.slots)  # time_scale applied
        rng = np.random.default_rng(seed)
        self._gaps = rng.exponential(1.0, requests).cumsum().tolist()
        self._draws = rng.choice(self.work, requests).tolist()
        self._runs: dict[float, tuple[Array, Array]] = {}

    def _knee(self) -> int:
        """The lowest measured concurrency whose throughput is within 3% of the highest."""
        reached = self.throughput >= (1 - SATURATED) * self.throughput[-1]
        return int(self.concurrency[int(np.argmax(reached))])

    def _speeds_by_concurrency(self, lowest_mean: float) -> list[float]:
        """Speed of each request in service with k = 0..slots in service: m_1 / m(k) =
        m_1 X(k) / k (``speeds[0]`` is never used)."""
        return [1.0, *(lowest_mean * self._throughput(k) / k for k in range(1, self.slots + 1))]

    def with_time_scale(self, scale: float) -> QueueModel:
        """The same model with every service time multiplied by ``scale`` (an open-loop
        correction: capacity divided by it, latencies at a given load multiplied by it)."""
        return QueueModel(self.levels, scale, self.slots, self._requests, self._seed)

    def stable(self, rate: float) -> bool:
        """Whether the queue stays finite at ``rate`` arrivals/s."""
        return 0 <= rate < self.saturation

    def _run(self, rate: float) -> tuple[Array, Array]:
        """Sorted simulated latencies, in unscaled time, at ``rate`` (time scale applied: the
        unscaled queue at ``rate`` x scale), and each request's error share."""
        rate *= self.time_scale
        if rate not in self._runs:
            if rate <= 0:
                latencies, found = np.sort(self.work), np.zeros(len(self.work), dtype=np.int64)
            else:
                run: Simulated = simulate([gap / rate for gap in self._gaps], self._draws,
                                          self._speeds, self.slots)
                skip = int(self._requests * WARMUP_SHARE)
                latencies, found = np.sort(run.sojourn[skip:]), run.found[skip:]
            shares = np.interp(np.minimum(found + 1, self.n_max), self.concurrency, self.error_share)
            self._runs[rate] = (latencies, shares)
        return self._runs[rate]

    def cdf(self, rate: float, latency: float) -> float:
        """P(latency <= ``latency`` seconds) for a request arriving at ``rate`` arrivals/s."""
        if not self.stable(rate):
            return 0.0
        latencies = self._run(rate)[0]
        return float(np.searchsorted(latencies, latency / self.time_scale, "right") / len(latencies))

    def percentile(self, rate: float, q: float) -> float:
        """The q-quantile (0 < q < 1) of latency in seconds at ``rate``; inf where unstable."""
        if not self.stable(rate):
            return math.inf
        return float(np.quantile(self._run(rate)[0], q)) * self.time_scale

    def mean(self, rate: float) -> float:
        """Mean latency in seconds at ``rate``; inf where unstable."""
        if not self.stable(rate):
            return math.inf
        return float(self._run(rate)[0].mean()) * self.time_scale

    def error_rate(self, rate: float) -> float:
        """Share of requests failing at ``rate``: the error share measured at the concurrency
        each simulated request found (itself included)."""
        if not self.stable(rate):
            return 1.0
        return float(self._run(rate)[1].mean())

    def throughput_at(self, concurrency: float) -> float:
        """Throughput with ``concurrency`` requests in the instance (linear between levels, flat
        beyond the highest)."""
        return self._throughput(concurrency) / self.time_scale

    def _throughput(self, concurrency: float) -> float:
        """Throughput at ``concurrency`` as the closed-loop levels measured it (unscaled)."""
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
        if not self.meets(0.0, percentiles, error_cap):
            return 0.0
        while high - low > RATE_PRECISION * self.saturation:
            middle = (low + high) / 2
            low, high = (middle, high) if self.meets(middle, percentiles, error_cap) else (low, middle)
        return low
