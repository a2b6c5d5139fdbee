"""Rollups of the ledger (the costed request log): per tenant, feature, model, deployment or day,
over a period, with unit economics; the same SQL on SQLite and PostgreSQL.

Every sum reads two sources in one query: the request log's rows, and the hourly rollups of the
rows retention removed (``store.retention_days``). A request is in exactly one of them, so the
totals over any period hold before and after retention; a rollup hour counts when it starts in
the period, and what needs each request's own time (peaks, bursts) reads only the rows."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from switchgear.store.base import RecordStore
from switchgear.store.migrations import Dialect, placeholders
from switchgear.store.queries import DAY, Period, where
from switchgear.store.retention import ROLLUP_TABLE

HOUR = 3600

Dimension = Literal["tenant", "feature", "model", "deployment", "day"]
DIMENSIONS: tuple[Dimension, ...] = ("tenant", "feature", "model", "deployment", "day")

#: What a request without a value in a grouping column is listed as.
NONE = "(none)"

#: The alias that served a request (rows written before migration 10 have only the one asked for).
SERVED_ALIAS = "COALESCE(served_alias, model)"


def bucket(dialect: Dialect, seconds: int, time: str = "received_at") -> str:
    """SQL for the number of the ``seconds``-long bucket a record's ``time`` falls in."""
    if dialect == "sqlite":
        return f"CAST({time} / {seconds} AS INTEGER)"
    return f"FLOOR({time} / {seconds})::BIGINT"


@dataclass(frozen=True, slots=True)
class Source:
    """A table the ledger sums: ``time`` is the column a period bounds (a rollup's is its
    hour's start), ``weight`` the SQL for the requests one of its rows stands for."""

    table: str
    time: str
    weight: str


#: The request log: a row per request.
ROWS = Source("request_log", "received_at", "1")
#: The hourly rollups of the rows retention removed: a row per hour and group.
ROLLUPS = Source(ROLLUP_TABLE, "hour", "requests")


async def summed(store: RecordStore, keys: Callable[[Source], Sequence[str]],
                 sums: Sequence[str], period: Period, tenant: str | None, extra: str = ""
                 ) -> list[tuple[Any, ...]]:
    """Rows of (*keys, *sums) over ``period`` (of one tenant, unless None; ``extra`` ANDed to
    the WHERE clause), summed from the rows and the rollups in one query (one snapshot):
    ``keys(source)`` are a source's grouping expressions, ``sums`` aggregates in which
    ``{w}`` stands for the source's weight. Ordered by the keys."""
    branches: list[str] = []
    params: tuple[object, ...] = ()
    for source in (ROWS, ROLLUPS):
        clause, params = where(store, period, tenant, extra, time=source.time)
        key_columns = [f"{key} AS k{number}" for number, key in enumerate(keys(source))]
        sum_columns = [f"{sql.format(w=source.weight)} AS s{number}"
                       for number, sql in enumerate(sums)]
        grouped = (" GROUP BY " + ", ".join(f"k{number}" for number in range(len(key_columns)))
                   if key_columns else "")
        branches.append(f"SELECT {', '.join([*key_columns, *sum_columns])} "
                        f"FROM {source.table} {clause}{grouped}")
    names = [f"k{number}" for number in range(len(keys(ROWS)))]
    grouped = f" GROUP BY {', '.join(names)} ORDER BY {', '.join(names)}" if names else ""
    outer = ", ".join([*names, *(f"SUM(s{number})" for number in range(len(sums)))])
    sql = f"SELECT {outer} FROM ({' UNION ALL '.join(branches)}) AS facts{grouped}"
    # PostgreSQL's $n may be used twice; SQLite's ? are taken in order, once each.
    bound = params if store.dialect == "postgresql" else params * 2
    return await store.rows(sql, bound, report=True)


def iso(moment: float) -> str:
    """``moment`` as UTC ISO 8601 (``2026-01-31T00:00:00Z``)."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(dialect: Dialect, dimension: Dimension, time: str = "received_at") -> str:
    if dimension == "day":
        return bucket(dialect, DAY, time)
    column = {"deployment": f"{SERVED_ALIAS} || '/' || deployment"}.get(dimension, dimension)
    return f"COALESCE({column}, '{NONE}')"


@dataclass(frozen=True, slots=True)
class CostLine:
    """One group's requests, tokens and money, with its unit economics."""

    key: str
    requests: int
    failed: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: float
    saved_cost: float

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_per_request(self) -> float:
        """Cost / requests."""
        return self.cost / self.requests if self.requests else 0.0

    @property
    def cost_per_1k_requests(self) -> float:
        """Cost per 1,000 requests."""
        return self.cost_per_request * 1000

    @property
    def cost_per_million_tokens(self) -> float:
        """Cost per million prompt + completion tokens."""
        return self.cost / self.tokens * 1_000_000 if self.tokens else 0.0

    def report(self) -> dict[str, Any]:
        """As JSON."""
        return {"key": self.key, "requests": self.requests, "failed": self.failed,
                "cache_hits": self.cache_hits, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cached_tokens": self.cached_tokens,
                "cost": self.cost, "saved_cost": self.saved_cost,
                "cost_per_request": self.cost_per_request,
                "cost_per_1k_requests": self.cost_per_1k_requests,
                "cost_per_million_tokens": self.cost_per_million_tokens}


