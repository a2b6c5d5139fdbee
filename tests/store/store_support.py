"""Helpers for the record store tests: test databases of each kind, sample records."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg

from switchgear.store import open_store
from switchgear.store.base import RecordStore
from switchgear.store.records import RequestRecord

from servers import POSTGRES_URL

#: Upper bound, in seconds, on any single wait in these tests.
WAIT = 30.0

BASE_RECORD = RequestRecord(
    request_id="req-0",
    tenant="acme",
    model="smollm2",
    deployment="embedded",
    operation="chat",
    stream=False,
    received_at=1_700_000_000.0,
    first_token_at=1_700_000_000.25,
    done_at=1_700_000_001.5,
    prompt_tokens=12,
    completion_tokens=34,
    status=200,
    error_type=None,
    truncated=False,
    attempts=1,
    cost=0.000123,
)


def make_record(number: int, **changes: Any) -> RequestRecord:
    """A distinct record: request id ``req-<number>``, received ``number`` ms after the base."""
    return replace(
        BASE_RECORD,
        request_id=f"req-{number}",
        received_at=BASE_RECORD.received_at + number / 1000,
        **changes,
    )


@dataclass
class SchemaView:
    """What the database holds, read without the store: columns, index names, applied versions."""

    columns: list[str]
    indexes: set[str]
    versions: list[int]


@dataclass
class StoreBench:
    """Makes stores on one test database (a SQLite file or a PostgreSQL schema) and inspects it."""

    backend: str
    url: str
    path: Path | None = None
    schema: str | None = None
    made: list[RecordStore] = field(default_factory=list)

    def make(self) -> RecordStore:
        """A new, unopened store on this test's database."""
        store = open_store(self.url)
        self.made.append(store)
        return store

    async def opened(self) -> RecordStore:
        """A new store on this test's database, opened."""
        store = self.make()
        async with asyncio.timeout(WAIT):
            await store.open()
        return store

    async def inspect(self) -> SchemaView:
        """The request_log columns, its index names and the applied migration versions."""
        if self.path is not None:
            return await asyncio.to_thread(_inspect_sqlite, self.path)
        connection = await asyncpg.connect(POSTGRES_URL, timeout=WAIT)
        try:
            columns = await connection.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = $1 AND table_name = 'request_log' ORDER BY ordinal_position",
                self.schema,
            )
            indexes = await connection.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = "
                "'request_log'",
                self.schema,
            )
            versions = await connection.fetch(
                f"SELECT version FROM {self.schema}.schema_migrations ORDER BY version"
            )
        finally:
            await connection.close()
        return SchemaView(
            [row[0] for row in columns], {row[0] for row in indexes}, [row[0] for row in versions]
        )

    async def close_all(self) -> None:
        """Close every store made here."""
        for store in self.made:
            async with asyncio.timeout(WAIT):
                await store.close()


def _inspect_sqlite(path: Path) -> SchemaView:
    connection = sqlite3.connect(path)
    try:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(request_log)")]
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(request_log)")}
        versions = [row[0] for row in
                    connection.execute("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        connection.close()
    return SchemaView(columns, indexes, versions)


async def drop_schema(schema: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL, timeout=WAIT)
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await connection.close()
