"""The capacity plan: instances, predicted latency, utilization, cost, power, limits, pipeline."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from switchgear.capacity.plan.calibration import Calibration, calibrate
from switchgear.capacity.plan.evidence import Answer, Finding, assess
from switchgear.capacity.plan.limits import Resources, Workload, resource_limits
from switchgear.capacity.plan.model import QueueModel
from switchgear.capacity.plan.profile import Profile
from switchgear.percentiles import METHOD

HOURS_PER_MONTH = 730.0
#: How near an open-loop level must be to a rate the plan predicts at, as a share of the
#: closed-loop saturation. On the embedded engine (benchmarks/capacity) a p95 predicted 5% of it
#: from a calibration level was within 10%; 10% from the nearest, where the engine's slowdown
#: under random arrivals peaks, it was 11-14% low.
NEAR_LEVEL_SHARE = 0.05


@dataclass(frozen=True)
class Targets:
    """The load to plan for and the service level it must get."""

    peak_rate: float
    growth: float = 0.0
    slo_p95_s: float | None = None
    slo_p99_s: float | None = None
    error_cap: float | None = None
    target_utilization: float = 0.7

    @property
    def rate(self) -> float:
        """The planned rate: peak x (1 + growth)."""
        return self.peak_rate * (1 + self.growth)

    def percentiles(self) -> dict[float, float]:
        """The latency targets as {quantile: seconds}."""
        targets = {0.95: self.slo_p95_s, 0.99: self.slo_p99_s}
        return {q: s for q, s in targets.items() if s is not None}


@dataclass(frozen=True)
class Economics:
    """Prices, power and the input pipeline's feed; None where not given."""

    price_per_instance_hour: float | None = None
    price_per_million_tokens: float | None = None
    kw_per_instance: float | None = None
    pue: float = 1.0
    pipeline_feed: float | None = None


@dataclass(frozen=True)
class PlanInputs:
    """Everything a plan is made from besides the profile."""

    targets: Targets
    economics: Economics = field(default_factory=Economics)
    resources: Resources = field(default_factory=Resources)
    bytes_per_request: float | None = None
    slots: int | None = None
    #: Plan even where the profile contradicts the model (``evidence``): refusals become warnings.
    force: bool = False


class PlanError(ValueError):
    """No plan can meet the targets (an SLO below the idle latency, a zero rate), or the
    profile contradicts the plan's answer (``evidence``)."""


def with_profile_slo(targets: Targets, profile: Profile) -> Targets:
    """``targets``, with the SLO the profile was benched with where none is given."""
    if targets.percentiles() or targets.error_cap is not None:
        return targets
    p95 = profile.slo.get(f"{profile.latency}_p95_s")
    return replace(targets, slo_p95_s=p95, error_cap=profile.slo.get("error_rate"))


def instances_for(model: QueueModel, rate: float, targets: Targets, max_rate: float | None) -> int:
    """Instances needed for ``rate``: enough for the target utilization and, per instance,
    no more than the highest rate within the SLO."""
    by_utilization = rate / (targets.target_utilization * model.saturation)
    by_slo = rate / max_rate if max_rate is not None else 0.0
    return max(1, math.ceil(max(by_utilization, by_slo) - 1e-9))


def _max_rate(model: QueueModel, targets: Targets) -> float | None:
    percentiles = targets.percentiles()
    if not percentiles and targets.error_cap is None:
        return None
    best = model.max_rate(percentiles, targets.error_cap)
    if best <= 0:
        alone = ", ".join(f"p{q * 100:g} {model.percentile(0.0, q):.3f} s" for q in percentiles)
        raise PlanError("no arrival rate meets the SLO on one instance: the targets are below the "
                        f"latency of a request served alone (concurrency {model.concurrency[0]:g}"
                        f"{': ' + alone if alone else ''}), or its error share "
                        f"({model.error_share[0]:.1%}) is above the cap")
    return best


def _hourly_cost(economics: Economics, instances: int, rate: float, tokens: float) -> float | None:
    if economics.price_per_instance_hour is not None:
        return instances * economics.price_per_instance_hour
    if economics.price_per_million_tokens is not None:
        return rate * 3600 * tokens * economics.price_per_million_tokens / 1e6
    return None


def _cost(economics: Economics, instances: int, doubled: int, rate: float,
          tokens: float) -> dict[str, Any]:
    hourly = _hourly_cost(economics, instances, rate, tokens)
    hourly_doubled = _hourly_cost(economics, doubled, 2 * rate, tokens)
    if hourly is None or hourly_doubled is None:
        return {"basis": None, "per_hour": None, "per_month": None, "per_1k_requests": None,
                "per_million_tokens": None, "marginal_per_1k_on_doubling": None,
                "instances_on_doubling": doubled, "per_hour_on_doubling": None}
    requests_per_hour = rate * 3600
    basis = "instance-hour" if economics.price_per_instance_hour is not None else "token"
    return {"basis": basis, "per_hour": hourly, "per_month": hourly * HOURS_PER_MONTH,
            "per_1k_requests": hourly / requests_per_hour * 1000,
            "per_million_tokens": hourly / (requests_per_hour * tokens) * 1e6 if tokens else None,
            "marginal_per_1k_on_doubling": (hourly_doubled - hourly) / requests_per_hour * 1000,
            "instances_on_doubling": doubled, "per_hour_on_doubling": hourly_doubled}


def _power(economics: Economics, instances: int) -> dict[str, Any]:
    if economics.kw_per_instance is None:
        return {"kw": None, "facility_kw": None, "kwh_per_month": None, "pue": economics.pue}
    kw = instances * economics.kw_per_instance
    return {"kw": kw, "facility_kw": kw * economics.pue,
            "kwh_per_month": kw * economics.pue * HOURS_PER_MONTH, "pue": economics.pue}


