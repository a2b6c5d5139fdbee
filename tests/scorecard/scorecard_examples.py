"""Constructed evidence shared by the scorecard tests."""

from __future__ import annotations

from switchgear.scorecard.evidence import (
    ConfigFacts,
    Evidence,
    FeatureCost,
    GovernanceFacts,
    PlanFacts,
    RecordFacts,
    SLOFact,
)
from switchgear.sections.scorecard import Facilities, WorkloadMix

#: No evidence at all: every category scores 0 from it.
NOTHING = Evidence()

PLAN = PlanFacts(source="plan.json", instances=4, utilization=0.7, max_rate_within_slo=50,
                 feed_share=0.8, wasted_share=0.2, power_kw=12, pue=1.3,
                 limiting_resource="slots")

#: Evidence of a disciplined, measured operation: every category scores 2 from it.
FULL = Evidence(
    config=ConfigFacts(
        source="test", deployments=2, priced_deployments=2, batching_deployments=2,
        latency_targets=1, slos=(SLOFact("chat-latency", "search-team", "latency", 0.99, True),),
        tiers=True, rate_limits=True, cache_enabled=True, auth_mode="required",
        data_guards=("pii",), approval_sections=("models",),
        workloads=WorkloadMix(real_time=0.7, batch=0.3), incident_owner="sre-rota",
        facilities=Facilities(kw_per_rack=40, cooling="liquid", lead_time_weeks=26,
                              power_budget_kw=20)),
    records=RecordFacts(
        window_s=86400, requests=100, succeeded=98, with_feature=95, costed=97,
        cache_judged=100, cache_hits=40, versioned=100,
        by_tier=(("interactive", 70), ("batch", 30)),
        feature_costs=(FeatureCost("search", 60, 1.2),)),
    governance=GovernanceFacts(keys_by_role=(("client", 3), ("admin", 1)), audit_entries=5,
                               audit_intact=True, config_versions=3, rollbacks=1),
    plan=PLAN,
)
