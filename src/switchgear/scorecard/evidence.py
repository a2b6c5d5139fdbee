"""The facts the scorecard is scored from: a frozen tree built from the config, the records, the
governance tables and an optional capacity plan. Building it from a config or a plan's JSON is
pure; reading the store is gather.py's job."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from switchgear.config import Config, DeploymentConfig
from switchgear.sections.scorecard import Facilities, WorkloadMix

#: Input guard checks that protect data (what reaches a model, and what is logged).
DATA_CHECKS = frozenset({"pii", "patterns", "injection", "custom"})

#: ``(name, count)`` pairs, largest count first.
Counts = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class SLOFact:
    """One declared SLO: its name, owner, SLI kind, target and whether its alerts go anywhere
    (a webhook) rather than only into ``switchgear slo status``."""

    name: str
    owner: str
    kind: str
    target: float
    alerts_routed: bool


@dataclass(frozen=True, slots=True)
class ConfigFacts:
    """What the serving config declares."""

    source: str = "defaults"
    deployments: int = 0
    priced_deployments: int = 0
    #: Deployments that run several sequences at once (an engine batch, simulator slots, or
    #: concurrent requests an upstream server can batch).
    batching_deployments: int = 0
    #: Latency SLOs plus model aliases with a latency target.
    latency_targets: int = 0
    slos: tuple[SLOFact, ...] = ()
    tiers: bool = False
    rate_limits: bool = False
    budgets: bool = False
    cache_enabled: bool = False
    canaries: int = 0
    auth_mode: str = "auto"
    #: Labels of the input checks that protect data (pii, patterns, injection, custom).
    data_guards: tuple[str, ...] = ()
    output_guards: int = 0
    log_content: bool = False
    approval_sections: tuple[str, ...] = ()
    workloads: WorkloadMix | None = None
    incident_owner: str | None = None
    facilities: Facilities = field(default_factory=Facilities)


@dataclass(frozen=True, slots=True)
class FeatureCost:
    """What one feature tag's requests cost in the window."""

    feature: str
    requests: int
    cost: float


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """What the request log shows over the window (``window_s`` seconds up to now)."""

    window_s: float = 0.0
    requests: int = 0
    succeeded: int = 0
    with_feature: int = 0
    #: Successful requests that carry a cost or a saved cost (a cache hit's).
    costed: int = 0
    #: Requests the cache judged (hit, miss, coalesced or bypass), and its hits.
    cache_judged: int = 0
    cache_hits: int = 0
    #: Requests that name the config version that served them.
    versioned: int = 0
    #: Requests whose self-hosted instance time was measured (the ledger's busy seconds).
    instance_timed: int = 0
    by_tier: Counts = ()
    feature_costs: tuple[FeatureCost, ...] = ()
    guard_actions: Counts = ()

    def share(self, count: int, of_succeeded: bool = False) -> float:
        """``count`` as a share of the requests (or of the successful ones); 0 when none."""
        whole = self.succeeded if of_succeeded else self.requests
        return count / whole if whole else 0.0


@dataclass(frozen=True, slots=True)
class GovernanceFacts:
    """Keys, the audit trail and config changes as the store holds them."""

    #: Active (not revoked, not expired) keys by role.
    keys_by_role: Counts = ()
    #: Active keys limited to some models.
    scoped_keys: int = 0
    audit_entries: int = 0
    #: Whether the audit trail verified; None when it could not be checked (see audit_note).
    audit_intact: bool | None = None
    audit_note: str = ""
    config_versions: int = 0
    #: Change requests approved by a reviewer.
    reviewed_changes: int = 0
    #: Applied rollbacks to an earlier version.
    rollbacks: int = 0
    #: Break-glass changes still waiting for their review.
    unreviewed_break_glass: int = 0

    @property
    def active_keys(self) -> int:
        """How many keys may be used now."""
        return sum(count for _, count in self.keys_by_role)