def _pipeline(economics: Economics, instances: int, cost: dict[str, Any]) -> dict[str, Any]:
    feed = economics.pipeline_feed
    if feed is None:
        return {"feed_share": None, "wasted_share": None, "wasted_per_month": None,
                "wasted_instances": None}
    wasted = 1 - feed
    per_month = cost["per_month"] if cost["basis"] == "instance-hour" else None
    return {"feed_share": feed, "wasted_share": wasted,
            "wasted_per_month": None if per_month is None else wasted * per_month,
            "wasted_instances": wasted * instances}


def _predicted(model: QueueModel, per_instance: float, max_rate: float | None) -> dict[str, Any]:
    return {"rate_per_instance": per_instance, "mean_s": model.mean(per_instance),
            "p95_s": model.percentile(per_instance, 0.95),
            "p99_s": model.percentile(per_instance, 0.99),
            "error_rate": model.error_rate(per_instance), "max_rate_within_slo": max_rate,
            "saturation_rate": model.saturation}


def far_from_levels(model: QueueModel, rates: dict[str, float | None]) -> list[str]:
    """A note for each named rate the plan predicts at with no open-loop level near it: the
    time scale there is interpolated between levels, or held beyond them."""
    near = NEAR_LEVEL_SHARE * model.throughput_at(model.slots)
    levels = [rate for rate, _ in model.time_scales]
    return [f"no open-loop level within {near:.2f} req/s ({NEAR_LEVEL_SHARE:.0%} of the closed-loop "
            f"saturation) of the {name}, {rate:.2f} req/s: the model's time scale there is not "
            "measured (interpolated between levels, held beyond them, 1 without any; on the embedded "
            "engine a p95 between levels 30% of saturation apart was 10% off); bench a Poisson level "
            f"near it (switchgear bench --arrival poisson -r {rate:.2f})"
            for name, rate in rates.items()
            if rate and not any(abs(level - rate) <= near for level in levels)]


def _calibration(calibration: Calibration, latency: str, notes: list[str]) -> dict[str, Any]:
    model = calibration.model
    return {"latency": latency, "closed_loop_levels": [
                {"concurrency": int(n), "request_rate": float(x)}
                for n, x in zip(model.concurrency, model.throughput, strict=True)],
            "slots": model.slots,
            "time_scales": [{"rate": rate, "scale": scale} for rate, scale in model.time_scales],
            "open_loop_checks": [{**asdict(check), "error": check.error} for check in calibration.checks],
            "notes": [*calibration.notes, *notes]}


def _checked(findings: list[Finding], force: bool) -> list[dict[str, Any]]:
    """The findings as the plan's warnings; raises ``PlanError`` on those that refuse, unless
    ``force``."""
    refusals = [finding.message for finding in findings if finding.refuses]
    if refusals and not force:
        raise PlanError("the profile contradicts this plan (--force plans anyway):\n"
                        + "\n".join(f"  - {message}" for message in refusals))
    return [{"check": finding.check, "message": finding.message, "overridden": finding.refuses}
            for finding in findings]


def make_plan(profile: Profile, inputs: PlanInputs) -> dict[str, Any]:
    """The plan for ``inputs`` on the instances ``profile`` measured, as a JSON-ready dict."""
    targets, economics = with_profile_slo(inputs.targets, profile), inputs.economics
    if targets.rate <= 0:
        raise PlanError("the peak rate must be above zero")
    calibration = calibrate(profile, inputs.slots)
    model = calibration.model
    max_rate = _max_rate(model, targets)
    instances = instances_for(model, targets.rate, targets, max_rate)
    doubled = instances_for(model, 2 * targets.rate, targets, max_rate)
    input_tokens, output_tokens = profile.mean_tokens()
    workload = Workload(input_tokens, output_tokens, profile.stream, inputs.bytes_per_request)
    cost = _cost(economics, instances, doubled, targets.rate, workload.tokens)
    limits = resource_limits(model, instances, workload, inputs.resources, targets.rate)
    per_instance = targets.rate / instances
    warnings = _checked(assess(calibration, Answer(per_instance, max_rate, targets.percentiles())),
                        inputs.force)
    return {
        "tool": "switchgear plan", "format": 1, "percentile_method": METHOD, "warnings": warnings,
        "inputs": {"peak_rate": targets.peak_rate, "growth": targets.growth, "rate": targets.rate,
                   "slo": {"p95_s": targets.slo_p95_s, "p99_s": targets.slo_p99_s,
                           "error_rate": targets.error_cap},
                   "economics": asdict(economics), "resources": asdict(inputs.resources),
                   "workload": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                                "stream": profile.stream}},
        "instances": instances, "target_utilization": targets.target_utilization,
        "utilization": targets.rate / (instances * model.saturation),
        "predicted": _predicted(model, per_instance, max_rate),
        "cost": cost, "power": _power(economics, instances),
        "pipeline": _pipeline(economics, instances, cost),
        "limiting_resource": {"name": limits[0].name, "evidence": limits[0].evidence},
        "limits": [{"name": limit.name, "max_rate": limit.max_rate,
                    "headroom": limit.headroom(targets.rate),
                    "scales_with_instances": limit.scales_with_instances, "evidence": limit.evidence}
                   for limit in limits],
        "calibration": _calibration(calibration, profile.latency, far_from_levels(
            model, {"rate per instance": per_instance, "highest rate within the SLO": max_rate})),
    }

