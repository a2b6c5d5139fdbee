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

Open-loop levels correct it by a time scale s(λ): at rate λ every service time is stretched by
s(λ), so the latency is s(λ) times the unscaled model's at λ s(λ). Calibration fits s at each
open-loop level's rate (an engine batches requests arriving at random worse than closed-loop
clients that arrive together, and by how much depends on the load); s is 1 at no load (a lone
request is served alike either way), linear in λ between the levels and held beyond the highest
(a level near the rates planned for serves best). The modelled saturation is the lowest rate at
which λ s(λ) reaches the closed-loop throughput with every slot busy; ``saturation_at(k)`` is the
same with at most k in service, so that every resource ceiling (compute at the slots, memory at
the sequences it holds) is on this one calibrated scale.

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
SATURATION_GRID = 1000


def nearest_rank_quantile(values: Sequence[float] | Array, q: float) -> float:
    """The q-quantile (0 < q < 1) of ``values`` by nearest rank, the one percentile definition
    of Switchgear (``switchgear.percentiles``; numpy's ``inverted_cdf``)."""
    return float(np.quantile(np.asarray(values, dtype=np.float64), q, method="inverted_cdf"))


class QueueModel:
    """Latency and errors of one instance under Poisson arrivals, from its closed-loop levels."""

    def __init__(self, levels: Sequence[Level], time_scales: Sequence[tuple[float, float]] = (),
                 slots: int | None = None, requests: int = SIMULATED_REQUESTS, seed: int = 0) -> None:
        usable = sorted((lv for lv in levels if lv.concurrency and lv.latencies),
                        key=lambda lv: lv.concurrency or 0)
        if not usable:
            raise ProfileError("the profile has no closed-loop level with latency samples")
        self.levels = tuple(usable)
        self.concurrency = np.array([float(lv.concurrency or 0) for lv in usable])
        means = np.array([np.mean(lv.latencies) for lv in usable])
        self.throughput = np.maximum.accumulate(self.concurrency / means)
        self.error_share = np.array([lv.error_share for lv in usable])
        self.n_max = int(self.concurrency[-1])
        self.slots = slots or self._knee()
        self._requests, self._seed = requests, seed
        self.work = np.array(usable[0].latencies, dtype=np.float64)
        self._speeds = self._speeds_by_concurrency(float(means[0]))
        full = self.throughput_at(self.slots)
        self.time_scales = tuple(sorted((rate, scale) for rate, scale in time_scales if 0 < rate < full))
        self._scale_rates = [0.0, *(rate for rate, _ in self.time_scales)]
        self._scale_values = [1.0, *(scale for _, scale in self.time_scales)]
        self.saturation = self.saturation_at(self.slots)
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
        return [1.0, *(lowest_mean * self.throughput_at(k) / k for k in range(1, self.slots + 1))]

    def with_time_scales(self, time_scales: Sequence[tuple[float, float]]) -> QueueModel:
        """The same model with the time scale fitted at each (rate, scale) of ``time_scales``."""
        return QueueModel(self.levels, time_scales, self.slots, self._requests, self._seed)

    def time_scale(self, rate: float) -> float:
        """s(``rate``): service times at that arrival rate over the closed-loop levels'."""
        return float(np.interp(rate, self._scale_rates, self._scale_values))

    def saturation_at(self, in_service: float) -> float:
        """The calibrated saturation (arrivals/s) when at most ``in_service`` requests can be in
        service (the slots, or fewer where memory holds fewer sequences): the lowest rate at
        which rate x s(rate) reaches the closed-loop throughput with that many in service. Every
        ceiling on the rate an instance serves is on this one scale."""
        return self._saturation(self.throughput_at(min(math.floor(in_service), self.slots)))

    def _saturation(self, full: float) -> float:
        """The lowest rate at which rate x s(rate) reaches ``full`` (a closed-loop throughput):
        on a grid up to where it surely does, then by bisection inside the first step that
        does."""
        if full <= 0:
            return 0.0
        top = full / min(1.0, *self._scale_values)
        grid = np.linspace(0.0, top, SATURATION_GRID + 1)
        reached = grid * np.interp(grid, self._scale_rates, self._scale_values) >= full * (1 - 1e-12)
        high = float(grid[int(np.argmax(reached))])
        low = high - top / SATURATION_GRID
        while high - low > RATE_PRECISION * full:
            middle = (low + high) / 2
            low, high = (low, middle) if middle * self.time_scale(middle) >= full else (middle, high)
        return high

    def stable(self, rate: float) -> bool:
        """Whether the queue stays finite at ``rate`` arrivals/s."""
        return 0 <= rate < self.saturation

    def _run(self, rate: float) -> tuple[Array, Array]:
        """Sorted simulated latencies, in unscaled time, at ``rate`` (time scale applied: the
        unscaled queue at ``rate`` x s(rate)), and each request's error share."""
        rate *= self.time_scale(rate)
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
        return float(np.searchsorted(latencies, latency / self.time_scale(rate), "right") / len(latencies))

    def percentile(self, rate: float, q: float) -> float:
        """The q-quantile (0 < q < 1) of latency in seconds at ``rate``, nearest-rank
        (``switchgear.percentiles``) over the simulated requests; inf where unstable."""
        if not self.stable(rate):
            return math.inf
        return nearest_rank_quantile(self._run(rate)[0], q) * self.time_scale(rate)

    def mean(self, rate: float) -> float:
        """Mean latency in seconds at ``rate``; inf where unstable."""
        if not self.stable(rate):
            return math.inf
        return float(self._run(rate)[0].mean()) * self.time_scale(rate)

    def error_rate(self, rate: float) -> float:
        """Share of requests failing at ``rate``: the error share measured at the concurrency
        each simulated request found (itself included)."""
        if not self.stable(rate):
            return 1.0
        return float(self._run(rate)[1].mean())

    def throughput_at(self, concurrency: float) -> float:
        """Throughput with ``concurrency`` requests in the instance, as the closed-loop levels
        measured it (linear between levels, flat beyond the highest)."""
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
