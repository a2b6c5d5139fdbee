"""Migrations: the schema is created at open, recorded, and applied only once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from store_support import WAIT, StoreBench

from switchgear.store.migrations import MIGRATIONS, pending
from switchgear.store.records import COLUMNS, RequestRecord

ALL_VERSIONS = [migration.version for migration in MIGRATIONS]


async def test_open_creates_request_log_with_every_record_column(bench: StoreBench) -> None:
    await bench.opened()
    view = await bench.inspect()
    assert view.columns == list(COLUMNS)
    assert {
        "request_log_received_at_idx",
        "request_log_tenant_received_at_idx",
        "request_log_model_received_at_idx",
    } <= view.indexes
    assert view.versions == [migration.version for migration in MIGRATIONS]


async def test_reopening_applies_nothing_and_keeps_the_rows(
    bench: StoreBench, records: Callable[[int], list[RequestRecord]]
) -> None:
    first = await bench.opened()
    await first.write(records(3))
    await first.close()
    second = await bench.opened()
    assert (await bench.inspect()).versions == ALL_VERSIONS
    assert await second.count() == 3


async def test_stores_opening_together_migrate_once(bench: StoreBench) -> None:
    stores = [bench.make() for _ in range(3)]
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(store.open() for store in stores))
    assert (await bench.inspect()).versions == ALL_VERSIONS


def test_migration_versions_run_one_two_three() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert pending([]) == list(MIGRATIONS)
    assert pending([m.version for m in MIGRATIONS]) == []
