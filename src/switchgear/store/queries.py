"""Read-side queries over the request log, for the admin API (tenant-scoped)."""

from __future__ import annotations

from switchgear.store.base import RecordStore
from switchgear.store.migrations import placeholders
from switchgear.store.records import COLUMNS, RequestRecord

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
