"""Calibrate the queue model on a profile, and check it on the profile's open-loop levels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from switchgear.capacity.plan.model import QueueModel
from switchgear.capacity.plan.profile import Profile

SATURATION_GAIN = 1.15
MIN_TIME_SCALE, MAX_TIME_SCALE = 0.25, 4.0
TIME_SCALE_PRECISION = 1e-3  # of the logarithm


@dataclass(frozen=True)
class OpenLoopCheck:
    """The model's p95 at one open-loop level's rate against the p95 measured there."""

    rate: float
    measured_p95_s: float
    model_p95_s: float

    @property
    def error(self) -> float:
        """Relative error of the model: (model - measured) / measured."""
        return (self.model_p95_s - self.measured_p95_s) / self.measured_p95_s


@dataclass(frozen=True)
class Calibration:
    """The model, the open-loop checks it was corrected by, and warnings about the profile."""

    model: QueueModel
    checks: tuple[OpenLoopCheck, ...]
    notes: tuple[str, ...]


def _checks(model: QueueModel, profile: Profile) -> tuple[OpenLoopCheck, ...]:
    checks = []
    for level in profile.open_loop:
        rate = level.rate or level.request_rate
        if level.latencies and model.stable(rate):
            measured = float(np.quantile(np.array(level.latencies), 0.95))
            if measured > 0:
                checks.append(OpenLoopCheck(rate, measured, model.percentile(rate, 0.95)))
    return tuple(checks)


def _notes(model: QueueModel, unusable: int) -> list[str]:
    notes = []
    if len(model.concurrency) == 1:
        notes.append(f"the profile has one closed-loop level (concurrency {model.n_max}): how "
                     "throughput grows with concurrency is not measured, so the model holds it "
                     f"at {model.throughput[0]:.2f} req/s; bench closed-loop levels up to past "
                     "saturation (-c 1 -c 2 -c 4 ..., or --sweep)")
    if len(model.concurrency) > 1 and model.throughput[-1] > SATURATION_GAIN * model.throughput[-2]:
        notes.append(f"throughput still rose {model.throughput[-1] / model.throughput[-2]:.2f}x "
                     f"between the two highest concurrencies ({model.concurrency[-2]:.0f} and "
                     f"{model.n_max}): the profile may not reach saturation, so capacity is "
                     "underestimated; bench higher concurrencies")
    if unusable:
        notes.append(f"{unusable} open-loop level(s) without samples or at or beyond the modelled saturation "
                     f"({model.saturation:.2f} req/s) were not used for the check")
    return notes


def calibrate(profile: Profile, slots: int | None = None) -> Calibration:
    """The model of the profile's closed-loop levels (``slots``: the server's concurrency limit,
    where known; see ``QueueModel``). Where the profile also has open-loop levels below
    saturation, the model's time scale is fitted at each of their rates (the checks report the
    uncorrected model): closed-loop clients that start together keep arriving together, and an
    engine that batches their prompts serves them faster than it serves requests arriving at
    random."""
    model = QueueModel(profile.closed_loop, slots=slots)
    checks = _checks(model, profile)
    unusable = len(profile.open_loop) - len(checks)
    notes = _notes(model, unusable)
    if checks:
        rates = sorted({check.rate for check in checks})
        model = model.with_time_scales([(rate, fit_time_scale(model, [c for c in checks if c.rate == rate]))
                                        for rate in rates])
        scales = ", ".join(f"{scale:.3f} at {rate:.2f}" for rate, scale in model.time_scales)
        notes.append(f"service times scaled by {scales} req/s to match {len(checks)} open-loop "
                     f"level(s): saturation {model.saturation:.2f} req/s")
    return Calibration(model, checks, tuple(notes))


def fit_time_scale(model: QueueModel, checks: Sequence[OpenLoopCheck]) -> float:
    """The time scale s at which the unscaled model's p95 (s times its p95 at rate x s) best
    matches the checks', all at one rate (least squares on the logarithms; golden-section
    search on log s, as the error falls then rises in s)."""
    def error(log_scale: float) -> float:
        scale = math.exp(log_scale)
        return sum(math.log(scale * model.percentile(check.rate * scale, 0.95) / check.measured_p95_s)
                   ** 2 for check in checks)

    low = math.log(MIN_TIME_SCALE)
    high = math.log(min(MAX_TIME_SCALE, (1 - 1e-3) * model.saturation / checks[0].rate))
    if high <= low:
        return math.exp(high)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    error_a, error_b = error(a), error(b)
    while high - low > TIME_SCALE_PRECISION:
        if error_a <= error_b:
            high, b, error_b = b, a, error_a
            a = high - ratio * (high - low)
            error_a = error(a)
        else:
            low, a, error_a = a, b, error_b
            b = low + ratio * (high - low)
            error_b = error(b)
    return math.exp((low + high) / 2)
