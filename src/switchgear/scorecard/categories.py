"""The eight categories, each scored 0, 1 or 2 from Evidence alone (pure functions, no I/O).

Every category is a few checks; a check is met, partly met or missing. A category scores 2 when
every check is met (disciplined AND measured), 1 when at least one is met or partly met (partly
defined), 0 when none is (unclear). Each score carries the evidence its checks saw and, for each
check not met, what would meet it. The rule of each category is its function's docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from switchgear.scorecard.evidence import Evidence

State = Literal["met", "partial", "missing"]

#: The highest score of one category, and of the whole card.
CATEGORY_MAX = 2
#: Totals below this flag "AI spending risk".
RISK_BELOW = 10
RISK_LABEL = "AI spending risk"

#: Shares of requests at or above this count as "all" (a few requests without it are noise).
MOST = 0.9


@dataclass(frozen=True, slots=True)
class Check:
    """One thing a category looks for: how far it is met, what the evidence shows, and what
    would meet it."""

    state: State
    seen: str
    fix: str


@dataclass(frozen=True, slots=True)
class Score:
    """One category's score, the evidence lines it used and what would raise it."""

    key: str
    title: str
    score: int
    evidence: tuple[str, ...]
    to_raise: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scorecard:
    """The eight scores, their total out of 16 and whether it flags spending risk."""

    scores: tuple[Score, ...]

    @property
    def total(self) -> int:
        """The sum of the scores."""
        return sum(score.score for score in self.scores)

    @property
    def maximum(self) -> int:
        """The highest total possible."""
        return CATEGORY_MAX * len(self.scores)

    @property
    def at_risk(self) -> bool:
        """Whether the total is below the risk threshold (10 of 16)."""
        return self.total < RISK_BELOW


def _score(key: str, title: str, checks: list[Check]) -> Score:
    states = [check.state for check in checks]
    if all(state == "met" for state in states):
        value = 2
    elif any(state != "missing" for state in states):
        value = 1
    else:
        value = 0
    return Score(key, title, value, tuple(f"{check.state}: {check.seen}" for check in checks),
                 tuple(check.fix for check in checks if check.state != "met"))


def _share_state(share: float) -> State:
    return "met" if share >= MOST else "partial" if share > 0 else "missing"


def _percent(share: float) -> str:
    return f"{share:.0%}"


def workload_clarity(evidence: Evidence) -> Score:
    """Workload clarity: the real-time / batch / fine-tuning / training mix is declared
    (``scorecard.workloads``), latency targets exist (a latency SLO or a model's
    ``latency_target_ms``), and the records show the traffic by priority tier over the
    window. 2: all three; 1: any; 0: none."""
    config, records = evidence.config, evidence.records
    mix = config.workloads
    declared = Check(
        "met" if mix else "missing",
        (f"declared mix: real-time {_percent(mix.real_time)}, batch {_percent(mix.batch)}, "
         f"fine-tuning {_percent(mix.fine_tuning)}, training {_percent(mix.training)}")
        if mix else "no declared workload mix",
        "declare scorecard.workloads (real_time, batch, fine_tuning and training shares)")
    targets = Check(
        "met" if config.latency_targets else "missing",
        f"{config.latency_targets} latency target(s) (latency SLOs, models' latency_target_ms)",
        "define a latency SLO (slo.objectives, sli kind latency) or a model's latency_target_ms")
    tiers = ", ".join(f"{name} {_percent(records.share(count))}" for name, count in records.by_tier)
    measured = Check(
        "met" if records.by_tier else "missing",
        f"{records.requests} requests in the window by tier: {tiers}" if records.by_tier
        else "no requests with a priority tier in the window",
        "serve the traffic through the gateway so the records show its mix by tier")
    return _score("workload_clarity", "Workload clarity", [declared, targets, measured])


