"""PostgreSQL's request_log partitioned by UTC day (migration 15): an existing table converted
with every row, rows in their day's partition or the DEFAULT one, partitions made ahead,
retention dropping whole partitions after folding them into rollups, and report queries that
read only the partitions their window covers (EXPLAIN)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from store_support import WAIT, make_record

from switchgear.config import parse_config
from switchgear.ledger.focus import focus_export
from switchgear.ledger.report import cost_report
from switchgear.store import open_store
from switchgear.store.base import RecordStore
from switchgear.store.migrations import (
    API_AND_CACHE_WRITES,
    CREATE_SCHEMA_MIGRATIONS,
    MIGRATIONS,
    PARTITION_SECONDS,
    record_applied,
)
from switchgear.store.partitions import DAYS_AHEAD, DEFAULT, partition_name
from switchgear.store.postgres import PostgresStore
from switchgear.store.queries import Period, RecordFilter, find_records, record_of
from switchgear.store.records import COLUMNS, RequestRecord
from switchgear.store.retention import ROLLUP_TABLE, cutoff
from switchgear.telemetry.latency import latency_report

from servers import POSTGRES_URL, drop_schema

pytestmark = pytest.mark.postgres

DAY = PARTITION_SECONDS
#: The last migration before request_log was partitioned.
UNPARTITIONED = 14


def at(text: str) -> float:
    """Epoch seconds of a UTC ISO 8601 time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@dataclass
