"""The SLOs as Prometheus recording and alerting rules over the gateway's own metrics.

Per SLO and window: ``switchgear:slo_errors:ratio_rate<window>{slo=...}``, the share of bad
requests; ``switchgear:slo_error_budget:remaining{slo=...}`` over the SLO's window; and one
``SLOErrorBudgetBurn`` alert per severity, the same multi-window conditions the gateway evaluates.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from switchgear.sections.durations import format_duration
from switchgear.sections.slo import SLI, SLOConfig, SLOSection

REQUESTS = "switchgear_requests_total"
CHECKED = "switchgear_output_checked_requests_total"
FAILED_CHECKS = 'verdict="fail"'
SERVER_ERRORS = 'status=~"5.."'
HISTOGRAMS = {"e2e": "switchgear_request_duration_seconds",
              "ttft": "switchgear_time_to_first_token_seconds"}


def _selector(objective: SLOConfig, *extra: str) -> str:
    labels = [f"{name}={json.dumps(value)}" for name, value in objective.scope.filters().items()]
    return "{" + ",".join([*labels, *extra]) + "}"


def error_ratio(objective: SLOConfig, window: str) -> str:
    """PromQL for the share of bad requests over ``window`` (a Prometheus duration)."""
    sli: SLI = objective.sli
    if sli.kind == "availability":
        bad = f"sum(rate({REQUESTS}{_selector(objective, SERVER_ERRORS)}[{window}]))"
        return f"({bad} or vector(0)) / sum(rate({REQUESTS}{_selector(objective)}[{window}]))"
    if sli.kind == "checks":
        failed = f"sum(rate({CHECKED}{_selector(objective, FAILED_CHECKS)}[{window}]))"
        return f"({failed} or vector(0)) / sum(rate({CHECKED}{_selector(objective)}[{window}]))"
    assert sli.threshold is not None  # the config requires one for latency
    metric = HISTOGRAMS[sli.measure]
    le = f'le="{sli.threshold!r}"'  # prometheus_client writes a bound as Python's repr
    fast = f"sum(rate({metric}_bucket{_selector(objective, le)}[{window}]))"
    return f"1 - {fast} / sum(rate({metric}_count{_selector(objective)}[{window}]))"


def _ratio_name(window: str) -> str:
    return f"switchgear:slo_errors:ratio_rate{window}"


def _number(value: float) -> str:
    return f"{value:.10g}"


def slo_group(objective: SLOConfig, time_scale: float) -> dict[str, Any]:
    """The rule group of one SLO, its windows multiplied by ``time_scale``."""
    name = {"slo": objective.name}
    policy = objective.alerting.policy
    windows = sorted({objective.window, *(r.long for r in policy), *(r.short for r in policy)})
    duration = {seconds: format_duration(seconds * time_scale) for seconds in windows}
    rules: list[dict[str, Any]] = [
        {"record": _ratio_name(duration[seconds]),
         "expr": error_ratio(objective, duration[seconds]), "labels": dict(name)}
        for seconds in windows]
    rules.append({
        "record": "switchgear:slo_error_budget:remaining",
        "expr": f"1 - {_ratio_name(duration[objective.window])}{{slo={json.dumps(objective.name)}}}"
                f" / {_number(objective.error_budget)}",
        "labels": dict(name)})
    for severity in ("page", "ticket"):
        conditions = []
        for rule in (r for r in policy if r.severity == severity):
            limit = _number(rule.burn_rate * objective.error_budget)
            both = " and ".join(
                f"{_ratio_name(duration[seconds])}{{slo={json.dumps(objective.name)}}} > {limit}"
                for seconds in (rule.long, rule.short))
            conditions.append(f"({both})")
        if conditions:
            rules.append({
                "alert": "SLOErrorBudgetBurn", "expr": " or ".join(conditions),
                "labels": {**name, "severity": severity, "owner": objective.owner,
                           **objective.scope.filters()},
                "annotations": {
                    "summary": f"SLO {objective.name} is burning its error budget "
                               f"(target {objective.target:g} over "
                               f"{format_duration(objective.window)})",
                    "description": objective.description or f"Owner: {objective.owner}."}})
    return {"name": f"switchgear-slo-{objective.name}", "rules": rules}


def prometheus_rules(section: SLOSection) -> str:
    """Every SLO's rule group as a Prometheus rules file (YAML)."""
    groups = [slo_group(objective, section.time_scale) for objective in section.objectives]
    return yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000)