def reliability(evidence: Evidence) -> Score:
    """Reliability targets: SLOs are defined (each names its owner), someone answers incidents
    (``scorecard.incident_owner``), every SLO's burn-rate alerts go to a webhook, and there are
    records in the window to measure the SLOs by. 2: all four; 1: any; 0: none."""
    config, records = evidence.config, evidence.records
    slos = config.slos
    owners = ", ".join(sorted({slo.owner for slo in slos}))
    defined = Check("met" if slos else "missing",
                    f"{len(slos)} SLO(s), owned by {owners}" if slos else "no SLOs defined",
                    "define slo.objectives (each with its target, window and owner)")
    incidents = Check("met" if config.incident_owner else "missing",
                      f"incident owner: {config.incident_owner}" if config.incident_owner
                      else "no incident owner named",
                      "name scorecard.incident_owner (the team or rota answering incidents)")
    routed = sum(slo.alerts_routed for slo in slos)
    alerts = Check("met" if slos and routed == len(slos) else "partial" if routed else "missing",
                   f"burn-rate alerts of {routed} of {len(slos)} SLO(s) go to a webhook",
                   "set alerting.webhook_url (or webhook_url_env) on every SLO")
    measured = Check("met" if slos and records.requests else "missing",
                     f"{records.requests} requests in the window to measure the SLOs by",
                     "serve traffic through the gateway with SLOs defined, so they are measured")
    return _score("reliability", "Reliability targets", [defined, incidents, alerts, measured])


def cost_model(evidence: Evidence) -> Score:
    """Cost model: every deployment has a price, nearly every (90%) successful request carries
    a cost, and nearly every request a feature tag, so cost per feature is known. 2: all three;
    1: any, even in part; 0: none."""
    config, records = evidence.config, evidence.records
    priced = config.priced_deployments
    plan = evidence.plan
    planned = "" if plan is None or plan.cost_per_1k_requests is None else (
        f"; plan: {plan.cost_per_1k_requests:g} per 1,000 requests"
        + ("" if plan.marginal_per_1k_on_doubling is None
           else f", {plan.marginal_per_1k_on_doubling:g} when traffic doubles"))
    prices = Check(
        "met" if config.deployments and priced == config.deployments
        else "partial" if priced else "missing",
        f"{priced} of {config.deployments} deployment(s) priced{planned}",
        "give every deployment a price (input/output per million tokens or instance_per_hour)")
    costed_share = records.share(records.costed, of_succeeded=True)
    costed = Check(_share_state(costed_share),
                   f"{_percent(costed_share)} of {records.succeeded} successful requests "
                   "carry a cost",
                   "price the deployments serving traffic, so each record carries its cost")
    features = "; ".join(f"{f.feature} {f.cost:.4f} over {f.requests} requests"
                         for f in records.feature_costs)
    tagged_share = records.share(records.with_feature)
    per_feature = Check(_share_state(tagged_share),
                        f"{_percent(tagged_share)} of requests carry a feature tag"
                        + (f"; cost by feature: {features}" if features else ""),
                        "give each application's API key a feature tag (key feature)")
    return _score("cost_model", "Cost model", [prices, costed, per_feature])


def utilization(evidence: Evidence) -> Score:
    """Utilization plan: priority tiers schedule the work (``tiers``), quotas bound it (rate
    limits or budgets), and utilization is planned (a `switchgear plan` file with its
    utilization; the ledger's measured instance time alone counts in part). 2: all three;
    1: any, even in part; 0: none."""
    config, records, plan = evidence.config, evidence.records, evidence.plan
    tiers = Check("met" if config.tiers else "missing",
                  "priority tiers and shedding configured" if config.tiers
                  else "no priority tiers",
                  "configure tiers (capacity and a queue per tier)")
    quotas = Check("met" if config.rate_limits or config.budgets else "missing",
                   f"rate limits: {'yes' if config.rate_limits else 'no'}; "
                   f"budgets: {'yes' if config.budgets else 'no'}",
                   "set limits (rpm/tpm per key, tenant or model) or budgets")
    if plan is not None and plan.utilization is not None:
        target = ("" if plan.target_utilization is None
                  else f" (target {_percent(plan.target_utilization)})")
        p95 = "" if plan.p95_s is None else f", p95 {plan.p95_s:g} s predicted"
        limit = "" if plan.limiting_resource is None else (
            f", limited first by {plan.limiting_resource}")
        planned = Check("met", f"plan: {plan.instances or 0:g} instance(s) at "
                        f"{_percent(plan.utilization)} utilization{target}{p95}{limit}", "")
    else:
        planned = Check("partial" if records.instance_timed else "missing",
                        f"no plan; the ledger timed {records.instance_timed} requests' "
                        "instance use",
                        "run `switchgear plan --json > plan.json` and pass --plan plan.json")
    return _score("utilization", "Utilization plan", [tiers, quotas, planned])