class Schema:
    """A PostgreSQL schema of this test's, dropped after; stores opened on it are closed."""

    name: str
    stores: list[RecordStore] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{POSTGRES_URL}?schema={self.name}"

    async def store(self) -> RecordStore:
        """A store on this schema, opened."""
        store = open_store(self.url)
        self.stores.append(store)
        async with asyncio.timeout(WAIT):
            await store.open()
        return store

    async def connect(self) -> Any:
        """A connection of its own (not the store's), in this schema."""
        return await asyncpg.connect(POSTGRES_URL, timeout=WAIT,
                                     server_settings={"search_path": self.name})

    async def fetch(self, sql: str, *params: object) -> list[Any]:
        connection = await self.connect()
        try:
            return list(await connection.fetch(sql, *params))
        finally:
            await connection.close()

    async def partitions(self) -> set[str]:
        """The names of request_log's partitions."""
        return {row[0] for row in await self.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'request_log'::regclass")}

    async def placed(self) -> dict[str, str]:
        """Each stored request id → the partition that holds it."""
        return {row[0]: row[1] for row in await self.fetch(
            "SELECT request_id, tableoid::regclass::text FROM request_log")}

    async def rolled_up(self) -> int:
        """The requests the rollups stand for."""
        return int((await self.fetch(f"SELECT COALESCE(SUM(requests), 0) FROM {ROLLUP_TABLE}"))
                   [0][0])


@pytest.fixture
async def schema() -> AsyncIterator[Schema]:
    made = Schema(f"sg_test_{uuid.uuid4().hex}")
    try:
        yield made
    finally:
        for store in made.stores:
            await store.close()
        await drop_schema(made.name)


def received(number: int, moment: float) -> RequestRecord:
    """Record ``req-<number>``, received at ``moment`` and done 1.5 s later."""
    return replace(make_record(number), received_at=moment, first_token_at=moment + 0.25,
                   done_at=moment + 1.5)


def day_records(days: Sequence[float], per_day: int, first: int = 0) -> list[RequestRecord]:
    """``per_day`` records in each UTC day starting at ``days``, spread over the day."""
    return [received(first + index * per_day + number, start + (number + 0.5) * DAY / per_day)
            for index, start in enumerate(days) for number in range(per_day)]


async def test_an_unpartitioned_table_is_converted_with_every_row(schema: Schema) -> None:
    days = [at("2023-11-14T00:00:00") + number * DAY for number in range(5)]
    rows = day_records(days, 40)
    outliers = [received(900, 0.0),           # 1970-01-01: a day like any other
                received(901, -5.0),          # before the epoch: DEFAULT
                received(902, 3e11)]          # past year 9999: DEFAULT
    connection = await asyncpg.connect(POSTGRES_URL, timeout=WAIT)
    try:  # a database as version 14 of the schema left it, with rows
        await connection.execute(f"CREATE SCHEMA {schema.name}")
        await connection.execute(f"SET search_path = {schema.name}")
        await connection.execute(CREATE_SCHEMA_MIGRATIONS["postgresql"])
        for migration in MIGRATIONS[:UNPARTITIONED]:
            for statement in migration.statements("postgresql"):
                await connection.execute(statement)
            await connection.execute(record_applied("postgresql"), migration.version,
                                     migration.description, 0.0)
        later = {column.name for column in API_AND_CACHE_WRITES}  # added after version 14
        kept = [index for index, name in enumerate(COLUMNS) if name not in later]
        marks = ", ".join(f"${n}" for n in range(1, len(kept) + 1))
        await connection.executemany(
            f"INSERT INTO request_log ({', '.join(COLUMNS[i] for i in kept)}) VALUES ({marks})",
            [[record.values()[i] for i in kept] for record in [*rows, *outliers]])
    finally:
        await connection.close()

    store = await schema.store()

    assert await store.fetch() == sorted([*rows, *outliers],
                                         key=lambda r: (r.received_at, r.request_id))
    placed = await schema.placed()
    assert {placed[r.request_id] for r in rows} == {partition_name(day) for day in days}
    assert all(placed[r.request_id] == partition_name(r.received_at - r.received_at % DAY)
               for r in rows)
    assert placed["req-900"] == "request_log_p19700101"
    assert placed["req-901"] == placed["req-902"] == DEFAULT
    ((key,),) = await schema.fetch(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'request_log_pkey' "
        "AND connamespace = $1::regnamespace", schema.name)
    assert key == "PRIMARY KEY (request_id, received_at)"
    assert [version for (version,) in await schema.fetch(
        "SELECT version FROM schema_migrations ORDER BY version")] == \
        [migration.version for migration in MIGRATIONS]
    # What relies on the request id still holds: one record by its id, a write skipped.
    found = await record_of(store, rows[7].request_id, None)
    assert found == rows[7]
    await store.write([rows[7], received(903, days[0] + 60)])
    assert await store.count() == len(rows) + len(outliers) + 1


async def test_rows_land_in_their_days_partition_or_the_default_one(schema: Schema) -> None:
    store = await schema.store()
    now = time.time()
    today = now - now % DAY
    assert {partition_name(today + n * DAY) for n in range(DAYS_AHEAD + 1)} <= \
        await schema.partitions()
    ahead = today + DAYS_AHEAD * DAY
    records = [received(1, now), received(2, ahead + 10),
               received(3, at("2001-01-01T12:00:00")),
               received(4, at("2100-01-01T12:00:00")),
               received(5, ahead + DAY + 10)]  # beyond the days made ahead
    await store.write(records)
    placed = await schema.placed()
    assert placed == {"req-1": partition_name(today), "req-2": partition_name(ahead),
                      "req-3": DEFAULT, "req-4": DEFAULT, "req-5": DEFAULT}

    # A day's partition made later takes over the rows the DEFAULT partition held for it.
    await store.prepare(at("2100-01-01T00:00:00"))
    await store.prepare(ahead + DAY)
    placed = await schema.placed()
    assert placed["req-4"] == "request_log_p21000101"
    assert placed["req-5"] == partition_name(ahead + DAY)
    assert placed["req-3"] == DEFAULT
    assert await store.fetch() == sorted(records, key=lambda r: r.received_at)


async def past_days(store: RecordStore, first: float, count: int) -> list[float]:
    """Make the partitions of ``count`` UTC days from ``first`` (as a store running then
    would have); their starts."""
    days = [first + number * DAY for number in range(count)]
    for day in days:
        await store.prepare(day)
    return days


async def test_retention_drops_whole_partitions_after_folding_them(schema: Schema) -> None:
    store = await schema.store()
    days = await past_days(store, at("2026-03-01T00:00:00"), 10)
    records = day_records(days, 24)
    await store.write(records)
    before = cutoff(at("2026-03-10T12:00:00"), 3)
    assert before == at("2026-03-07T00:00:00")
    gone = [r for r in records if r.received_at < before]

    assert await store.expire(before) == len(gone) == 6 * 24

    partitions = await schema.partitions()
    assert not {partition_name(day) for day in days if day < before} & partitions
    assert {partition_name(day) for day in days if day >= before} <= partitions
    assert await store.count() == len(records) - len(gone)
    assert await schema.rolled_up() == len(gone)
    hours = await schema.fetch(f"SELECT DISTINCT hour FROM {ROLLUP_TABLE} ORDER BY hour")
    assert [row[0] for row in hours] == sorted({int(r.received_at // 3600 * 3600) for r in gone})

    # A late row for a day already gone lands in DEFAULT, and the next round folds it too.
    await store.write([received(5000, days[0] + 100)])
    assert (await schema.placed())["req-5000"] == DEFAULT
    assert await store.expire(before) == 1
    assert await schema.rolled_up() == len(gone) + 1
    assert "req-5000" not in await schema.placed()
    assert await store.expire(before) == 0


async def test_two_stores_expiring_at_once_fold_each_partition_once(schema: Schema) -> None:
    first, second = await schema.store(), await schema.store()
    days = await past_days(first, at("2026-03-01T00:00:00"), 8)
    await first.write(day_records(days, 50))
    before = at("2026-03-06T00:00:00")
    folded = await asyncio.gather(first.expire(before), second.expire(before),
                                  first.expire(before))
    assert sum(folded) == 5 * 50
    assert await schema.rolled_up() == 5 * 50
    assert await first.count() == 3 * 50


def scanned(plan: Any) -> list[str]:
    """The partitions of request_log (and request_log itself) a JSON plan reads."""
    names = []
    if isinstance(plan, dict):
        name = plan.get("Relation Name", "")
        if name == "request_log" or name.startswith("request_log_p") or name == DEFAULT:
            names.append(name)
        for value in plan.values():
            names += scanned(value)
    elif isinstance(plan, list):
        for value in plan:
            names += scanned(value)
    return names


class RecordingStore:
    """A store that notes every query it is asked (to EXPLAIN them after)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.dialect = store.dialect
        self.queries: list[tuple[str, tuple[object, ...]]] = []

    async def rows(self, sql: str, params: Sequence[object] = (), *,
                   report: bool = False) -> list[tuple[Any, ...]]:
        self.queries.append((sql, tuple(params)))
        return await self.store.rows(sql, params, report=report)


@pytest.mark.parametrize("plans", ["custom", "generic"])
async def test_a_days_report_reads_one_or_two_partitions(schema: Schema, plans: str) -> None:
    store = await schema.store()
    days = await past_days(store, at("2026-03-01T00:00:00"), 12)
    await store.write(day_records(days, 24))
    config = parse_config({"models": {"smollm2": {"deployments": [
        {"name": "embedded", "backend": "simulated"}]}}, "store": {"url": schema.url}})
    recording = RecordingStore(store)
    one_day = Period(at("2026-03-05T00:00:00"), at("2026-03-06T00:00:00"))
    across_midnight = Period(at("2026-03-05T10:00:00"), at("2026-03-06T10:00:00"))
    for period in (one_day, across_midnight):
        await cost_report(recording, config, period, "tenant", "model")  # type: ignore[arg-type]
        await latency_report(recording, period, None, ["model"])  # type: ignore[arg-type]
        await find_records(recording, RecordFilter(since=period.start,  # type: ignore[arg-type]
                                                    until=period.end, tenant="acme"), 50)
        await focus_export(recording, config.ledger, {}, period)  # type: ignore[arg-type]

    connection = await schema.connect()
    try:
        await connection.execute(f"SET plan_cache_mode = force_{plans}_plan")

        async def explain(sql: str, params: Sequence[object]) -> list[str]:
            plan = await connection.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params)
            return scanned(json.loads(plan))

        everything = await explain("SELECT count(*) FROM request_log", ())
        assert len(everything) == len(await schema.partitions()) >= 12 + 1
        read = [(sql, await explain(sql, params)) for sql, params in recording.queries
                if "FROM request_log " in sql]
    finally:
        await connection.close()
    assert len(read) >= 10
    for sql, partitions in read:
        assert 1 <= len(partitions) <= 2, (sql, partitions)
        assert set(partitions) <= {partition_name(day) for day in days[4:6]}, (sql, partitions)


async def test_record_lookups_and_duplicates_survive_partitioning(schema: Schema) -> None:
    store = await schema.store()
    days = await past_days(store, at("2026-03-01T00:00:00"), 3)
    kept = replace(received(1, days[1] + 5), prompt="hello", completion="hi")
    await store.write([kept])
    await store.write([replace(kept, tenant="someone-else", cost=99.0)])
    assert await store.fetch() == [kept]
    assert await record_of(store, "req-1", "acme") == kept
    assert await record_of(store, "req-1", "someone-else") is None


async def test_a_store_opens_while_a_report_holds_the_default_partition(
        schema: Schema, caplog: pytest.LogCaptureFixture) -> None:
    await (await schema.store()).close()
    now = time.time()
    last_ahead = partition_name(now - now % DAY + DAYS_AHEAD * DAY)
    await schema.fetch(f"DROP TABLE {last_ahead}")
    reader = await schema.connect()
    try:
        transaction = reader.transaction()
        await transaction.start()
        await reader.execute(f"LOCK TABLE {DEFAULT} IN ACCESS SHARE MODE")  # a long report
        store = await schema.store()  # cannot make the missing partition, opens all the same
        assert last_ahead not in await schema.partitions()
        assert "not made at open" in caplog.text
        await store.write([received(1, now)])
        await transaction.rollback()
    finally:
        await reader.close()
    await store.prepare(now)  # the maintenance task's round
    assert last_ahead in await schema.partitions()


async def test_a_migration_may_outlast_the_stores_own_timeout(schema: Schema) -> None:
    waiting = PostgresStore(POSTGRES_URL, schema=schema.name, timeout=0.5)
    schema.stores.append(waiting)
    other = await asyncpg.connect(POSTGRES_URL)  # another replica, migrating for over 0.5 s
    try:
        async with other.transaction():
            await other.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                                f"switchgear.migrations.{schema.name}")
            opening = asyncio.ensure_future(waiting.open())
            await asyncio.sleep(1.5)
            assert not opening.done()
    finally:
        await other.close()
    async with asyncio.timeout(WAIT):
        await opening
    assert [version for (version,) in await schema.fetch(
        "SELECT version FROM schema_migrations ORDER BY version")] == \
        [migration.version for migration in MIGRATIONS]
