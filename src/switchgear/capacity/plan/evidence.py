"""Whether the profile supports the plan's answer: the model's figures checked against what the
profile measured, each gap a finding that warns or refuses.

The answer is a rate: what each instance is planned to serve and, where there is an SLO, the
highest rate the model says meets it (what the instance count rests on); the answer's rate is
the higher of the two.

Refused (``PlanError`` unless forced), where the profile measured something the model denies
at or below the answer's rate, so the answer stands on a model the evidence contradicts:

- an open-loop level the server did not keep up with (stopped, failing, a backlog that kept
  growing) at a rate below the modelled saturation: the model overstates what an instance
  serves (issue 23: 57.6-63.1 req/s modelled against 46.8 measured);
- the calibrated model's p95 at a served open-loop level's rate more than ``P95_TOLERANCE``
  from the p95 measured there;
- a latency target on a percentile the profile's samples cannot resolve (a p99 SLO from fewer
  than 100 requests served alone): the model's tail is drawn from those samples, so the
  instance count would rest on a tail never observed.

The same contradictions above the answer's rate warn: the answer may hold, the saturation and
utilization the plan prints do not. Warned, where the profile lacks the evidence rather than
contradicting it (the answer may be right, but nothing measured says so): no open-loop level
to calibrate on (closed-loop levels overstate what an engine serves under random arrivals),
closed-loop levels that never reach the knee (the saturation, and so the instance count, is a
lower bound on capacity: conservative), a rate per instance or a highest rate within the SLO
beyond the highest rate an open-loop level served, a modelled saturation more than 5% beyond
every rate the profile shows served (the time scale held beyond the last level put it there),
a predicted p99 the samples cannot resolve where no SLO asks for it, and levels bench marked
itself saturated on (left out, or at concurrency 1 kept: the model needs it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from switchgear.capacity.plan.calibration import (
    BEYOND_SATURATION,
    CLIENT,
    UNSERVED,
    Calibration,
    client_reason,
    client_saturated,
    fewest_samples,
    p95_of,
)
from switchgear.capacity.plan.profile import Level

#: How far the calibrated model's p95 may be from a served open-loop level's before the model
#: is taken to contradict it: a level's p95 under queueing is noisy (benchmarks/capacity
#: measured 0.88, 1.19 and 1.37 s for the same arrivals within an hour; in its stored engine
#: profile, two levels at one rate sit 11% either side of the model fitted to both).
P95_TOLERANCE = 0.25
#: How far beyond the highest rate the profile shows served the modelled saturation may lie
#: before it is flagged as extrapolated (the time scale held beyond the last level).
EXTRAPOLATED_SHARE = 0.05
#: A doubling of concurrency that still raised throughput by more than this: short of the knee.
SATURATION_GAIN = 1.15


@dataclass(frozen=True)
class Finding:
    """One gap between the plan's answer and the profile's evidence."""

    check: str
    message: str
    refuses: bool


@dataclass(frozen=True)
class Answer:
    """The rates the plan answers with, and the percentiles it predicts or targets."""

    rate_per_instance: float
    max_rate_within_slo: float | None
    targeted: Mapping[float, float]

    @property
    def rate(self) -> float:
        """The highest rate the answer stands on."""
        return max(self.rate_per_instance, self.max_rate_within_slo or 0.0)


def assess(calibration: Calibration, answer: Answer) -> list[Finding]:
    """Every finding on ``answer`` from ``calibration`` (its model and the profile's levels)."""
    return [*_unserved_below_saturation(calibration, answer), *_p95_misses(calibration, answer),
            *_uncalibrated(calibration), *_short_of_the_knee(calibration),
            *_beyond_measured(calibration, answer), *_saturation_extrapolated(calibration),
            *_unresolved_tail(calibration, answer), *_client_saturated(calibration)]


def _against(level: Level, answer: Answer) -> bool:
    """Whether a contradiction at ``level`` refuses: it lies at or below the answer's rate."""
    return level.offered_rate <= answer.rate * (1 + 1e-9)


def _where(level: Level, answer: Answer) -> str:
    relation = "at or below" if _against(level, answer) else "above"
    return f"{relation} the rate the plan stands on ({answer.rate:.2f} req/s per instance)"


def _unserved_below_saturation(calibration: Calibration, answer: Answer) -> list[Finding]:
    saturation = calibration.model.saturation
    return [Finding("unserved below the modelled saturation",
                    f"{item.level.name} was not served ({item.reason.removeprefix('not served: ')}), "
                    f"below the modelled saturation of {saturation:.2f} req/s per instance and "
                    f"{_where(item.level, answer)}: the model overstates what an instance serves",
                    _against(item.level, answer))
            for item in calibration.left_out
            if item.kind == UNSERVED and item.level.offered_rate < saturation]


def _p95_misses(calibration: Calibration, answer: Answer) -> list[Finding]:
    model, findings = calibration.model, []
    for level in _served(calibration):
        measured, predicted = p95_of(level), model.percentile(level.offered_rate, 0.95)
        if math.isinf(predicted):
            findings.append(Finding(
                "served beyond the modelled saturation",
                f"{level.name} was served (p95 {measured:.3f} s) at or beyond the modelled "
                f"saturation of {model.saturation:.2f} req/s per instance: the model understates "
                "what an instance serves, so the plan is conservative", False))
        elif abs(predicted / measured - 1) > P95_TOLERANCE:
            findings.append(Finding(
                "p95 off at a measured rate",
                f"at {level.offered_rate:.2f} req/s the model's p95 is {predicted:.3f} s, "
                f"{predicted / measured - 1:+.0%} from the {measured:.3f} s measured there "
                f"(tolerance {P95_TOLERANCE:.0%}), {_where(level, answer)}",
                _against(level, answer)))
    return findings


def _uncalibrated(calibration: Calibration) -> list[Finding]:
    if calibration.model.time_scales:
        return []
    return [Finding("uncalibrated",
                    "no open-loop level calibrates the model: its latency and saturation come "
                    "from closed-loop levels alone, which overstate what an engine serves under "
                    "random arrivals; bench Poisson levels below saturation (switchgear bench "
                    "--arrival poisson -r RATE, or --sweep)", False)]


def _short_of_the_knee(calibration: Calibration) -> list[Finding]:
    model = calibration.model
    lower_bound = (f"the saturation of {model.saturation:.2f} req/s per instance is a lower bound "
                   "on capacity, so the instance count may be more than needed")
    if len(model.concurrency) == 1:
        return [Finding("saturation not reached",
                        f"the profile has one closed-loop level (concurrency {model.n_max}): how "
                        "throughput grows with concurrency is not measured, so the model holds it "
                        f"at {model.throughput[0]:.2f} req/s and {lower_bound}; bench closed-loop "
                        "levels up to past saturation (-c 1 -c 2 -c 4 ..., or --sweep)", False)]
    gain = model.throughput[-1] / model.throughput[-2]
    if gain <= SATURATION_GAIN:
        return []
    return [Finding("saturation not reached",
                    f"throughput still rose {gain:.2f}x between the two highest concurrencies "
                    f"({model.concurrency[-2]:.0f} and {model.n_max}): the profile may not reach "
                    f"saturation, and {lower_bound}; bench higher concurrencies", False)]


def _served(calibration: Calibration) -> list[Level]:
    """The open-loop levels the server kept up with: those fitted on, and those beyond the
    unscaled model's saturation."""
    return [*calibration.calibrated_on,
            *(item.level for item in calibration.left_out if item.kind == BEYOND_SATURATION)]


def _served_rates(calibration: Calibration) -> list[float]:
    return [level.offered_rate for level in _served(calibration)]


def _beyond_measured(calibration: Calibration, answer: Answer) -> list[Finding]:
    served = _served_rates(calibration)
    if not served:
        return []
    highest = max(served)
    named = {"the rate per instance": answer.rate_per_instance,
             "the highest rate within the SLO": answer.max_rate_within_slo}
    return [Finding("beyond the measured rates",
                    f"{name}, {rate:.2f} req/s, is beyond the highest rate an open-loop level "
                    f"served ({highest:.2f} req/s): the model extrapolates there; bench a Poisson "
                    f"level near it (switchgear bench --arrival poisson -r {rate:.2f})", False)
            for name, rate in named.items() if rate is not None and rate > highest]


def _saturation_extrapolated(calibration: Calibration) -> list[Finding]:
    model = calibration.model
    served = [*_served_rates(calibration), float(model.throughput[-1])]
    highest = max(served)
    if not model.time_scales or model.saturation <= (1 + EXTRAPOLATED_SHARE) * highest:
        return []
    rate, scale = model.time_scales[-1]
    return [Finding("saturation extrapolated",
                    f"the modelled saturation, {model.saturation:.2f} req/s per instance, is "
                    f"{model.saturation / highest - 1:.0%} beyond the highest rate the profile "
                    f"shows served ({highest:.2f} req/s): it rests on the time scale {scale:.3f} "
                    f"measured at {rate:.2f} req/s and held beyond, so the utilization and the "
                    "instance count by it may be too low; bench Poisson levels up to where the "
                    "server falls behind (switchgear bench --sweep)", False)]


def _unresolved_tail(calibration: Calibration, answer: Answer) -> list[Finding]:
    alone = calibration.model.levels[0]
    count, findings = len(alone.latencies), []
    for q in sorted({0.99, *answer.targeted}):
        if count >= fewest_samples(q):
            continue
        targeted = q in answer.targeted
        findings.append(Finding(
            "too few samples",
            f"the p{q * 100:g} {'target' if targeted else 'predicted'} rests on {count} requests "
            f"at {alone.name}, and a nearest-rank p{q * 100:g} needs {fewest_samples(q)}: the "
            "tail it names was not observed; bench that level longer (--duration)", targeted))
    return findings


def _client_saturated(calibration: Calibration) -> list[Finding]:
    alone = calibration.model.levels[0]
    kept = ([Finding("client saturated",
                     f"{alone.name} was kept though {client_reason(alone)}: the model's work per "
                     "request comes from it, and its latencies include bench's delays, so the "
                     "plan overstates latency (conservative); bench it again on a less busy "
                     "machine", False)]
            if client_saturated(alone) else [])
    return [*kept, *(Finding("client saturated",
                             f"{item.level.name} was left out of the model: {item.reason}; its "
                             "figures measure bench, not the server", False)
                     for item in calibration.left_out if item.kind == CLIENT)]
