"""Stored Responses (the OpenAI Responses API's ``store: true``): each response with the
conversation that led to it, per tenant, kept ``store.responses_retention_days``.

A row holds the whole conversation before the response (the responses it continued, and its own
input), so continuing it (``previous_response_id``) reads one row. Rows past retention are not
served, and the store's maintenance removes them (``expire_responses``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from switchgear.store.base import RecordStore
from switchgear.store.migrations import (
    STORED_RESPONSES,
    numbered,
    placeholders,
    statement_slices,
    values_rows,
)

RESPONSES_TABLE = "stored_responses"
SECONDS_PER_DAY = 86_400.0
#: Responses written by one statement at most (its bind parameters stay far below the limits
#: of both databases).
BATCH_ROWS = 64


#: A stored response's row: response id, tenant, creation time, model, then the conversation
#: items before it and the Response object, both as JSON (``response_row``).
ResponseRow = tuple[str, str, float, str, str, str]


def response_row(tenant: str, response: dict[str, Any], items: list[dict[str, Any]],
                 encoded: bytes | None = None) -> ResponseRow:
    """The row that stores ``response`` for ``tenant`` after the conversation ``items``;
    ``encoded`` is the response's JSON when the answer has made it already."""
    return (response["id"], tenant, float(response["created_at"]), response["model"],
            orjson.dumps(items).decode(), (encoded or orjson.dumps(response)).decode())


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A stored response and the conversation before it."""

    response: dict[str, Any]
    items: list[dict[str, Any]]

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """The items a request continuing this response starts from: those before it, then
        its output."""
        return [*self.items, *(self.response.get("output") or [])]


class StoredResponses:
    """Saves, reads and deletes stored responses of one tenant at a time; a response of another
    tenant, or one older than ``retention_days`` (None: kept for ever), is not there."""

    def __init__(self, store: RecordStore, retention_days: int | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.retention_days = retention_days
        self.clock = clock
        dialect = store.dialect
        self._columns = ", ".join(column.name for column in STORED_RESPONSES)
        self._select = numbered(dialect, f"SELECT items, response FROM {RESPONSES_TABLE} "
                                          "WHERE response_id = ? AND tenant = ? "
                                          "AND created_at >= ?")
        self._delete = numbered(dialect, f"DELETE FROM {RESPONSES_TABLE} "
                                          "WHERE response_id = ? AND tenant = ? "
                                          "AND created_at >= ?")

    def _oldest(self) -> float:
        """The creation time of the oldest response still kept."""
        if self.retention_days is None:
            return float("-inf")
        return self.clock() - self.retention_days * SECONDS_PER_DAY

    async def save(self, tenant: str, response: dict[str, Any],
                   items: list[dict[str, Any]]) -> None:
        """Store ``response`` for ``tenant``, after the conversation ``items``."""
        await self.save_many([response_row(tenant, response, items)])

    async def save_many(self, rows: Sequence[ResponseRow]) -> None:
        """Store ``rows`` in one transaction: a statement per ``BATCH_ROWS``."""
        width = len(STORED_RESPONSES)
        await self.store.execute_all([(
            f"INSERT INTO {RESPONSES_TABLE} ({self._columns}) VALUES "
            f"{values_rows(self.store.dialect, width, len(batch))}",
            [value for row in batch for value in row])
            for batch in statement_slices(rows, BATCH_ROWS)])

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        """``tenant``'s response ``response_id``, if stored and within retention."""
        rows = await self.store.rows(self._select, (response_id, tenant, self._oldest()))
        if not rows:
            return None
        items, response = rows[0]
        return StoredResponse(orjson.loads(response), orjson.loads(items))

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Remove ``tenant``'s response ``response_id``; whether there was one."""
        return await self.store.execute(self._delete,
                                        (response_id, tenant, self._oldest())) > 0


async def expire_responses(store: RecordStore, before: float) -> int:
    """Remove the stored responses created before ``before``; how many."""
    return await store.execute(
        f"DELETE FROM {RESPONSES_TABLE} WHERE created_at < {placeholders(store.dialect, 1)}",
        (before,))