@dataclass(frozen=True, slots=True)
class PlanFacts:
    """The parts of a `switchgear plan --json` file the scorecard reads (None: absent)."""

    source: str
    instances: float | None = None
    utilization: float | None = None
    target_utilization: float | None = None
    p95_s: float | None = None
    max_rate_within_slo: float | None = None
    cost_per_1k_requests: float | None = None
    marginal_per_1k_on_doubling: float | None = None
    power_kw: float | None = None
    kwh_per_month: float | None = None
    pue: float | None = None
    feed_share: float | None = None
    wasted_share: float | None = None
    limiting_resource: str | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the categories are scored from, and notes on what could not be read."""

    config: ConfigFacts = ConfigFacts()
    records: RecordFacts = RecordFacts()
    governance: GovernanceFacts = GovernanceFacts()
    plan: PlanFacts | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def config_facts(config: Config, source: str) -> ConfigFacts:
    """The facts ``config`` declares; ``source`` says where it came from."""
    deployments = [d for model in config.models.values() for d in model.deployments]
    slos = tuple(SLOFact(o.name, o.owner, o.sli.kind, o.target,
                         o.alerting.webhook_url is not None or o.alerting.webhook_url_env is not None)
                 for o in config.slo.objectives)
    limits = config.limits
    rate_limits = [limits.per_key, *limits.tenants.values(), *limits.models.values()]
    budgets = [limits.budgets.per_key, *limits.budgets.tenants.values()]
    guards = config.guards
    inputs = [*guards.input, *(c for g in (*guards.routes.values(), *guards.keys.values())
                               for c in g.input)]
    outputs = [*guards.output, *(c for g in (*guards.routes.values(), *guards.keys.values())
                                 for c in g.output)]
    return ConfigFacts(
        source=source,
        deployments=len(deployments),
        priced_deployments=sum(_priced(d) for d in deployments),
        batching_deployments=sum(_batches(d) for d in deployments),
        latency_targets=sum(s.kind == "latency" for s in slos)
        + sum(m.latency_target_ms is not None for m in config.models.values()),
        slos=slos,
        tiers=config.tiers is not None,
        rate_limits=any(v.rpm is not None or v.tpm is not None for v in rate_limits),
        budgets=any(b is not None and (b.daily is not None or b.monthly is not None)
                    for b in budgets),
        cache_enabled=config.cache.enabled and config.cache.cacheable != "off",
        canaries=sum(v.canary for m in config.models.values() for v in m.variants),
        auth_mode=config.auth.mode,
        data_guards=tuple(sorted({c.label for c in inputs if c.check in DATA_CHECKS})),
        output_guards=len(outputs),
        log_content=config.store.log_content,
        approval_sections=tuple(config.governance.approval_required),
        workloads=config.scorecard.workloads,
        incident_owner=config.scorecard.incident_owner,
        facilities=config.scorecard.facilities,
    )


def _priced(deployment: DeploymentConfig) -> bool:
    price = deployment.charged_price
    return price.self_hosted or price.input_per_million > 0 or price.output_per_million > 0


def _batches(deployment: DeploymentConfig) -> bool:
    if deployment.backend == "embedded":
        return deployment.embedded.max_sequences > 1
    if deployment.backend == "simulated":
        return deployment.simulated.slots > 1
    return deployment.max_concurrency > 1


def plan_facts(data: Any, source: str) -> PlanFacts:
    """The facts of a plan's JSON, read leniently: a missing or non-numeric key is None."""
    plan = data if isinstance(data, Mapping) else {}
    limiting = _at(plan, "limiting_resource", "name")
    return PlanFacts(
        source=source,
        instances=_number(plan, "instances"),
        utilization=_number(plan, "utilization"),
        target_utilization=_number(plan, "target_utilization"),
        p95_s=_number(plan, "predicted", "p95_s"),
        max_rate_within_slo=_number(plan, "predicted", "max_rate_within_slo"),
        cost_per_1k_requests=_number(plan, "cost", "per_1k_requests"),
        marginal_per_1k_on_doubling=_number(plan, "cost", "marginal_per_1k_on_doubling"),
        power_kw=_number(plan, "power", "kw"),
        kwh_per_month=_number(plan, "power", "kwh_per_month"),
        pue=_number(plan, "power", "pue"),
        feed_share=_number(plan, "pipeline", "feed_share"),
        wasted_share=_number(plan, "pipeline", "wasted_share"),
        limiting_resource=limiting if isinstance(limiting, str) and limiting else None,
    )


def _at(data: Mapping[str, Any], *path: str) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _number(data: Mapping[str, Any], *path: str) -> float | None:
    value = _at(data, *path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
