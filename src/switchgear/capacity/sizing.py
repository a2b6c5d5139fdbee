"""The cost report's "what if traffic doubles", answered by the capacity planner's model: a
deployment whose ``capacity`` names a ``switchgear bench`` profile is sized by the model
calibrated on it (instances within the SLO and the target utilization, the ceiling hit first,
p95/p99 predicted per instance); its rates per instance, where given, still bound it. The
answer is checked against the profile as ``switchgear plan`` checks its own (plan/evidence.py):
where the profile contradicts it, the latency is unknown and the instances come from the rates
alone; where evidence is missing, the latency says so. The ledger sits below the planner, so the
report takes this sizer as an argument."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from switchgear.capacity.plan.calibration import Calibration, calibrate
from switchgear.capacity.plan.evidence import Answer, assess
from switchgear.capacity.plan.limits import Resources, Workload, resource_limits
from switchgear.capacity.plan.model import QueueModel
from switchgear.capacity.plan.planner import Targets, instances_for, with_profile_slo
from switchgear.capacity.plan.profile import Profile, load_profiles
from switchgear.config import Capacity
from switchgear.ledger.marginal import Sizing, rate_sizing


@dataclass(frozen=True, slots=True)
class Calibrated:
    """A bench profile and the planner's model of one instance calibrated on it."""

    profile: Profile
    calibration: Calibration

    @property
    def model(self) -> QueueModel:
        """The calibrated model."""
        return self.calibration.model


@dataclass(slots=True)
class PlannerSizer:
    """A ``Sizer`` (ledger/marginal.py) that sizes by a capacity's bench profile where it names
    one, else by its rates. Each profile is read and calibrated once per sizer (one report):
    the models live as long as the sizer does."""

    calibrated: dict[str, Calibrated | str] = field(default_factory=dict)

    def __call__(self, capacity: Capacity, requests_per_s: float, tokens_per_s: float
                 ) -> Sizing:
        by_rates = rate_sizing(capacity, requests_per_s, tokens_per_s)
        if capacity.profile is None:
            return by_rates
        calibrated = self._calibrated(capacity.profile)
        if isinstance(calibrated, str):
            return Sizing(by_rates.instances, by_rates.limiting, latency=f"unknown: {calibrated}")
        profile, model = calibrated.profile, calibrated.model
        targets = with_profile_slo(Targets(requests_per_s, slo_p95_s=capacity.slo_p95_s,
                                           slo_p99_s=capacity.slo_p99_s), profile)
        percentiles = targets.percentiles()
        max_rate = (model.max_rate(percentiles, targets.error_cap)
                    if percentiles or targets.error_cap is not None else None)
        if max_rate is not None and max_rate <= 0:
            return Sizing(by_rates.instances, by_rates.limiting,
                          latency=f"unknown: no rate meets the SLO on one instance of "
                                  f"{capacity.profile}")
        instances = instances_for(model, requests_per_s, targets, max_rate)
        limit = resource_limits(model, instances, Workload(*profile.mean_tokens(), profile.stream),
                                Resources(), requests_per_s)[0].name
        if by_rates.instances is not None and by_rates.limiting is not None \
                and by_rates.instances > instances:
            instances, limit = by_rates.instances, by_rates.limiting
        per_instance = requests_per_s / instances
        findings = assess(calibrated.calibration, Answer(per_instance, max_rate, percentiles))
        if refusals := [finding.message for finding in findings if finding.refuses]:
            return Sizing(by_rates.instances, by_rates.limiting,
                          latency=f"unknown: {capacity.profile} contradicts the planner's model "
                                  f"at this load: {'; '.join(refusals)}")
        warnings = "".join(f"; warning: {finding.message}" for finding in findings)
        slo = ", ".join(f"p{q * 100:g} <= {s:g} s" for q, s in percentiles.items())
        return Sizing(instances, limit if requests_per_s > 0 else None,
                      model.percentile(per_instance, 0.95), model.percentile(per_instance, 0.99),
                      f"predicted at {per_instance:.3g} req/s per instance by the planner's model "
                      f"of {capacity.profile} (target utilization "
                      f"{targets.target_utilization:.0%}{', ' + slo if slo else ''}){warnings}")

    def _calibrated(self, path: str) -> Calibrated | str:
        """The profile at ``path`` and its model, or why it cannot be had."""
        if path not in self.calibrated:
            try:
                profile = load_profiles([Path(path)])
                self.calibrated[path] = Calibrated(profile, calibrate(profile))
            except ValueError as error:  # ProfileError, or levels the model cannot fit
                self.calibrated[path] = f"the capacity profile cannot be used: {error}"
        return self.calibrated[path]
