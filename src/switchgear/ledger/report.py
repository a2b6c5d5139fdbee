"""The cost report: rollups with unit economics, cost over time, self-hosted utilization and idle
cost, and what doubling the traffic would add; one JSON document, from the records and the
live config."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from switchgear.config import Config
from switchgear.ledger.cost import PriceBook
from switchgear.ledger.history import PriceHistory
from switchgear.ledger.marginal import InstanceTime, Sizer, doubling, rate_sizing
from switchgear.ledger.rollup import (
    HOUR,
    PEAK_GRAIN_S,
    DeploymentUse,
    Dimension,
    Folded,
    deployment_use,
    folded,
    iso,
    rollup,
    series,
    total,
)
from switchgear.store.base import RecordStore
from switchgear.store.queries import DAY, Period
from switchgear.store.retention import rows_dropped_before


def parse_instant(text: str) -> float:
    """Seconds since the epoch from a number of them or an ISO 8601 date or time (UTC unless
    it names a zone). Raises ValueError."""
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def period_of(since: str | None, until: str | None, now: float | None = None) -> Period:
    """The period from ``since`` to ``until`` (defaults: the 24 hours up to now)."""
    end = parse_instant(until) if until else (time.time() if now is None else now)
    start = parse_instant(since) if since else end - DAY
    return Period(start, end)


#: The most points a chart line gets (longer periods take longer buckets).
MAX_POINTS = 400


def chart_bucket(period: Period) -> int:
    """Seconds per chart point: an hour up to two days, else a day, or whole days enough to
    stay within MAX_POINTS."""
    if period.seconds <= 2 * DAY:
        return HOUR
    return DAY * max(1, math.ceil(period.seconds / DAY / MAX_POINTS))


async def cost_report(store: RecordStore, config: Config, period: Period, by: Dimension,
                      chart_by: Dimension, tenant: str | None = None,
                      peak_grain_s: int = PEAK_GRAIN_S,
                      versions: Sequence[tuple[float, Config]] | None = None,
                      sizer: Sizer = rate_sizing) -> dict[str, Any]:
    """The report over ``period``, grouped ``by`` one dimension, with cost over time per
    ``chart_by`` group; the doubling estimate takes each deployment's peak load over its busiest
    ``peak_grain_s`` seconds. Instance time is charged only while a deployment existed, by the
    config ``versions`` in force, (applied at, config) pairs: the one in force when the period
    starts and those applied in it (None: the live ``config`` over the whole period); ``sizer``
    says what twice the peak needs of a deployment's capacity (run in a thread: a planner's
    model may take a while). Limited
    to ``tenant`` unless None; only the whole-platform report has the deployments' instance
    time and the doubling estimate (they belong to no tenant)."""
    bucket_s = chart_bucket(period)
    lines = await rollup(store, by, period, tenant)
    report: dict[str, Any] = {
        "period": {"start": iso(period.start), "end": iso(period.end)},
        "currency": config.ledger.currency,
        "tenant": tenant,
        "by": by,
        "total": (await total(store, period, tenant)).report(),
        "lines": [line.report() for line in lines],
        "chart": {"by": chart_by, "bucket_s": bucket_s,
                  "series": await series(store, chart_by, period, bucket_s, tenant)},
        "peak": None,
        "instance_time": None,
        "deployments": None,
        "doubling": None,
        **_rollup_note(await folded(store, period, tenant), await rows_dropped_before(store)),
    }
    if tenant is None:
        history = PriceHistory.either(versions, PriceBook.of(config).prices, period)
        grain = min(peak_grain_s, max(1, int(period.seconds)))
        report["peak"] = {"grain_s": grain, "burst_grain_s": 1,
                          "basis": f"the busiest {grain} s of each deployment's requests; "
                                   "its busiest second beside it as the burst"}
        report["instance_time"] = {"basis": history.basis}
        report["deployments"], report["doubling"] = await _platform(store, config, period,
                                                                     grain, history, sizer)
        idle = sum(d["idle_cost"] or 0 for d in report["deployments"])
        report["total"]["idle_cost"] = idle
        report["total"]["cost_with_idle"] = report["total"]["cost"] + idle
    return report


def _rollup_note(part: Folded | None, dropped_before: float | None) -> dict[str, Any]:
    """What the report says of the requests it counted from the rollups."""
    if part is None or dropped_before is None:
        return {"from_rollups": False, "rollups": None}
    before = iso(dropped_before)
    return {"from_rollups": True, "rollups": {
        "requests": part.requests, "from": iso(part.first_hour),
        "until": iso(part.last_hour + HOUR), "rows_dropped_before": before,
        "note": f"rows received before {before} were removed by retention "
                "(store.retention_days): their requests, tokens and cost come from hourly "
                "rollups, each hour counted whole when it starts in the period; peaks, bursts "
                "and the doubling estimate read only the rows kept"}}


async def _platform(store: RecordStore, config: Config, period: Period, peak_grain_s: int,
                    history: PriceHistory, sizer: Sizer
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every deployment priced at some time in the period: its use and instance time; and the
    doubling estimate of each one the live config prices."""
    prices = PriceBook.of(config).prices
    capacities = {(alias, d.name): d.capacity for alias, model in config.models.items()
                  for d in model.deployments}
    uses = {(u.alias, u.deployment): u for u in await deployment_use(store, period,
                                                                     peak_grain_s)}
    deployments, doubled = [], []
    for where in sorted(prices.keys() | history.stretches.keys()):
        use = uses.get(where) or DeploymentUse(*where, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                               peak_grain_s=peak_grain_s)
        stretches = history.stretches.get(where, ())
        self_hosted = any(stretch.price.self_hosted for stretch in stretches)
        instance = (InstanceTime.over(stretches, use.busy_s, use.instance_cost)
                    if self_hosted else None)
        price = prices.get(where)
        deployments.append({
            "alias": use.alias, "deployment": use.deployment, "requests": use.requests,
            "tokens": use.tokens, "token_cost": use.token_cost,
            "instance_cost": use.instance_cost, "self_hosted": self_hosted,
            "live": price is not None,
            "instances": price.instances if price is not None and price.self_hosted else None,
            "existed_s": history.existed_s(where),
            "instance_time_cost": None if instance is None else instance.cost,
            "idle_cost": None if instance is None else instance.idle_cost,
            "utilization": None if instance is None else instance.utilization,
            "peak_requests_per_s": use.peak_requests_per_s,
            "peak_tokens_per_s": use.peak_tokens_per_s,
            "burst_requests_per_s": use.burst_requests_per_s,
            "burst_tokens_per_s": use.burst_tokens_per_s,
        })
        if price is not None:
            doubled.append((price, capacities.get(where), use, history.existed_s(where)))
    doublings = await asyncio.to_thread(
        lambda: [doubling(*args, sizer=sizer).report() for args in doubled])
    return deployments, doublings
