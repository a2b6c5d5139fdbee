"""Calibrate the queue model on a profile, and check it on the profile's open-loop levels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from switchgear.capacity.plan.model import QueueModel
from switchgear.capacity.plan.profile import Profile

SATURATION_GAIN = 1.15


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
    where known; see ``QueueModel``). Where the profile also has open-loop
    levels below saturation, every latency is scaled by the geometric mean of measured / model
    p95 over them (the checks report the uncorrected model)."""
    model = QueueModel(profile.closed_loop, slots=slots)
    checks = _checks(model, profile)
    unusable = len(profile.open_loop) - len(checks)
    notes = _notes(model, unusable)
    if checks:
        scale = math.exp(sum(math.log(c.measured_p95_s / c.model_p95_s) for c in checks) / len(checks))
        model = model.with_latency_scale(scale)
        notes.append(f"latencies scaled by {scale:.3f} to match {len(checks)} open-loop level(s)")
    return Calibration(model, checks, tuple(notes))
