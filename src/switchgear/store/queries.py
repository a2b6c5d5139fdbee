"""Read-side queries over the request log, for the admin API (tenant-scoped)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from switchgear.ledger.rollup import Period, where
from switchgear.store.base import RecordStore
from switchgear.store.migrations import placeholders
from switchgear.store.records import COLUMNS, RequestRecord
from switchgear.telemetry.latency import LatencyRow, rank

#: The most rows one call returns.
MAX_ROWS = 1000


async def recent_records(store: RecordStore, tenant: str | None, limit: int) -> list[RequestRecord]:
    """The newest records, of one tenant or of all (``tenant`` None), newest first."""
    limit = max(1, min(limit, MAX_ROWS))
    columns = ", ".join(COLUMNS)
    if tenant is None:
        mark = placeholders(store.dialect, 1)
        sql = f"SELECT {columns} FROM request_log ORDER BY received_at DESC LIMIT {mark}"
        params: tuple[object, ...] = (limit,)
    else:
        tenant_mark, limit_mark = placeholders(store.dialect, 2).split(", ")
        sql = (f"SELECT {columns} FROM request_log WHERE tenant = {tenant_mark} "
               f"ORDER BY received_at DESC LIMIT {limit_mark}")
        params = (tenant, limit)
    return [RequestRecord.of_row(row) for row in await store.rows(sql, params)]


#: The most rows a latency report reads (the newest, when the window holds more).
MAX_LATENCY_ROWS = 1_000_000


async def latency_rows(store: RecordStore, since: float, tenant: str | None,
                       limit: int = MAX_LATENCY_ROWS) -> list[LatencyRow]:
    """The successful requests received at or after ``since`` (seconds since the epoch), of one
    tenant or of all, newest first, at most ``limit``."""
    columns = ", ".join(field.name for field in fields(LatencyRow))
    marks = placeholders(store.dialect, 3 if tenant is not None else 2).split(", ")
    where = f"status = 200 AND received_at >= {marks[0]}"
    params: tuple[object, ...] = (since,)
    if tenant is not None:
        where += f" AND tenant = {marks[1]}"
        params += (tenant,)
    sql = (f"SELECT {columns} FROM request_log WHERE {where} "
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
