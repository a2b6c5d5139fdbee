"""Writing and reading request records through each store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from switchgear.store.base import RecordStore
from switchgear.store.records import RequestRecord


async def test_round_trip_keeps_every_value_and_type(
    store: RecordStore, records: Callable[[int], list[RequestRecord]]
) -> None:
    plain, streamed = records(2)
    streamed = replace(
        streamed,
        deployment=None,
        stream=True,
        first_token_at=None,
        done_at=None,
        status=502,
        error_type="UpstreamProtocolError",
        truncated=True,
        attempts=3,
        cost=1e-9,
        prompt_tokens=2**40,
        operation="completions",
    )
    await store.write([plain, streamed])
    fetched = await store.fetch()
    assert fetched == [plain, streamed]
    assert [type(record.stream) for record in fetched] == [bool, bool]
    assert [type(record.truncated) for record in fetched] == [bool, bool]


async def test_duplicate_request_id_is_ignored(
    store: RecordStore, records: Callable[[int], list[RequestRecord]]
) -> None:
    first, second, third = records(3)
    await store.write([first, second])
    await store.write([replace(second, tenant="someone-else", cost=99.0), third])
    assert await store.fetch() == [first, second, third]


async def test_fetch_orders_by_received_at_and_honours_limit(
    store: RecordStore, records: Callable[[int], list[RequestRecord]]
) -> None:
    batch = records(5)
    await store.write(list(reversed(batch)))
    assert await store.fetch() == batch
    assert await store.fetch(limit=2) == batch[:2]
    assert await store.count() == 5


async def test_empty_batch_writes_nothing(store: RecordStore) -> None:
    await store.write([])
    assert await store.count() == 0
    assert await store.fetch() == []