def data_pipeline(evidence: Evidence) -> Score:
    """Data pipeline readiness: throughput is known (a plan's pipeline feed share; a plan's
    highest rate within SLO counts in part), lineage is recorded (90% of requests name the
    config version that served them), and governance holds (the audit trail verifies AND config
    changes need approval). 2: all three; 1: any, even in part; 0: none."""
    config, records, governance, plan = (evidence.config, evidence.records, evidence.governance,
                                         evidence.plan)
    if plan is not None and plan.feed_share is not None:
        wasted = "" if plan.wasted_share is None else f", {_percent(plan.wasted_share)} of spend"
        throughput = Check("met", f"the input pipeline feeds {_percent(plan.feed_share)} of "
                           f"accelerator capacity (waste{wasted or ' unknown'})", "")
    else:
        rate = plan.max_rate_within_slo if plan is not None else None
        throughput = Check("partial" if rate is not None else "missing",
                           f"highest rate within SLO: {rate:g} req/s; pipeline feed unknown"
                           if rate is not None else "pipeline throughput unknown",
                           "plan with the input pipeline's feed rate and pass --plan plan.json")
    versioned = records.share(records.versioned)
    lineage = Check(_share_state(versioned),
                    f"{_percent(versioned)} of {records.requests} requests name their config "
                    "version",
                    "serve through the gateway with a store, so each record names its config "
                    "version")
    verified = governance.audit_intact is True
    approvals = bool(config.approval_sections)
    reviewed = not governance.unreviewed_break_glass
    governed = Check(
        "met" if verified and approvals and reviewed
        else "partial" if verified or approvals else "missing",
        f"audit trail {_audit(evidence)}; approval required for "
        f"{', '.join(config.approval_sections) or 'no section'}; "
        f"{governance.reviewed_changes} change(s) approved, "
        f"{governance.unreviewed_break_glass} break-glass change(s) awaiting review; prompts "
        f"{'stored, redacted' if config.log_content else 'not stored'}",
        "keep the audit trail verifiable, require approval of config changes and review "
        "every break-glass change")
    return _score("data_pipeline", "Data pipeline readiness", [throughput, lineage, governed])


def serving_maturity(evidence: Evidence) -> Score:
    """Serving maturity: every deployment batches (several sequences at once), the cache is on
    and its hit share is measured in the records, and rollback is proven (stored config
    versions AND an applied rollback or a canary that rolls back by itself). 2: all three;
    1: any, even in part; 0: none."""
    config, records, governance = evidence.config, evidence.records, evidence.governance
    batching = Check(
        "met" if config.deployments and config.batching_deployments == config.deployments
        else "partial" if config.batching_deployments else "missing",
        f"{config.batching_deployments} of {config.deployments} deployment(s) batch",
        "let deployments batch: embedded max_sequences > 1, max_concurrency > 1 upstream")
    hit_share = records.cache_hits / records.cache_judged if records.cache_judged else 0.0
    caching = Check(
        "met" if config.cache_enabled and records.cache_judged
        else "partial" if config.cache_enabled else "missing",
        f"cache {'on' if config.cache_enabled else 'off'}; {_percent(hit_share)} hits of "
        f"{records.cache_judged} requests it judged",
        "turn the cache on (cache.enabled, cacheable) and serve traffic to measure its hits")
    proven = governance.rollbacks or config.canaries
    rollback = Check(
        "met" if governance.config_versions and proven
        else "partial" if governance.config_versions or proven else "missing",
        f"{governance.config_versions} config version(s) stored, {governance.rollbacks} "
        f"rollback(s) applied, {config.canaries} canary(ies)",
        "prove rollback: `switchgear config rollback` once, or a canary variant")
    return _score("serving_maturity", "Serving maturity", [batching, caching, rollback])


