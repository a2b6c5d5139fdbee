"""The batched background writer: batches, order, a bound on what it holds, retries, draining."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import openai
import pytest
from store_support import POSTGRES_URL, WAIT, StoreBench

from switchgear.config import Config
from switchgear.store.base import RecordStore, StoreUnavailable
from switchgear.store.records import RequestRecord
from switchgear.store.writer import RecordWriter

from servers import fetch_records, gateway

MakeRecords = Callable[[int], list[RequestRecord]]


class SpyStore:
    """Passes everything to a real store and notes each batch written (a spy, not a fake)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.batches: list[list[RequestRecord]] = []
        #: The backlog the writer named with each batch.
        self.backlogs: list[int] = []
        self.writing = asyncio.Event()
        self.wrote = asyncio.Event()

    async def open(self) -> None:
        await self.store.open()

    async def write(self, records: Sequence[RequestRecord], *, backlog: int = 0) -> None:
        self.writing.set()
        await self.store.write(records, backlog=backlog)
        self.batches.append(list(records))
        self.backlogs.append(backlog)
        self.wrote.set()

    async def ping(self) -> None:
        await self.store.ping()

    async def fetch(self, limit: int | None = None) -> list[RequestRecord]:
        return await self.store.fetch(limit)

    async def count(self) -> int:
        return await self.store.count()

    async def close(self) -> None:
        await self.store.close()


class FlakyStore(SpyStore):
    """A fake outage: the first ``failures`` writes raise as a store that is down would, then
    writes reach the real store. A real database cannot be made to fail on cue this precisely."""

    def __init__(self, store: RecordStore, failures: int) -> None:
        super().__init__(store)
        self.failures_left = failures

    async def write(self, records: Sequence[RequestRecord], *, backlog: int = 0) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise StoreUnavailable("the database is down (simulated)")
        await super().write(records, backlog=backlog)


async def test_many_submits_become_few_full_batches(store: RecordStore, records: MakeRecords) -> None:
    spy = SpyStore(store)
    writer = RecordWriter(spy, batch_size=100, flush_interval=10.0)
    writer.start()
    submitted = records(1000)
    for record in submitted:
        writer.submit(record)
    async with asyncio.timeout(WAIT):
        await writer.close()
    assert [len(batch) for batch in spy.batches] == [100] * 10
    assert spy.backlogs == list(range(900, -1, -100))  # the store hears how many wait behind
    assert [record for batch in spy.batches for record in batch] == submitted
    assert await store.fetch() == submitted


async def test_close_writes_everything_submitted(store: RecordStore, records: MakeRecords) -> None:
    writer = RecordWriter(store)
    writer.start()
    submitted = records(5000)
    for record in submitted:
        writer.submit(record)
    assert writer.pending == 5000
    async with asyncio.timeout(WAIT):
        await writer.close()
    assert (writer.written, writer.pending, writer.failures) == (5000, 0, 0)
    assert await store.count() == 5000
    assert {r.request_id for r in await store.fetch()} == {r.request_id for r in submitted}


