"""The record store in a SQLite file (WAL), driven from one worker thread it owns."""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from switchgear.store.base import (
    RecordRejected,
    RequestLogSQL,
    Statement,
    StoreUnavailable,
    describe_failure,
)
from switchgear.store.migrations import (
    CREATE_SCHEMA_MIGRATIONS,
    SELECT_APPLIED_VERSIONS,
    Dialect,
    pending,
    record_applied,
    statement_slices,
)
from switchgear.store.records import COLUMNS, RequestRecord
from switchgear.store.retention import fold

T = TypeVar("T")

SQL = RequestLogSQL.of("sqlite")

#: The whole batch in one multi-row statement, so the worker thread gives up the GIL once per
#: batch, not once per row (per-row handoffs stalled the event loop for milliseconds at each flush
#: under load: p99 4 ms against 0.7 ms, benchmarks/overhead). Bound parameters, not a JSON array
#: taken apart by json_extract: SQLite before 3.45 parses the row's JSON again for each column,
#: 38 us a row at 60 columns against 14 with parameters.
ROW_PLACEHOLDERS = "(" + ", ".join("?" * len(COLUMNS)) + ")"
#: Rows per statement: a power of two within SQLite's 32,766 bound parameters in one.
ROWS_PER_STATEMENT = 1 << ((32_766 // len(COLUMNS)).bit_length() - 1)


#: What a None is bound as: SQLite stores a NaN as NULL (it stores a NaN value itself as NULL
#: too), and the sqlite3 module binds a float at once where it takes None, and a bool, through
#: its adapter lookup: 280 and 400 ns a value against 50, 4 us of a row's 25.
NULL = math.nan


def parameters(records: Sequence[RequestRecord]) -> list[object]:
    """The values of ``records``, row after row, as the sqlite3 module binds them cheapest:
    None as NULL (NaN), a bool as the int SQLite stores for it."""
    return [NULL if value is None else int(value) if type(value) is bool else value
            for record in records for value in record.values()]


def insert_rows(count: int) -> str:
    """``INSERT`` of ``count`` rows, skipping request ids already stored."""
    return (f"INSERT INTO request_log ({', '.join(COLUMNS)}) VALUES "
            f"{', '.join([ROW_PLACEHOLDERS] * count)} ON CONFLICT DO NOTHING")


RECORD_MIGRATION = record_applied("sqlite")

#: Rows retention folds and deletes per transaction: the writer waits for one chunk at most.
EXPIRE_CHUNK_ROWS = 5000
#: The oldest chunk of rows received before a time (the same rows each time it is asked in
#: one transaction: the index on received_at orders them by (received_at, rowid)).
_OLDEST_ROWS = ("rowid IN (SELECT rowid FROM request_log WHERE received_at < ? "
                f"ORDER BY received_at, rowid LIMIT {EXPIRE_CHUNK_ROWS})")
FOLD_CHUNK = fold("sqlite", f"request_log WHERE {_OLDEST_ROWS}")
DELETE_CHUNK = f"DELETE FROM request_log WHERE {_OLDEST_ROWS}"

#: Seconds a batch may lag before the writer thread stops yielding, and yields again.
BEHIND_SECONDS = 2.0
CAUGHT_UP_SECONDS = 0.5
#: Records that may wait behind a batch before the writer thread stops yielding, and yields
#: again: the backlog's memory stays bounded (about 1 KiB a record) at any request rate.
BEHIND_RECORDS = 2048
CAUGHT_UP_RECORDS = 512
#: The writer thread's nice value while it yields: when the event loop wants the whole core
#: the thread still gets a tenth of it (about 5,000 rows a second), in short slices.
YIELDING_NICE = 10

#: Seconds between tries to switch a new file to WAL while another connection holds it.
WAL_SWITCH_PAUSE = 0.01


class WriterPriority:
    """Keeps the writer thread out of the event loop's way without letting records pile up.

    On one core, a writer at normal priority gets whole kernel time slices while requests wait:
    p99 4 ms against 0.4 ms without writes (benchmarks/overhead). So the thread yields (nice
    ``YIELDING_NICE``) while batches arrive fresh: it runs in the gaps between requests, and in
    short slices of a tenth of the core when there are none. When batches arrive late or many
    records wait behind them, it competes normally (where the process may raise a thread's
    priority) until it has caught up. The count bounds the memory the waiting records hold:
    a 2-second lag alone let it follow the request rate (10,000 records at 5,000 req/s).

    Idle scheduling (SCHED_IDLE), used before, starved the thread in the middle of a batch
    while the loop kept the core busy, so it never reached the next batch to stop yielding.
    """

    def __init__(self) -> None:
        self.yielding = False

    def adjust(self, oldest: float, backlog: int = 0) -> None:
        """Set this thread's priority for a batch whose oldest record finished at ``oldest``,
        with ``backlog`` records waiting behind it."""
        lag = time.time() - oldest
        if self.yielding and (lag > BEHIND_SECONDS or backlog > BEHIND_RECORDS):
            self.yielding = not _set_nice(0)
        elif not self.yielding and lag < CAUGHT_UP_SECONDS and backlog <= CAUGHT_UP_RECORDS:
            self.yielding = _set_nice(YIELDING_NICE)


def _set_nice(value: int) -> bool:
    """Set this thread's nice value (Linux keeps one per thread); False where not allowed
    (an unprivileged process may yield but not take it back) or not supported."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), value)
    except (OSError, AttributeError):
        return False
    return True


class SQLiteConnection:
    """A sqlite3 connection to the store's file; every method blocks, so it runs on one thread."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.priority = WriterPriority()
        self.connection = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=True
        )
        try:
            self.connection.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self._enter_wal_mode(busy_timeout)
            self.connection.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:
            self.connection.close()
            raise

    def _enter_wal_mode(self, busy_timeout: float) -> None:
        # Switching a new file to WAL while another connection does the same can fail with
        # "database is locked" at once, without the busy handler; so wait here instead.
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self.connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(WAL_SWITCH_PAUSE)

    def migrate(self) -> None:
        """Apply the pending migrations in one transaction."""
        with self.transaction() as cursor:
            cursor.execute(CREATE_SCHEMA_MIGRATIONS["sqlite"])
            applied = [version for (version,) in cursor.execute(SELECT_APPLIED_VERSIONS)]
            for migration in pending(applied):
                for statement in migration.statements("sqlite"):
                    cursor.execute(statement)
                cursor.execute(
                    RECORD_MIGRATION, (migration.version, migration.description, time.time())
                )

    def write(self, records: Sequence[RequestRecord], backlog: int = 0) -> None:
        """Insert ``records`` in one transaction, skipping request ids already stored;
        ``backlog`` records wait behind them."""
        self.priority.adjust(min(record.done_at or record.received_at for record in records),
                             backlog)
        with self.transaction() as cursor:
            for rows in statement_slices(records, ROWS_PER_STATEMENT):
                cursor.execute(insert_rows(len(rows)), parameters(rows))

    def expire_chunk(self, before: float) -> int:
        """Fold the oldest chunk of rows received before ``before`` into the rollups and delete
        it, in one transaction; how many rows it held."""
        with self.transaction() as cursor:
            folded = sum(int(requests) for (requests,) in cursor.execute(FOLD_CHUNK, (before,)))
            cursor.execute(DELETE_CHUNK, (before,))
            if cursor.rowcount != folded:
                raise sqlite3.IntegrityError(f"folded {folded} rows but deleted {cursor.rowcount}")
        return folded

    def probe(self) -> None:
        """Take the write lock with a write that changes nothing."""
        with self.transaction() as cursor:
            cursor.execute(SQL.write_probe)

    def fetch(self, limit: int | None) -> list[RequestRecord]:
        """Stored records, oldest first."""
        if limit is None:
            rows = self.connection.execute(SQL.select).fetchall()
        else:
            rows = self.connection.execute(SQL.select_limited, (limit,)).fetchall()
        return [RequestRecord.of_row(row) for row in rows]

    def execute_all(self, statements: Sequence[Statement]) -> int:
        """Run ``statements`` in one transaction; the rows they changed."""
        changed = 0
        with self.transaction() as cursor:
            for sql, params in statements:
                cursor.execute(sql, tuple(params))
                changed += max(cursor.rowcount, 0)
        return changed

    def rows(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """The rows of a query."""
        return [tuple(row) for row in self.connection.execute(sql, tuple(params)).fetchall()]

    def count(self) -> int:
        """How many records are stored."""
        (count,) = self.connection.execute(SQL.count).fetchone()
        return int(count)

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()

    def transaction(self) -> _Transaction:
        """``with`` block: BEGIN IMMEDIATE, then COMMIT, or ROLLBACK on error."""
        return _Transaction(self.connection)


class _Transaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Cursor:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection.cursor()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


class SQLiteStore:
    """A RecordStore in the SQLite file at ``path``; the event loop never waits on the disk."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._connection: SQLiteConnection | None = None

    async def open(self) -> None:
        """Open (or create) the file and apply pending migrations."""
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="switchgear-sqlite")
        try:
            connection = await self._run_on(executor, "open", self._connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor, self._connection = executor, connection

    async def write(self, records: Sequence[RequestRecord], *, backlog: int = 0) -> None:
        """Write a batch in one transaction; a request id already stored is skipped. The
        thread stops yielding while the batch is late or ``backlog`` is long."""
        if records:
            connection = self._opened()
            await self._call("write", partial(connection.write, records, backlog))

    async def ping(self) -> None:
        """Return if the file accepts writes now, else raise StoreUnavailable."""
        await self._call("ping", self._opened().probe)

    async def fetch(self, limit: int | None = None) -> list[RequestRecord]:
        """Stored records, oldest ``received_at`` first, at most ``limit`` of them."""
        return await self._call("fetch", partial(self._opened().fetch, limit))

    async def count(self) -> int:
        """How many records are stored."""
        return await self._call("count", self._opened().count)

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement in its own transaction; the rows it changed."""
        return await self.execute_all([(sql, params)])

    async def execute_all(self, statements: Sequence[Statement]) -> int:
        """Run ``statements`` in one transaction (one trip to the store's thread); the rows
        they changed."""
        return await self._call("execute", partial(self._opened().execute_all, statements))

    async def rows(self, sql: str, params: Sequence[object] = (), *,
                   report: bool = False) -> list[tuple[Any, ...]]:
        """The rows a query returns (no bound, ``report`` or not: a local file has no server to
        wait on, and the query runs on the store's thread, not the event loop)."""
        return await self._call("query", partial(self._opened().rows, sql, params))

    async def prepare(self, now: float) -> None:
        """Nothing to make ahead: SQLite has no partitions."""

    async def expire(self, before: float) -> int:
        """Fold the rows received before ``before`` into the rollups and delete them, a chunk
        per transaction (writes go on between chunks); how many were folded."""
        folded = 0
        while True:
            chunk = await self._call("expire", partial(self._opened().expire_chunk, before))
            folded += chunk
            if chunk < EXPIRE_CHUNK_ROWS:
                return folded

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        executor, connection = self._executor, self._connection
        self._executor = self._connection = None
        if executor is None or connection is None:
            return
        try:
            await self._run_on(executor, "close", connection.close)
        finally:
            executor.shutdown(wait=False)

    def _connect(self) -> SQLiteConnection:
        connection = SQLiteConnection(self.path, self.busy_timeout)
        try:
            connection.migrate()
        except BaseException:
            connection.close()
            raise
        return connection

    def _opened(self) -> SQLiteConnection:
        if self._connection is None:
            raise StoreUnavailable(f"SQLite store {self.path} is not open")
        return self._connection

    async def _call(self, what: str, work: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreUnavailable(f"SQLite store {self.path} is not open")
        return await self._run_on(self._executor, what, work)

    async def _run_on(self, executor: ThreadPoolExecutor, what: str, work: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, work)
        except (sqlite3.DataError, UnicodeEncodeError) as error:  # a value it cannot take
            raise RecordRejected(describe_failure(f"SQLite {what} on {self.path}", error)) from None
        except sqlite3.Error as error:
            raise StoreUnavailable(describe_failure(f"SQLite {what} on {self.path}", error)) from None
