"""The record store in PostgreSQL, through a small asyncpg pool."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.exceptions._base import DataError as ArgumentError

from switchgear.store.base import (
    RecordRejected,
    RequestLogSQL,
    Statement,
    StoreUnavailable,
    describe_failure,
    redact_url,
    url_secrets,
)
from switchgear.store.migrations import (
    CREATE_SCHEMA_MIGRATIONS,
    SELECT_APPLIED_VERSIONS,
    Dialect,
    pending,
    record_applied,
)
from switchgear.store.partitions import create_ahead, expire_partitions
from switchgear.store.records import RequestRecord

log = logging.getLogger("switchgear.store")

SQL = RequestLogSQL.of("postgresql")
RECORD_MIGRATION = record_applied("postgresql")

#: A schema name the store accepts: a plain lower-case identifier, so it needs no quoting.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: Errors that mean "the database refused these values": a data exception (SQLSTATE class 22,
#: NUL in text for one), or a value the driver could not encode.
REJECTED = (asyncpg.DataError, ArgumentError)
#: Errors that mean "the database cannot be used now", as opposed to a bug in our SQL.
UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


#: Seconds a report's query may take: it scans a whole window (about 1.2 s per million rows
#: here), where the store's own bound (10 s) would refuse a day's report at 100 requests/s.
REPORT_TIMEOUT_S = 300.0
#: Seconds a migration may take (and a replica wait for another's): migration 15 copies the
#: whole request log into its partitions, about 7 s per million rows here.
MIGRATION_TIMEOUT_S = 3600.0


class PostgresStore:
    """A RecordStore in PostgreSQL at ``url``, in ``schema`` when given (created if missing)."""

    dialect: Dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_connections: int = 1,
        max_connections: int = 4,
        timeout: float = 10.0,
        report_timeout: float = REPORT_TIMEOUT_S,
        migration_timeout: float = MIGRATION_TIMEOUT_S,
    ) -> None:
        if schema is not None and not SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema must be a lower-case SQL identifier, got {schema!r}")
        self._url = url
        self.schema = schema
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.timeout = timeout
        self.report_timeout = report_timeout
        self.migration_timeout = migration_timeout
        self._secrets = url_secrets(url)
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self._url)!r}, schema={self.schema!r})"

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        if self._pool is not None:
            return
        settings = {"search_path": self.schema} if self.schema else {}
        async with self._mapped("open"):
            pool = await asyncpg.create_pool(
                self._url,
                min_size=self.min_connections,
                max_size=self.max_connections,
                timeout=self.timeout,
                command_timeout=self.timeout,
                server_settings=settings,
            )
            try:
                async with pool.acquire() as connection:
                    await self._migrate(connection)
                    await self._partitions_ahead(connection)
            except BaseException:
                pool.terminate()
                raise
        self._pool = pool

    async def write(self, records: Sequence[RequestRecord], *, backlog: int = 0) -> None:
        """Write a batch in one transaction; a record whose (request_id, received_at) is
        stored already is skipped (a retried batch: the writer sends the same records). The
        server writes it, so ``backlog`` changes nothing here."""
        if not records:
            return
        async with self._connection("write") as connection, connection.transaction():
            await connection.executemany(SQL.insert, [record.values() for record in records])

    async def ping(self) -> None:
        """Return if the database accepts writes now, else raise StoreUnavailable."""
        async with self._connection("ping") as connection, connection.transaction():
            await connection.execute(SQL.write_probe)

    async def fetch(self, limit: int | None = None) -> list[RequestRecord]:
        """Stored records, oldest ``received_at`` first, at most ``limit`` of them."""
        async with self._connection("fetch") as connection:
            if limit is None:
                rows = await connection.fetch(SQL.select)
            else:
                rows = await connection.fetch(SQL.select_limited, limit)
        return [RequestRecord(*row) for row in rows]

    async def count(self) -> int:
        """How many records are stored."""
        async with self._connection("count") as connection:
            count: int = await connection.fetchval(SQL.count)
        return count

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement in its own transaction; the rows it changed."""
        return await self.execute_all([(sql, params)])

    async def execute_all(self, statements: Sequence[Statement]) -> int:
        """Run ``statements`` in one transaction; the rows they changed."""
        changed = 0
        async with self._connection("execute") as connection, connection.transaction():
            for sql, params in statements:
                status: str = await connection.execute(sql, *params)
                last = status.rsplit(" ", 1)[-1]
                changed += int(last) if last.isdigit() else 0
        return changed

    async def rows(self, sql: str, params: Sequence[object] = (), *,
                   report: bool = False) -> list[tuple[Any, ...]]:
        """The rows a query returns, within ``report_timeout`` for a report, else ``timeout``."""
        async with self._connection("query") as connection:
            bound = self.report_timeout if report else self.timeout
            return [tuple(row) for row in await connection.fetch(sql, *params, timeout=bound)]

    async def prepare(self, now: float) -> None:
        """Make the daily partitions of today and the next few days that are missing."""
        async with self._connection("partition") as connection:
            await create_ahead(connection, now, self._lock("partitions"))

    async def expire(self, before: float) -> int:
        """Fold and drop the daily partitions that ended by ``before``, and the DEFAULT
        partition's rows from before it; nothing while another replica does it."""
        async with self._connection("expire") as connection:
            return await expire_partitions(connection, before, self._lock("retention"),
                                           self.report_timeout)

    async def _partitions_ahead(self, connection: Any) -> None:
        """Make the coming days' partitions at open. A table lock not had in time (a long
        report reading the DEFAULT partition) does not keep the store from opening: that
        partition takes their rows until the maintenance task makes them."""
        try:
            await create_ahead(connection, time.time(), self._lock("partitions"))
        except asyncpg.LockNotAvailableError as error:
            log.warning("request_log partitions for the coming days not made at open (the "
                        "store maintenance task will): %s", error)

    def _lock(self, what: str) -> str:
        """The name of this schema's advisory lock for ``what``."""
        return f"switchgear.{what}.{self.schema or 'public'}"

    async def close(self) -> None:
        """Close the pool, waiting at most ``timeout`` for connections in use."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with self._mapped("close"), asyncio.timeout(self.timeout):
                await pool.close()
        except StoreUnavailable:
            pool.terminate()
            raise

    async def _migrate(self, connection: Any) -> None:
        async with connection.transaction():
            # Replicas starting together must not apply the same migration twice.
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                                     self._lock("migrations"), timeout=self.migration_timeout)
            if self.schema and await connection.fetchval(
                "SELECT to_regnamespace($1) IS NULL", self.schema
            ):
                await connection.execute(f"CREATE SCHEMA {self.schema}")
            await connection.execute(CREATE_SCHEMA_MIGRATIONS["postgresql"])
            applied = [row[0] for row in await connection.fetch(SELECT_APPLIED_VERSIONS)]
            for migration in pending(applied):
                for statement in migration.statements("postgresql"):
                    await connection.execute(statement, timeout=self.migration_timeout)
                await connection.execute(
                    RECORD_MIGRATION, migration.version, migration.description, time.time()
                )

    @asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[Any]:
        if self._pool is None:
            raise StoreUnavailable(f"PostgreSQL store {redact_url(self._url)} is not open")
        async with self._mapped(what), self._pool.acquire(timeout=self.timeout) as connection:
            yield connection

    @asynccontextmanager
    async def _mapped(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except REJECTED as error:  # before UNAVAILABLE: a data exception is a PostgresError
            where = f"PostgreSQL {what} on {redact_url(self._url)}"
            raise RecordRejected(describe_failure(where, error, self._secrets)) from None
        except UNAVAILABLE as error:
            where = f"PostgreSQL {what} on {redact_url(self._url)}"
            raise StoreUnavailable(describe_failure(where, error, self._secrets)) from None
