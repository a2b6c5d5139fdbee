"""Latency percentiles from the request log: p50, p95 and p99 of end-to-end latency, time to
first token and time per output token, per model, deployment, tenant or feature.

The measures are the metrics' (telemetry/metrics.py), taken from each row's times: e2e =
done - received; TTFT = first token - received (the whole answer when not streamed); TPOT =
(done - first token) / (output tokens - 1), for streams of more than one output token. Only
requests that succeeded (status 200, cache hits included) count.

Percentiles are **nearest-rank** (switchgear/percentiles.py): of n values sorted ascending, the
p-th percentile is the value at 1-based rank ⌈p·n/100⌉, always a latency that was observed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from switchgear.percentiles import nearest_rank, rank
from switchgear.store.base import RecordStore
from switchgear.store.migrations import placeholders
from switchgear.store.queries import Period, where

#: The percentiles every report gives.
PERCENTILES = (50, 95, 99)
#: What a report can be grouped by (columns of the request log).
GROUPS = ("model", "deployment", "tenant", "feature")


def summary(values: list[float]) -> dict[str, Any] | None:
    """Count and nearest-rank percentiles of ``values`` in seconds; None when there are none."""
    if not values:
        return None
    values.sort()
    return {"count": len(values),
            **{f"p{p}": nearest_rank(values, p) for p in PERCENTILES}}


@dataclass(slots=True, frozen=True)
class LatencyRow:
    """The columns of one request-log row that the report reads."""

    model: str
    deployment: str | None
    tenant: str
    feature: str | None
    stream: bool
    received_at: float
    first_token_at: float | None
    done_at: float | None
    completion_tokens: int


def latency_report(rows: Iterable[LatencyRow], group_by: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per group (sorted by its key): the group's values, its request count and the
    e2e, TTFT and TPOT summaries (None where a measure has no value)."""
    groups: dict[tuple[str | None, ...], tuple[list[float], list[float], list[float]]] = {}
    for row in rows:
        key = tuple(getattr(row, name) for name in group_by)
        e2e, ttft, tpot = groups.get(key) or groups.setdefault(key, ([], [], []))
        done, first = row.done_at, row.first_token_at
        if done is not None:
            e2e.append(done - row.received_at)
        if first is not None:
            ttft.append(first - row.received_at)
            if row.stream and row.completion_tokens > 1 and done is not None:
                tpot.append((done - first) / (row.completion_tokens - 1))
    return [
        {**dict(zip(group_by, key, strict=True)), "requests": len(e2e),
         "e2e_s": summary(e2e), "ttft_s": summary(ttft), "tpot_s": summary(tpot)}
        for key, (e2e, ttft, tpot) in sorted(groups.items(), key=lambda item: str(item[0]))
    ]


#: The most rows a latency report reads (the newest, when the window holds more).
MAX_LATENCY_ROWS = 1_000_000


async def latency_rows(store: RecordStore, since: float, tenant: str | None,
                       limit: int = MAX_LATENCY_ROWS) -> list[LatencyRow]:
    """The successful requests received at or after ``since`` (seconds since the epoch), of one
    tenant or of all, newest first, at most ``limit``."""
    columns = ", ".join(field.name for field in fields(LatencyRow))
    marks = placeholders(store.dialect, 3 if tenant is not None else 2).split(", ")
    condition = f"status = 200 AND received_at >= {marks[0]}"
    params: tuple[object, ...] = (since,)
    if tenant is not None:
        condition += f" AND tenant = {marks[1]}"
        params += (tenant,)
    sql = (f"SELECT {columns} FROM request_log WHERE {condition} "
           f"ORDER BY received_at DESC LIMIT {marks[-1]}")
    return [_latency_row(row) for row in await store.rows(sql, (*params, limit))]


def _latency_row(row: tuple[Any, ...]) -> LatencyRow:
    """A row in LatencyRow's column order (SQLite's 0/1 ``stream`` becomes a bool)."""
    model, deployment, tenant, feature, stream, received, first, done, tokens = row
    return LatencyRow(model, deployment, tenant, feature, bool(stream), received, first, done,
                      tokens)


async def latency_percentile(store: RecordStore, period: Period, tenant: str | None,
                             percentile: int) -> float | None:
    """The nearest-rank ``percentile`` of end-to-end seconds of the successful requests
    received in ``period`` (of one tenant, unless None), found by the database (a count, then
    one row at that rank); None when there were none."""
    clause, params = where(store, period, tenant, " AND status = 200 AND done_at IS NOT NULL")
    rows = await store.rows(f"SELECT COUNT(*) FROM request_log {clause}", params)
    count = int(rows[0][0] or 0)
    if not count:
        return None
    offset = rank(count, percentile) - 1
    rows = await store.rows(f"SELECT done_at - received_at AS e2e FROM request_log {clause} "
                            f"ORDER BY e2e LIMIT 1 OFFSET {offset:d}", params)
    return float(rows[0][0]) if rows else None