#: A CostLine's sums, ``{w}`` standing for the requests a row of the source stands for.
SUMS = ("SUM({w})", "SUM(CASE WHEN status >= 400 THEN {w} ELSE 0 END)",
        "SUM(CASE WHEN cache_status IN ('hit', 'coalesced') THEN {w} ELSE 0 END)",
        "SUM(prompt_tokens)", "SUM(completion_tokens)", "SUM(COALESCE(cached_tokens, 0))",
        "SUM(cost)", "SUM(COALESCE(saved_cost, 0))")


def _line(key: str, values: tuple[Any, ...]) -> CostLine:
    requests, failed, hits, prompt, completion, cached, cost, saved = values
    return CostLine(key, int(requests or 0), int(failed or 0), int(hits or 0), int(prompt or 0),
                    int(completion or 0), int(cached or 0), float(cost or 0), float(saved or 0))


def _label(dimension: Dimension, key: object) -> str:
    if dimension == "day":
        return iso(int(key) * DAY)[:10]  # type: ignore[call-overload]
    return str(key)


async def rollup(store: RecordStore, dimension: Dimension, period: Period,
                 tenant: str | None = None) -> list[CostLine]:
    """Requests, tokens and cost per ``dimension`` over ``period`` (of one tenant, unless None),
    in key order."""
    rows = await summed(store, lambda source: [_key(store.dialect, dimension, source.time)],
                        SUMS, period, tenant)
    return [_line(_label(dimension, row[0]), row[1:]) for row in rows]


async def total(store: RecordStore, period: Period, tenant: str | None = None) -> CostLine:
    """All requests of ``period`` (of one tenant, unless None) as one line."""
    rows = await summed(store, lambda source: [], SUMS, period, tenant)
    return _line("total", rows[0])


@dataclass(frozen=True, slots=True)
class Folded:
    """The requests of a period counted from the rollups, and the hours they cover."""

    requests: int
    first_hour: float
    last_hour: float


async def folded(store: RecordStore, period: Period, tenant: str | None = None
                 ) -> Folded | None:
    """How much of ``period`` (of one tenant, unless None) comes from the rollups; None when
    nothing does."""
    clause, params = where(store, period, tenant, time=ROLLUPS.time)
    ((requests, first, last),) = await store.rows(
        f"SELECT SUM(requests), MIN(hour), MAX(hour) FROM {ROLLUPS.table} {clause}", params)
    return None if not requests else Folded(int(requests), float(first), float(last))