@contextmanager
def sqlite_write_lock(path: Path) -> Iterator[None]:
    """Hold the SQLite file's write lock: the store's writes wait out its busy timeout, then fail,
    until the lock is released."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


@asynccontextmanager
async def writes_held(bench: StoreBench) -> AsyncIterator[None]:
    """A real stalled store: the test database's write lock is held by another connection (the
    SQLite file's, or an exclusive lock on PostgreSQL's request_log) until the block ends."""
    if bench.path is not None:
        with sqlite_write_lock(bench.path):
            yield
        return
    connection = await asyncpg.connect(POSTGRES_URL, timeout=WAIT)
    try:
        async with connection.transaction():
            await connection.execute(
                f"LOCK TABLE {bench.schema}.request_log IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await connection.close()


async def overfill(writer: RecordWriter, spy: SpyStore, submitted: list[RequestRecord]) -> int:
    """Submit ``submitted``, the rest once the writer is stuck writing the first; the most
    records the writer held meanwhile."""
    spy.writing.clear()
    writer.submit(submitted[0])
    async with asyncio.timeout(WAIT):
        await spy.writing.wait()
    most = writer.pending
    for record in submitted[1:]:
        writer.submit(record)
        most = max(most, writer.pending)
        await asyncio.sleep(0)  # the writer may run: it must not make room by taking records
    return most


#: queue_size in the tests of a full writer.
QUEUE = 10


async def test_a_stalled_store_costs_at_most_queue_size_records_and_the_rest_are_dropped(
    bench: StoreBench, store: RecordStore, records: MakeRecords
) -> None:
    spy = SpyStore(store)
    writer = RecordWriter(spy, batch_size=4, flush_interval=0.01, queue_size=QUEUE)
    writer.start()
    submitted = records(QUEUE * 10)
    async with writes_held(bench):
        most = await overfill(writer, spy, submitted)
        assert (writer.pending, writer.dropped) == (QUEUE, QUEUE * 9)
    async with asyncio.timeout(WAIT):
        await writer.close()
    assert most == QUEUE
    assert (writer.written, writer.pending, writer.dropped) == (QUEUE, 0, QUEUE * 9)
    assert [record for batch in spy.batches for record in batch] == submitted[:QUEUE]
    assert await store.fetch() == submitted[:QUEUE]


async def test_a_full_writer_logs_one_error_per_spell_not_per_record(
    bench: StoreBench, store: RecordStore, records: MakeRecords, caplog: pytest.LogCaptureFixture
) -> None:
    spy = SpyStore(store)
    writer = RecordWriter(spy, batch_size=4, flush_interval=0.01, queue_size=QUEUE)
    writer.start()
    submitted = records(QUEUE * 20)
    for spell in (submitted[:QUEUE * 10], submitted[QUEUE * 10:]):
        async with writes_held(bench):
            await overfill(writer, spy, spell)
        async with asyncio.timeout(WAIT):
            await writer.drain()
    await writer.close()
    logged = [(entry.levelno, entry.getMessage()) for entry in caplog.records
              if entry.name == "switchgear.store.writer" and "request log" in entry.getMessage()]
    assert [level for level, _ in logged] == [logging.ERROR, logging.WARNING] * 2
    assert "caught up: 90 records dropped while it was full (90 in all)" in logged[1][1]
    assert "caught up: 90 records dropped while it was full (180 in all)" in logged[3][1]
    assert await store.count() == QUEUE * 2


def test_dropped_records_are_counted_on_metrics(make_config: Callable[..., Config]) -> None:
    simulated = {"deployments": [{"name": "local", "backend": "simulated",
                                  "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}
    config = make_config({"sim": simulated})
    config = config.model_validate({**config.model_dump(),
                                    "store": {**config.store.model_dump(), "queue_size": 1}})
    path = Path(config.store.url.removeprefix("sqlite:///"))
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk, sqlite_write_lock(path):
        ids = [sdk.chat.completions.with_raw_response.create(
            model="sim", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
        ).headers["x-request-id"] for _ in range(3)]
        metrics = urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics").read()
    assert "switchgear_request_log_dropped_total 2.0" in metrics.decode()
    assert [record.request_id for record in fetch_records(config.store.url)] == ids[:1]


async def test_failed_writes_are_retried_and_nothing_is_lost(
    store: RecordStore, records: MakeRecords, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(store, failures=3)
    writer = RecordWriter(flaky, batch_size=100, retry_delay=0.01, max_retry_delay=0.02)
    writer.start()
    submitted = records(300)
    for record in submitted:
        writer.submit(record)
    async with asyncio.timeout(WAIT):
        await writer.close()
    assert writer.failures == 3
    assert (writer.written, writer.pending) == (300, 0)
    assert await store.fetch() == submitted
    assert sum("retrying" in message for message in caplog.messages) == 3


async def test_a_lone_record_is_written_after_the_flush_interval(
    store: RecordStore, records: MakeRecords
) -> None:
    spy = SpyStore(store)
    writer = RecordWriter(spy, flush_interval=0.05)
    writer.start()
    (record,) = records(1)
    writer.submit(record)
    async with asyncio.timeout(WAIT):  # nobody drains: only the flush interval can write it
        await spy.wrote.wait()
    assert await store.fetch() == [record]
    await writer.close()


async def test_drain_waits_for_records_and_the_writer_keeps_going(
    store: RecordStore, records: MakeRecords
) -> None:
    writer = RecordWriter(store, flush_interval=10.0)
    writer.start()
    first, second = records(2)
    writer.submit(first)
    async with asyncio.timeout(WAIT):
        await writer.drain()
    assert await store.fetch() == [first]
    writer.submit(second)
    async with asyncio.timeout(WAIT):
        await writer.drain()
        await writer.close()
    assert await store.fetch() == [first, second]


async def test_submit_after_close_is_refused(store: RecordStore, records: MakeRecords) -> None:
    writer = RecordWriter(store)
    writer.start()
    await writer.close()
    with pytest.raises(RuntimeError):
        writer.submit(records(1)[0])
    assert await store.count() == 0


async def test_drain_of_a_writer_never_started_raises_instead_of_waiting(
    store: RecordStore, records: MakeRecords
) -> None:
    writer = RecordWriter(store)
    writer.submit(records(1)[0])
    with pytest.raises(RuntimeError, match="1 records"):
        await writer.drain()
