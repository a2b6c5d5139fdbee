"""Each category at 0, 1 and 2 from constructed evidence, and the total's risk flag at 9 and 10."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from scorecard_examples import FULL, NOTHING, PLAN

from switchgear.scorecard.categories import (
    CATEGORIES,
    Score,
    Scorecard,
    cost_model,
    data_pipeline,
    facilities,
    reliability,
    score,
    security,
    serving_maturity,
    utilization,
    workload_clarity,
)
from switchgear.scorecard.evidence import Evidence, PlanFacts, SLOFact
from switchgear.scorecard.report import verdict
from switchgear.sections.scorecard import Facilities

Category = Callable[[Evidence], Score]


def _config(**fields: object) -> Evidence:
    return replace(NOTHING, config=replace(NOTHING.config, **fields))  # type: ignore[arg-type]


def _records(**fields: object) -> Evidence:
    return replace(NOTHING, records=replace(NOTHING.records, **fields))  # type: ignore[arg-type]


def _governance(**fields: object) -> Evidence:
    return replace(NOTHING, governance=replace(NOTHING.governance,
                                               **fields))  # type: ignore[arg-type]


CASES: list[tuple[Category, int, Evidence, str]] = [
    (workload_clarity, 0, NOTHING, "missing: no declared workload mix"),
    (workload_clarity, 1, _config(latency_targets=1), "met: 1 latency target(s)"),
    (workload_clarity, 2, FULL, "met: 100 requests in the window by tier: interactive 70%"),
    (reliability, 0, NOTHING, "missing: no SLOs defined"),
    (reliability, 1, _config(slos=(SLOFact("api", "sre", "availability", 0.999, False),)),
     "missing: burn-rate alerts of 0 of 1 SLO(s) go to a webhook"),
    (reliability, 2, FULL, "met: incident owner: sre-rota"),
    (cost_model, 0, _config(deployments=2), "missing: 0 of 2 deployment(s) priced"),
    (cost_model, 1, _config(deployments=2, priced_deployments=1),
     "partial: 1 of 2 deployment(s) priced"),
    (cost_model, 2, FULL, "met: 95% of requests carry a feature tag; cost by feature: search 1.2000 over 60"),
    (utilization, 0, NOTHING, "missing: no priority tiers"),
    (utilization, 1, _records(instance_timed=5), "partial: no plan; the ledger timed 5"),
    (utilization, 2, FULL, "met: plan: 4 instance(s) at 70% utilization, limited first by slots"),
    (data_pipeline, 0, NOTHING, "missing: pipeline throughput unknown"),
    (data_pipeline, 1, replace(NOTHING, plan=PlanFacts("plan.json", max_rate_within_slo=50)),
     "partial: highest rate within SLO: 50 req/s"),
    (data_pipeline, 2, FULL, "met: the input pipeline feeds 80% of accelerator capacity"),
    (serving_maturity, 0, NOTHING, "missing: 0 of 0 deployment(s) batch"),
    (serving_maturity, 1, _config(cache_enabled=True), "partial: cache on; 0% hits of 0"),
    (serving_maturity, 2, FULL, "met: 3 config version(s) stored, 1 rollback(s) applied"),
    (security, 0, NOTHING, "missing: auth auto with 0 active key(s)"),
    (security, 1, _governance(audit_entries=3), "partial: audit trail of 3 entries not checked"),
    (security, 2, FULL, "met: keys by role: client 3, admin 1"),
    (facilities, 0, NOTHING, "missing: declared: nothing"),
    (facilities, 1, _config(facilities=Facilities(kw_per_rack=40)),
     "partial: declared: kw_per_rack 40"),
    (facilities, 2, FULL, "met: 12 kW planned against a 20 kW budget"),
]


@pytest.mark.parametrize(("category", "expected", "evidence", "reason"), CASES,
                         ids=[f"{c.__name__}-{level}" for c, level, _, _ in CASES])
def test_category_scores_from_evidence(category: Category, expected: int, evidence: Evidence,
                                       reason: str) -> None:
    result = category(evidence)
    assert result.score == expected, result.evidence
    assert any(line.startswith(reason) for line in result.evidence), result.evidence
    # A category at 2 has nothing left to raise; below 2 it says what would raise it.
    assert bool(result.to_raise) == (expected < 2)


def test_every_category_has_its_three_levels() -> None:
    levels = {(category, level) for category, level, _, _ in CASES}
    assert levels == {(category, level) for category in CATEGORIES for level in (0, 1, 2)}


def test_a_plan_over_the_power_budget_keeps_facilities_below_two() -> None:
    evidence = replace(FULL, plan=replace(PLAN, power_kw=25))
    result = facilities(evidence)
    assert result.score == 1
    assert "missing: 25 kW planned against a 20 kW budget" in result.evidence
    assert "plan fewer or leaner instances, or secure more power" in result.to_raise


def test_a_tampered_audit_trail_counts_against_security() -> None:
    evidence = replace(FULL, governance=replace(FULL.governance, audit_intact=False))
    result = security(evidence)
    assert result.score == 1
    assert "missing: audit trail of 5 entries TAMPERED" in result.evidence


def test_an_unreviewed_break_glass_change_keeps_the_pipeline_below_two() -> None:
    evidence = replace(FULL, governance=replace(FULL.governance, unreviewed_break_glass=1))
    result = data_pipeline(evidence)
    assert result.score == 1
    assert any("1 break-glass change(s) awaiting review" in line for line in result.evidence)


def _card(values: tuple[int, ...]) -> Scorecard:
    return Scorecard(tuple(Score(f"c{n}", f"category {n}", value, (), ())
                           for n, value in enumerate(values)))


def test_nine_flags_spending_risk_and_ten_does_not() -> None:
    nine, ten = _card((2, 2, 2, 2, 1, 0, 0, 0)), _card((2, 2, 2, 2, 1, 1, 0, 0))
    assert (nine.total, nine.maximum, nine.at_risk) == (9, 16, True)
    assert (ten.total, ten.maximum, ten.at_risk) == (10, 16, False)
    assert verdict(nine) == "total 9/16: AI spending risk (below 10)"
    assert verdict(ten) == "total 10/16: no AI spending risk flag (10 or more)"


def test_the_whole_card_from_full_and_from_no_evidence() -> None:
    assert (score(FULL).total, score(FULL).at_risk) == (16, False)
    assert (score(NOTHING).total, score(NOTHING).at_risk) == (0, True)