async def series(store: RecordStore, dimension: Dimension, period: Period, seconds: int,
                 tenant: str | None = None) -> dict[str, list[tuple[float, float]]]:
    """Cost per ``seconds``-long bucket per group of ``dimension``: group → [(bucket start,
    cost)], every group with every bucket of the period (zero where it spent nothing)."""
    costs: dict[str, dict[int, float]] = {}
    for group, number, cost in await summed(
            store, lambda source: [_key(store.dialect, dimension, source.time),
                                   bucket(store.dialect, seconds, source.time)],
            ["SUM(cost)"], period, tenant):
        costs.setdefault(_label(dimension, group), {})[int(number)] = float(cost or 0)
    first, last = int(period.start // seconds), math.ceil(period.end / seconds) - 1
    return {group: [(number * seconds, spent.get(number, 0.0))
                    for number in range(first, last + 1)]
            for group, spent in sorted(costs.items())}


#: The default grain of a deployment's peak load: its busiest minute.
PEAK_GRAIN_S = 60


def peak_grain(seconds: object) -> int:
    """``seconds`` as a peak grain: a whole number of seconds, at least one, at most a day.
    Raises ValueError."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | str):
        raise ValueError("the peak grain must be a whole number of seconds")
    try:
        grain = int(seconds)
    except ValueError:
        raise ValueError("the peak grain must be a whole number of seconds") from None
    if not 1 <= grain <= DAY:
        raise ValueError(f"the peak grain must be from 1 to {DAY} seconds")
    return grain


@dataclass(frozen=True, slots=True)
class DeploymentUse:
    """What one deployment did over a period: requests served, their tokens, the seconds of
    instance time they took, what they were charged for tokens and for instance time, the peak
    load (per second, over its busiest ``peak_grain_s``) and the burst (per second, over the
    busiest single second of that busiest stretch)."""

    alias: str
    deployment: str
    requests: int
    tokens: int
    busy_s: float
    token_cost: float
    instance_cost: float
    peak_requests_per_s: float
    peak_tokens_per_s: float
    burst_requests_per_s: float = 0.0
    burst_tokens_per_s: float = 0.0
    peak_grain_s: int = PEAK_GRAIN_S


#: A deployment's requests, tokens, busy seconds, token cost and instance cost.
DEPLOYMENT_SUMS = (
    "SUM({w})", "SUM(prompt_tokens + completion_tokens)", "SUM(COALESCE(busy_s, 0))",
    "SUM(COALESCE(input_cost, 0) + COALESCE(cached_cost, 0) + COALESCE(output_cost, 0))",
    "SUM(COALESCE(instance_cost, 0))")


@dataclass(slots=True)
class _Sums:
    """One deployment's sums over the period, and its busiest buckets so far."""

    requests: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    token_cost: float = 0.0
    instance_cost: float = 0.0
    #: (requests, -bucket number) and (tokens, -bucket number) of the busiest bucket: the
    #: larger count wins, then the earlier bucket.
    busiest_by_requests: tuple[int, int] = (0, 0)
    busiest_by_tokens: tuple[int, int] = (0, 0)


async def deployment_use(store: RecordStore, period: Period, grain_s: int = PEAK_GRAIN_S
                         ) -> list[DeploymentUse]:
    """Per (served alias, deployment) over ``period``; the peak load is taken over buckets of
    ``grain_s`` seconds (cut to the period's length when that is shorter), the burst over the
    seconds of the busiest bucket (by requests, and by tokens)."""
    grain_s = max(1, min(peak_grain(grain_s), int(period.seconds)))

    def keys(source: Source) -> list[str]:
        # Rollups hold whole hours: no peak can be read from them (their bucket is NULL).
        grain = bucket(store.dialect, grain_s) if source is ROWS else "CAST(NULL AS BIGINT)"
        return [SERVED_ALIAS, "deployment", grain]

    sums: dict[tuple[str, str], _Sums] = {}
    for alias, deployment, number, requests, tokens, busy, token_cost, instance_cost in \
            await summed(store, keys, DEPLOYMENT_SUMS, period, None,
                         " AND deployment IS NOT NULL"):
        into = sums.setdefault((str(alias), str(deployment)), _Sums())
        into.requests += int(requests)
        into.tokens += int(tokens or 0)
        into.busy_s += float(busy or 0)
        into.token_cost += float(token_cost or 0)
        into.instance_cost += float(instance_cost or 0)
        if number is not None:
            into.busiest_by_requests = max(into.busiest_by_requests,
                                           (int(requests), -int(number)))
            into.busiest_by_tokens = max(into.busiest_by_tokens,
                                         (int(tokens or 0), -int(number)))
    uses = []
    for (alias, deployment), total in sorted(sums.items()):
        by_requests = -total.busiest_by_requests[1] * grain_s
        by_tokens = -total.busiest_by_tokens[1] * grain_s
        burst = ((0.0, 0.0) if not total.busiest_by_requests[0]
                 else await _busiest_second(store, period, alias, deployment, by_requests,
                                            by_tokens, grain_s))
        uses.append(DeploymentUse(
            alias, deployment, total.requests, total.tokens, total.busy_s, total.token_cost,
            total.instance_cost, total.busiest_by_requests[0] / grain_s,
            total.busiest_by_tokens[0] / grain_s, *burst, grain_s))
    return uses


async def _busiest_second(store: RecordStore, period: Period, alias: str, deployment: str,
                          by_requests: int, by_tokens: int, grain_s: int
                          ) -> tuple[float, float]:
    """The most requests in one second of the bucket starting at ``by_requests``, and the most
    tokens in one second of the one starting at ``by_tokens`` (each ``grain_s`` long)."""
    marks = placeholders(store.dialect, 4).split(", ")
    sql = (f"SELECT {bucket(store.dialect, 1)} AS b, COUNT(*), "
           "SUM(prompt_tokens + completion_tokens) FROM request_log "
           f"WHERE received_at >= {marks[0]} AND received_at < {marks[1]} "
           f"AND {SERVED_ALIAS} = {marks[2]} AND deployment = {marks[3]} GROUP BY b")

    async def seconds(start: int) -> list[tuple[int, int]]:
        window = (max(float(start), period.start), min(float(start + grain_s), period.end),
                  alias, deployment)
        return [(int(requests), int(tokens or 0))
                for _, requests, tokens in await store.rows(sql, window, report=True)]

    requests = await seconds(by_requests)
    tokens = requests if by_tokens == by_requests else await seconds(by_tokens)
    return (float(max((r for r, _ in requests), default=0)),
            float(max((t for _, t in tokens), default=0)))
