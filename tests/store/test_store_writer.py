"""The batched background writer: batches, order, backpressure without loss, retries, draining."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest
from store_support import WAIT

from switchgear.store.base import RecordStore, StoreUnavailable
from switchgear.store.records import RequestRecord
from switchgear.store.writer import RecordWriter

MakeRecords = Callable[[int], list[RequestRecord]]


class SpyStore:
    """Passes everything to a real store and notes each batch written (a spy, not a fake)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.batches: list[list[RequestRecord]] = []
        self.wrote = asyncio.Event()

    async def open(self) -> None:
        await self.store.open()

    async def write(self, records: Sequence[RequestRecord]) -> None:
        await self.store.write(records)
        self.batches.append(list(records))
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

    async def write(self, records: Sequence[RequestRecord]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise StoreUnavailable("the database is down (simulated)")
        await super().write(records)


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


async def test_a_full_queue_overflows_without_loss_or_reordering(
    store: RecordStore, records: MakeRecords
) -> None:
    spy = SpyStore(store)
    writer = RecordWriter(spy, batch_size=64, queue_size=10)
    writer.start()
    submitted = records(1000)
    for record in submitted:
        writer.submit(record)
    assert (writer.overflowed, writer.backlog) == (990, 990)
    async with asyncio.timeout(WAIT):
        await writer.drain()
    assert writer.backlog == 0
    assert [record for batch in spy.batches for record in batch] == submitted
    async with asyncio.timeout(WAIT):
        await writer.close()
    assert await store.count() == 1000


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
