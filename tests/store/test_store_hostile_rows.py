"""Rows carrying hostile strings are written repaired, and one bad row never stops the writer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest
from store_support import WAIT, make_record

from switchgear.store.base import RecordRejected, RecordStore
from switchgear.store.records import FIELD_LIMIT, RequestRecord
from switchgear.store.writer import RecordWriter

HOSTILE = {
    "model": "gpt\x00-4",
    "user_id": "eve\x1b[31m\r\nFAKE LOG LINE\x7f",
    "feature": "x" * 1_000_000,
    "finish_reason": "stop\ud800",
    "prompt": "line one\nline two\x00\x01 and a lone \udc80 surrogate",
}


async def test_hostile_rows_are_written_repaired_and_later_rows_still_are(
        store: RecordStore) -> None:
    writer = RecordWriter(store, batch_size=4, flush_interval=0.01, retry_delay=0.01,
                          max_retry_delay=0.02)
    writer.start()
    hostile = [make_record(number, **{name: value}) for number, (name, value)
               in enumerate(HOSTILE.items())]
    later = [make_record(number) for number in range(len(hostile), len(hostile) + 10)]
    for record in [*hostile, *later]:
        writer.submit(record)
    async with asyncio.timeout(WAIT):
        await writer.close()
    rows = {row.request_id: row for row in await store.fetch()}
    assert len(rows) == len(hostile) + len(later)
    assert writer.rejected == 0
    model, user, feature, reason, prompt = (
        getattr(rows[f"req-{number}"], name) for number, name in enumerate(HOSTILE))
    assert model == "gpt\ufffd-4"
    assert user == "eve\ufffd[31m\ufffd\ufffdFAKE LOG LINE\ufffd"
    assert feature == "x" * FIELD_LIMIT
    assert reason == "stop\ufffd"
    assert prompt == "line one\nline two\ufffd\ufffd and a lone \ufffd surrogate"
    assert all(rows[record.request_id] == record for record in later)


class PoisonStore:
    """A real store that refuses, as content it cannot take, every write holding a poisoned
    row (no real database refuses a repaired row on cue)."""

    def __init__(self, store: RecordStore, poisoned: set[str], error: Exception) -> None:
        self.store = store
        self.poisoned = poisoned
        self.error = error

    async def write(self, records: Sequence[RequestRecord], *, backlog: int = 0) -> None:
        if any(record.request_id in self.poisoned for record in records):
            raise self.error
        await self.store.write(records, backlog=backlog)

    async def ping(self) -> None:
        await self.store.ping()

    async def fetch(self, limit: int | None = None) -> list[RequestRecord]:
        return await self.store.fetch(limit)


@pytest.mark.parametrize("error", [ValueError("secret-content refused"),
                                   RuntimeError("secret-content unexplained")],
                         ids=["rejected", "unexplained"])
async def test_a_row_the_store_refuses_is_set_aside_and_the_rest_are_written(
        store: RecordStore, error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    poison = PoisonStore(store, {"req-3", "req-7"}, error)
    writer = RecordWriter(poison, batch_size=5, flush_interval=0.01, retry_delay=0.001,
                          max_retry_delay=0.002)
    writer.start()
    submitted = [make_record(number, prompt="secret-content") for number in range(12)]
    with caplog.at_level(logging.WARNING):
        for record in submitted:
            writer.submit(record)
        async with asyncio.timeout(WAIT):
            await writer.drain()
        later = make_record(99)
        writer.submit(later)
        async with asyncio.timeout(WAIT):
            await writer.close()
    stored = await store.fetch()
    assert [row.request_id for row in stored] == [
        record.request_id for record in [*submitted, later]
        if record.request_id not in poison.poisoned]
    assert (writer.rejected, writer.written, writer.pending) == (2, 11, 0)
    set_aside = [message for message in caplog.messages if "set aside" in message]
    assert len(set_aside) == 2
    assert not any("secret-content" in message for message in caplog.messages
                   if "set aside" in message)


async def test_a_value_the_database_cannot_take_is_a_rejection_not_an_outage(
        store: RecordStore) -> None:
    # Unrepaired, as no writer would send it: PostgreSQL refuses NUL in text, and no UTF-8
    # encoder takes a lone surrogate.
    with pytest.raises(RecordRejected):
        await store.write([make_record(1, model="bad\ud800", user_id="nul\x00")])
    await store.write([make_record(2)])
    assert [row.request_id for row in await store.fetch()] == ["req-2"]
