"""Admin endpoints the operator console reads beside the rest of the admin API: who a key is
(``/admin/whoami``), traffic, errors, tokens and latency over time (``/admin/overview``), the
spending budgets and how close each is (``/admin/budgets``) and the scorecard
(``/admin/scorecard``). Roles, tenant scoping and the audit of each access are AdminAPI's."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from switchgear.admission.budgets import Budget, period_bounds
from switchgear.admission.budgets import Period as BudgetPeriod
from switchgear.admission.keys import Role
from switchgear.errors import InvalidRequest
from switchgear.gateway.admin import ADMINS, READERS, AdminAPI, _query
from switchgear.gateway.http import Receive, Scope, Send, send_json, whole_number
from switchgear.ledger.rollup import bucket
from switchgear.percentiles import METHOD
from switchgear.scorecard.categories import score
from switchgear.scorecard.gather import from_store
from switchgear.scorecard.report import as_json
from switchgear.store.base import RecordStore
from switchgear.store.queries import Period, where
from switchgear.telemetry.latency import GROUPS, PERCENTILES, GroupLatency, latency_by_group

#: Every role: any valid key may ask who it is.
ANY_ROLE = frozenset(Role)
#: The overview's window when none is asked for (an hour), and the longest it may be (31 days).
DEFAULT_WINDOW_S, MAX_WINDOW_S = 3600.0, 31 * 86400.0
#: The most buckets an overview has (each bucket with successes is one percentile query).
MAX_BUCKETS = 500
#: Buckets per window when bucket_s is not given.
DEFAULT_BUCKETS = 60
#: The latency measures the overview charts.
OVERVIEW_MEASURES = ("e2e_s", "ttft_s")
#: The scorecard's records window when none is asked for (30 days, as the CLI's), and the most.
SCORECARD_WINDOW_S, MAX_SCORECARD_WINDOW_S = 30 * 86400.0, 366 * 86400.0
#: What a request without a value, or with an empty one, in the grouping column is listed as.
NONE, EMPTY = "(none)", "(empty)"


class InsightAdmin:
    """The console's read endpoints over the admin API's state and checks."""

    def __init__(self, admin: AdminAPI) -> None:
        self.admin = admin

    async def whoami(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/whoami: the caller's key as the admin API shows keys (never its secret),
        or ``open: true`` when the gateway runs without keys (everything is open then)."""
        key = await self.admin.caller(scope, ANY_ROLE)
        identity: dict[str, Any] = ({"open": True, "role": Role.ADMIN.value, "tenant": None}
                                    if key is None else {"open": False, **key.public()})
        await send_json(send, 200, {"object": "identity", **identity}, request_id)

    async def overview(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/overview[?window_s=3600&bucket_s=60&group_by=model&tenant=T]: per bucket
        and group, requests, errors (status 400 and above), tokens, cost and the exact nearest-rank
        p50/p95/p99 of e2e and TTFT of the successful requests; the same over the whole window
        per group and in total (tenant-scoped as /admin/latency)."""
        key = await self.admin.caller(scope, READERS)
        query = _query(scope)
        tenant = self.admin.tenant_scope(key, query.get("tenant"))
        group = query.get("group_by", "model")
        if group not in GROUPS:
            raise InvalidRequest(f"group_by must be one of {list(GROUPS)}", param="group_by")
        window = _seconds(query, "window_s", DEFAULT_WINDOW_S, MAX_WINDOW_S)
        bucket_s = _bucket_seconds(query.get("bucket_s"), window)
        report = await overview_report(self.admin.state.store, time.time(), window, bucket_s,
                                       group, tenant)
        await send_json(send, 200, report, request_id)

    async def budgets(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/budgets[?tenant=T]: every spending budget that applies (each tenant's
        and each active key's, from the config and the keys' own), with what was spent in the
        current UTC day and month and how close that is to the limit (operators and viewers:
        their tenant's)."""
        key = await self.admin.caller(scope, READERS)
        tenant = self.admin.tenant_scope(key, _query(scope).get("tenant"))
        state = self.admin.state
        quotas = state.quotas
        budgets: dict[str, tuple[Budget, str | None]] = {}
        for name in state.config.limits.budgets.tenants:
            if tenant is None or name == tenant:
                for budget in quotas.budgets_for(None, name):
                    budgets[budget.scope] = (budget, name)
        for api_key in state.keys.all():
            if api_key.revoked_at is None and (tenant is None or api_key.tenant == tenant):
                for budget in quotas.budgets_for(api_key.key_id, api_key.tenant):
                    if budget.scope.startswith("key:"):
                        budgets[budget.scope] = (budget, api_key.tenant)
        now = time.time()
        data = []
        for scope_name, (budget, owner) in sorted(budgets.items()):
            spent = await quotas.budgets.spent(budget)
            for period in BudgetPeriod:
                limit = budget.limit(period)
                if limit is None:
                    continue
                used = spent.get(period, 0.0)
                label, ends = period_bounds(period, now)
                data.append({"scope": scope_name, "tenant": owner, "period": period.value,
                             "period_id": label, "resets_at": ends, "limit": limit,
                             "spent": used, "used": used / limit if limit else None,
                             "soft": budget.soft,
                             "state": _budget_state(used, limit, budget.soft)})
        await send_json(send, 200, {"object": "list", "currency": state.config.ledger.currency,
                                    "tenant": tenant, "data": data}, request_id)

    async def scorecard(self, scope: Scope, receive: Receive, send: Send,
                        request_id: str) -> None:
        """GET /admin/scorecard[?window_s=2592000]: the scorecard ``switchgear scorecard``
        prints, from the live config version and the records of the window, each category with
        its evidence and what would raise it. Admins only: its evidence spans every tenant's
        records, the keys and the audit trail (which only admins may read)."""
        await self.admin.caller(scope, ADMINS)
        window = _seconds(_query(scope), "window_s", SCORECARD_WINDOW_S, MAX_SCORECARD_WINDOW_S)
        state = self.admin.state
        evidence = await from_store(state.store, state.config, window, time.time(),
                                    "the gateway's running config", None)
        card = score(evidence)
        await send_json(send, 200, {"object": "scorecard", "window_s": window,
                                    **as_json(card, evidence)}, request_id)


def _budget_state(spent: float, limit: float, soft: float) -> str:
    """``over`` at the hard limit, ``warning`` past the soft one, else ``ok``."""
    if spent >= limit:
        return "over"
    return "warning" if spent >= soft * limit else "ok"


def _seconds(query: dict[str, str], name: str, default: float, most: float) -> float:
    """A positive number of seconds from the query, at most ``most``; a 400 otherwise."""
    try:
        seconds = float(query.get(name, default))
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= most:
        raise InvalidRequest(f"{name} must be a positive number of seconds, at most {most:g}",
                             param=name)
    return seconds


def _bucket_seconds(given: str | None, window: float) -> int:
    """The bucket length: ``given`` (whole seconds), else the window in DEFAULT_BUCKETS; a 400
    when it is not a whole number or would make more than MAX_BUCKETS buckets."""
    if given is None:
        return max(1, math.ceil(window / DEFAULT_BUCKETS))
    if not whole_number(given) or int(given) < 1:
        raise InvalidRequest("bucket_s must be a whole number of seconds", param="bucket_s")
    seconds = int(given)
    if window / seconds > MAX_BUCKETS:
        raise InvalidRequest(f"bucket_s is too short for the window: at most {MAX_BUCKETS} "
                             f"buckets (at least {math.ceil(window / MAX_BUCKETS)} s)",
                             param="bucket_s")
    return seconds


async def overview_report(store: RecordStore, now: float, window_s: float, bucket_s: int,
                          group: str, tenant: str | None) -> dict[str, Any]:
    """The overview of the requests received from the start of the bucket holding
    ``now - window_s`` until ``now``: counts per (group, bucket) in one grouped query, the
    percentiles from telemetry/latency.py (per bucket with successes, per group and in total)."""
    first = math.floor((now - window_s) / bucket_s)
    last = math.floor(now / bucket_s)
    period = Period(first * bucket_s, now)
    counts = await _bucket_counts(store, period, bucket_s, group, tenant)
    starts = [number * bucket_s for number in range(first, last + 1)]
    keys = sorted({key for key, _ in counts})
    zero: tuple[float, ...] = (0, 0, 0, 0, 0, 0.0)
    series: dict[str, dict[str, Any]] = {
        key: {"key": key, "requests": [], "errors": [], "prompt_tokens": [],
              "completion_tokens": [], "cost": [],
              **{m: {f"p{p}": [] for p in PERCENTILES} for m in OVERVIEW_MEASURES}}
        for key in keys}
    for start in starts:
        number = start // bucket_s
        succeeded = any(counts.get((key, number), zero)[4] for key in keys)
        latency = (await latency_by_group(store, Period(max(start, period.start),
                                                        min(start + bucket_s, now)),
                                          tenant, [group], OVERVIEW_MEASURES, PERCENTILES)
                   if succeeded and start < now else {})
        by_key = {_name(k[0]): v for k, v in latency.items()}
        for key in keys:
            requests, errors, prompt, completion, _, cost = counts.get((key, number), zero)
            line = series[key]
            for name, value in (("requests", requests), ("errors", errors),
                                ("prompt_tokens", prompt), ("completion_tokens", completion),
                                ("cost", cost)):
                line[name].append(value)
            for measure in OVERVIEW_MEASURES:
                summary = by_key[key].measures[measure] if key in by_key else None
                for p in PERCENTILES:
                    line[measure][f"p{p}"].append(None if summary is None
                                                  else summary[f"p{p}"])
    whole = {_name(k[0]): v for k, v in (await latency_by_group(
        store, period, tenant, [group], OVERVIEW_MEASURES, PERCENTILES)).items()}
    overall = await latency_by_group(store, period, tenant, [], OVERVIEW_MEASURES, PERCENTILES)
    groups = [_summary(period, key, [counts.get((key, number), zero)
                                     for number in range(first, last + 1)], whole.get(key))
              for key in keys]
    total = _summary(period, None, list(counts.values()), overall.get(()))
    return {"object": "overview", "method": METHOD, "exact": True,
            "percentiles": list(PERCENTILES), "since": period.start, "until": period.end,
            "window_s": window_s, "bucket_s": bucket_s, "tenant": tenant, "group_by": group,
            "total": total, "groups": groups, "buckets": starts,
            "bucket_seconds": [min(bucket_s, now - start) for start in starts],
            "series": list(series.values())}


def _name(value: Any) -> str:
    """A group's value as the overview names it: NONE for no value, EMPTY for an empty one
    (a request refused before its model was read); two raw values never share a name."""
    if value is None:
        return NONE
    return EMPTY if value == "" else str(value)


def _summary(period: Period, key: str | None, counts: Sequence[tuple[float, ...]],
             latency: GroupLatency | None) -> dict[str, Any]:
    """One group's (or, ``key`` None, every request's) figures over the whole period."""
    requests, errors, prompt, completion, succeeded, cost = (sum(c[i] for c in counts)
                                                             for i in range(6))
    measures = latency.measures if latency is not None else {}
    return {**({} if key is None else {"key": key}), "requests": requests, "errors": errors,
            "succeeded": succeeded, "error_rate": errors / requests if requests else None,
            "requests_per_s": requests / period.seconds,
            "prompt_tokens": prompt, "completion_tokens": completion,
            "tokens_per_s": (prompt + completion) / period.seconds,
            "completion_tokens_per_s": completion / period.seconds, "cost": cost,
            **{m: measures.get(m) for m in OVERVIEW_MEASURES}}


async def _bucket_counts(store: RecordStore, period: Period, bucket_s: int, group: str,
                         tenant: str | None) -> dict[tuple[str, int], tuple[float, ...]]:
    """(group, bucket number) → (requests, errors, prompt tokens, completion tokens,
    successes: whole numbers; cost), from one grouped query over the period."""
    clause, params = where(store, period, tenant)
    number = bucket(store.dialect, bucket_s)
    sql = (f"SELECT {group}, {number} AS b, COUNT(*), "
           "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(COALESCE(prompt_tokens, 0)), "
           "SUM(COALESCE(completion_tokens, 0)), SUM(CASE WHEN status = 200 THEN 1 ELSE 0 END), "
           f"SUM(COALESCE(cost, 0)) FROM request_log {clause} GROUP BY {group}, b")
    return {(_name(row[0]), int(row[1])): (*(int(value or 0) for value in row[2:7]),
                                           float(row[7] or 0))
            for row in await store.rows(sql, params, report=True)}