def security(evidence: Evidence) -> Score:
    """Security and access controls: requests need a key (auth ``required``, or ``auto`` with
    keys issued), keys are split by role (two roles or more), input guards protect data (pii,
    injection, patterns or custom checks) and the audit trail verifies (one that could not be
    checked counts in part). 2: all four; 1: any, even in part; 0: none."""
    config, governance = evidence.config, evidence.governance
    keys = governance.active_keys
    enforced = config.auth_mode == "required" or (config.auth_mode == "auto" and keys > 0)
    auth = Check("met" if enforced else "missing",
                 f"auth {config.auth_mode} with {keys} active key(s)",
                 "set auth.mode required (or issue keys; auto then requires them)")
    roles = ", ".join(f"{role} {count}" for role, count in governance.keys_by_role)
    split = Check(
        "met" if len(governance.keys_by_role) >= 2 else "partial" if keys else "missing",
        f"keys by role: {roles or 'none'}; {governance.scoped_keys} limited to some models",
        "issue keys per role: client keys for applications, admin/operator/viewer for people")
    actions = ", ".join(f"{action} {count}" for action, count in evidence.records.guard_actions)
    guards = Check("met" if config.data_guards else "missing",
                   f"input data guards: {', '.join(config.data_guards) or 'none'}; "
                   f"{config.output_guards} output check(s); guard actions in the window: "
                   f"{actions or 'none'}",
                   "add input guards (pii, injection, patterns)")
    audit = Check(
        "met" if governance.audit_intact is True
        else "partial" if governance.audit_intact is None and governance.audit_entries
        else "missing",
        f"audit trail {_audit(evidence)}",
        "set the audit key (governance.audit_secret_env) so `switchgear audit verify` passes")
    return _score("security", "Security and access controls", [auth, split, guards, audit])


def facilities(evidence: Evidence) -> Score:
    """Facilities and power realism: ``scorecard.facilities`` declares kW per rack, cooling,
    lead time and the power budget; a plan gives the power draw; and that draw fits the budget.
    2: all three; 1: any, even in part; 0: none."""
    declared = evidence.config.facilities
    values = {"kw_per_rack": declared.kw_per_rack, "cooling": declared.cooling,
              "lead_time_weeks": declared.lead_time_weeks,
              "power_budget_kw": declared.power_budget_kw}
    given = {name: value for name, value in values.items() if value is not None}
    missing = [name for name in values if name not in given]
    facts = Check("met" if not missing else "partial" if given else "missing",
                  "declared: " + (", ".join(f"{k} {v}" for k, v in given.items()) or "nothing"),
                  f"declare scorecard.facilities {', '.join(missing)}")
    kw = evidence.plan.power_kw if evidence.plan is not None else None
    pue = evidence.plan.pue if evidence.plan is not None else None
    kwh = evidence.plan.kwh_per_month if evidence.plan is not None else None
    power = Check("met" if kw is not None else "missing",
                  f"plan draws {kw:g} kW" + (f" at PUE {pue:g}" if pue is not None else "")
                  + (f", {kwh:g} kWh a month" if kwh is not None else "")
                  if kw is not None else "no planned power draw",
                  "plan with power per instance and PUE, and pass --plan plan.json")
    budget = declared.power_budget_kw
    if kw is not None and budget is not None:
        fits = Check("met" if kw <= budget else "missing",
                     f"{kw:g} kW planned against a {budget:g} kW budget",
                     "plan fewer or leaner instances, or secure more power")
    else:
        fits = Check("missing", "power draw not compared with a budget",
                     "declare power_budget_kw and plan the power draw to compare them")
    return _score("facilities", "Facilities and power realism", [facts, power, fits])


def _audit(evidence: Evidence) -> str:
    governance = evidence.governance
    if governance.audit_intact is None:
        return f"of {governance.audit_entries} entries not checked"
    verdict = "verifies" if governance.audit_intact else "TAMPERED"
    return f"of {governance.audit_entries} entries {verdict}"


#: The categories in the essay's order.
CATEGORIES: tuple[Callable[[Evidence], Score], ...] = (
    workload_clarity, reliability, cost_model, utilization, data_pipeline, serving_maturity,
    security, facilities)


def score(evidence: Evidence) -> Scorecard:
    """Every category scored from ``evidence``."""
    return Scorecard(tuple(category(evidence) for category in CATEGORIES))
