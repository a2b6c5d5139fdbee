"""Calibrate the queue model on a profile, and check it on the profile's open-loop levels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from switchgear.capacity.plan.model import QueueModel, nearest_rank_quantile
from switchgear.capacity.plan.profile import Level, Profile, why_not_served

#: The share of failed requests that fails an open-loop level where the profile names no cap
#: (bench's default --max-error-rate).
DEFAULT_ERROR_CAP = 0.01
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


#: Why a level was left out (``LeftOut.kind``): bench marked itself saturated; the server did
#: not keep up; too few samples for a p95; at or beyond the unscaled model's saturation.
CLIENT, UNSERVED, FEW_SAMPLES, BEYOND_SATURATION = "client", "unserved", "few samples", "beyond"


@dataclass(frozen=True)
class LeftOut:
    """A level of the profile the model was not built or calibrated from, what kind of reason
    kept it out, and the reason in words."""

    level: Level
    kind: str
    reason: str


@dataclass(frozen=True)
class Calibration:
    """The model, the open-loop checks it was corrected by, the levels left out, and notes
    about the profile."""

    model: QueueModel
    checks: tuple[OpenLoopCheck, ...]
    notes: tuple[str, ...]
    left_out: tuple[LeftOut, ...] = ()
    #: The open-loop levels the time scale was fitted on, by rising rate.
    calibrated_on: tuple[Level, ...] = ()


def fewest_samples(q: float) -> int:
    """The fewest samples whose nearest-rank q-quantile is not simply their largest (20 for a
    p95, 100 for a p99): below that the tail the quantile names was not observed."""
    return math.ceil(1 / (1 - Fraction(str(q))))


def p95_of(level: Level) -> float:
    """The level's measured p95 (nearest-rank)."""
    return nearest_rank_quantile(level.latencies, 0.95)


def _checks(model: QueueModel, levels: Sequence[Level]) -> tuple[OpenLoopCheck, ...]:
    return tuple(OpenLoopCheck(level.offered_rate, p95_of(level),
                               model.percentile(level.offered_rate, 0.95)) for level in levels)


def _closed_loop(profile: Profile) -> tuple[list[Level], list[LeftOut]]:
    """The closed-loop levels the model is built from: those the client kept up with (a level
    bench itself limited measures bench), and the lowest whatever bench said of itself there:
    the model's work per request comes from it, and a busy client only lengthens latencies, so
    the plan errs towards more capacity (``evidence`` warns)."""
    kept, left_out = [], []
    for level in profile.closed_loop:
        if client_saturated(level) and level is not profile.closed_loop[0]:
            left_out.append(LeftOut(level, CLIENT, client_reason(level)))
        else:
            kept.append(level)
    return kept, left_out


def client_saturated(level: Level) -> bool:
    """Whether bench marked itself saturated while ``level`` ran (False where not checked)."""
    return level.client is not None and level.client.saturated


def client_reason(level: Level) -> str:
    """Bench's saturation, in words, with its reasons."""
    reasons = "; ".join(level.client.reasons) if level.client else ""
    return f"bench marked itself saturated{f' ({reasons})' if reasons else ''}"


def _open_loop(model: QueueModel, profile: Profile) -> tuple[list[Level], list[LeftOut]]:
    """The open-loop levels to calibrate on, and those left out: the client saturated, too few
    samples for a p95, the server not keeping up (their p95 measures a backlog's growth, not
    the rate), or at or beyond the unscaled model's saturation (it has no p95 there to fit)."""
    cap = profile.slo.get("error_rate")
    error_cap = DEFAULT_ERROR_CAP if cap is None else float(cap)
    kept, left_out = [], []
    for level in profile.open_loop:
        unserved = why_not_served(level, error_cap)
        if client_saturated(level):
            left_out.append(LeftOut(level, CLIENT, client_reason(level)))
        elif unserved:
            left_out.append(LeftOut(level, UNSERVED, f"not served: {unserved}"))
        elif len(level.latencies) < fewest_samples(0.95) or p95_of(level) <= 0:
            left_out.append(LeftOut(level, FEW_SAMPLES,
                                    f"{len(level.latencies)} samples: too few for a p95 "
                                    f"(nearest-rank needs {fewest_samples(0.95)})"))
        elif not model.stable(level.offered_rate):
            left_out.append(LeftOut(level, BEYOND_SATURATION,
                                    f"at or beyond the closed-loop saturation ({model.saturation:.2f} "
                                    "req/s): the unscaled model has no p95 there to fit"))
        else:
            kept.append(level)
    return kept, left_out


def calibrate(profile: Profile, slots: int | None = None) -> Calibration:
    """The model of the profile's closed-loop levels (``slots``: the server's concurrency limit,
    where known; see ``QueueModel``). Where the profile also has open-loop levels the server
    kept up with below saturation, the model's time scale is fitted at each of their rates
    (the checks report the uncorrected model): closed-loop clients that start together keep
    arriving together, and an engine that batches their prompts serves them faster than it
    serves requests arriving at random. Levels bench marked as limited by the client itself
    are left out of both (``left_out`` says which and why)."""
    closed, left_out = _closed_loop(profile)
    model = QueueModel(closed, slots=slots)
    used, unused = _open_loop(model, profile)
    left_out += unused
    checks = _checks(model, used)
    notes = []
    if any(level.client is None for level in profile.levels):
        notes.append("the profile does not say whether bench itself kept up (it predates that "
                     "check): its levels are taken as the server's")
    if checks:
        rates = sorted({check.rate for check in checks})
        model = model.with_time_scales([(rate, fit_time_scale(model, [c for c in checks if c.rate == rate]))
                                        for rate in rates])
        scales = ", ".join(f"{scale:.3f} at {rate:.2f}" for rate, scale in model.time_scales)
        notes.append(f"service times scaled by {scales} req/s to match {len(checks)} open-loop "
                     f"level(s): saturation {model.saturation:.2f} req/s")
    notes += [f"left out: {item.level.name} ({item.reason})" for item in left_out]
    return Calibration(model, checks, tuple(notes), tuple(left_out), tuple(used))


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
