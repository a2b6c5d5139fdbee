"""GET /admin/batches: the Batch API's batches as the operator console shows them, across
tenants for an admin (the caller's own tenant for anyone else): status, request counts,
throughput, what the batch's requests cost so far, and when it was created and finished.

The batches and their lines are the Batch API's tables (``batches``, ``batch_lines``); the cost
is the request log's, summed over the requests each line's last attempt made (a line's
``request_id``), so it is what the ledger charged, batch discount included, and it follows the
record writer by a moment.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from switchgear.errors import InvalidRequest
from switchgear.gateway.admin import READERS, AdminAPI, _query
from switchgear.gateway.http import Receive, Scope, Send, send_json, whole_number
from switchgear.store.base import RecordStore

#: The query parameters GET /admin/batches takes; any other is refused.
BATCH_FILTERS = ("tenant", "status", "limit")
#: The statuses a batch can have (OpenAI's), the ones a filter may name.
STATUSES = ("validating", "failed", "in_progress", "finalizing", "completed", "expired",
            "cancelling", "cancelled")
#: When a batch in each final status finished (the column holding it).
FINISHED_AT = {"completed": "completed_at", "failed": "failed_at", "expired": "expired_at",
               "cancelled": "cancelled_at"}
#: Batches listed when no limit is asked for, and the most one page holds.
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
#: The longest tenant name a filter may carry.
MAX_TENANT = 200
COLUMNS = ("batch_id", "tenant", "key_id", "endpoint", "status", "created_at", "in_progress_at",
           "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
           "cancelled_at", "expires_at", "total", "completed", "failed", "metadata")


class _Marks:
    """Bound parameters in the store's dialect, numbered as they are added."""

    def __init__(self, store: RecordStore) -> None:
        self.sqlite = store.dialect == "sqlite"
        self.params: list[object] = []

    def mark(self, value: object) -> str:
        """A placeholder bound to ``value``."""
        self.params.append(value)
        return "?" if self.sqlite else f"${len(self.params)}"


class BatchesAdmin:
    """The /admin/batches endpoint."""

    def __init__(self, admin: AdminAPI) -> None:
        self.admin = admin

    async def batches(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/batches[?tenant&status&limit]: the newest batches first, each with its
        request counts, lines a second, cost and times (``finished_at``: when it reached a final
        status, else null)."""
        key = await self.admin.caller(scope, READERS)
        query = _query(scope)
        unknown = sorted(set(query) - set(BATCH_FILTERS))
        if unknown:
            raise InvalidRequest(f"unknown parameter {unknown[0]!r}; /admin/batches takes "
                                 f"{', '.join(BATCH_FILTERS)}", param=unknown[0])
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
        limit = query.get("limit", str(DEFAULT_LIMIT))
        if not whole_number(limit) or not 1 <= int(limit) <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}",
                                 param="limit")
        requested = query.get("tenant") or None
        if requested is not None and len(requested) > MAX_TENANT:
            raise InvalidRequest(f"tenant is longer than {MAX_TENANT} characters",
                                 param="tenant")
        tenant = self.admin.tenant_scope(key, requested)
        store = self.admin.state.store
        rows = await _batch_rows(store, tenant, status, int(limit))
        costs = await _costs(store, [row[0] for row in rows])
        now = time.time()
        data = [_described(dict(zip(COLUMNS, row, strict=True)), costs, now) for row in rows]
        await send_json(send, 200, {"object": "list", "data": data, "as_of": now,
                                    "currency": self.admin.state.config.ledger.currency},
                        request_id)


async def _batch_rows(store: RecordStore, tenant: str | None, status: str | None,
                      limit: int) -> list[tuple[Any, ...]]:
    marks = _Marks(store)
    tests = [f"{column} = {marks.mark(value)}"
             for column, value in (("tenant", tenant), ("status", status)) if value is not None]
    where = f"WHERE {' AND '.join(tests)} " if tests else ""
    sql = (f"SELECT {', '.join(COLUMNS)} FROM batches {where}"
           f"ORDER BY created_at DESC, batch_id DESC LIMIT {marks.mark(limit)}")
    return await store.rows(sql, marks.params)


async def _costs(store: RecordStore, batch_ids: Sequence[str]) -> dict[str, tuple[float, int]]:
    """Per batch, the cost its lines' recorded requests were charged and how many are
    recorded."""
    if not batch_ids:
        return {}
    marks = _Marks(store)
    listed = ", ".join(marks.mark(batch_id) for batch_id in batch_ids)
    rows = await store.rows(
        "SELECT l.batch_id, COALESCE(SUM(r.cost), 0), COUNT(r.request_id) FROM batch_lines l "
        "JOIN request_log r ON r.request_id = l.request_id "
        f"WHERE l.batch_id IN ({listed}) GROUP BY l.batch_id", marks.params, report=True)
    return {str(batch_id): (float(cost), int(count)) for batch_id, cost, count in rows}


def _described(row: dict[str, Any], costs: dict[str, tuple[float, int]], now: float
               ) -> dict[str, Any]:
    """One batch as the console lists it."""
    status = str(row["status"])
    column = FINISHED_AT.get(status)
    finished_at = row[column] if column else None
    started_at = row["in_progress_at"]
    done = int(row["completed"] or 0) + int(row["failed"] or 0)
    running_s = ((finished_at or now) - started_at) if started_at is not None else None
    cost, recorded = costs.get(str(row["batch_id"]), (0.0, 0))
    metadata = orjson.loads(row["metadata"]) if row["metadata"] else None
    return {
        "id": row["batch_id"], "tenant": row["tenant"], "key_id": row["key_id"],
        "endpoint": row["endpoint"], "status": status,
        "request_counts": {"total": int(row["total"] or 0),
                           "completed": int(row["completed"] or 0),
                           "failed": int(row["failed"] or 0)},
        "progress": done / row["total"] if row["total"] else None,
        "lines_per_s": done / running_s if running_s and running_s > 0 else None,
        "cost": cost, "recorded_requests": recorded,
        "created_at": row["created_at"], "in_progress_at": started_at,
        "finished_at": finished_at, "expires_at": row["expires_at"],
        "cancelling_at": row["cancelling_at"], "metadata": metadata,
    }
