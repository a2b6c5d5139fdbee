"""Retention on each store: rows older than a cutoff folded into the hourly rollups in the
transaction that removes them (SQLite: in chunks), never twice when stores expire at once; the
maintenance task applying ``store.retention_days`` and ``store.rollup_retention_days``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest
from pydantic import ValidationError
from store_support import StoreBench, make_record

from switchgear.config import StoreConfig
from switchgear.store.base import RecordStore
from switchgear.store.maintenance import StoreMaintenance
from switchgear.store.migrations import HOURLY_CACHE_WRITES, REQUEST_LOG_HOURLY
from switchgear.store.queries import Period
from switchgear.store.records import RequestRecord
from switchgear.store.retention import (
    DAY,
    GROUP_COLUMNS,
    HOUR,
    ROLLUP_TABLE,
    SUMS,
    cutoff,
    rows_dropped_before,
)
from switchgear.store.sqlite import EXPIRE_CHUNK_ROWS
from switchgear.telemetry.latency import latency_report

#: A UTC midnight (2023-11-15), and a moment in its third day.
MIDNIGHT = 1_700_006_400.0
NOW = MIDNIGHT + 2 * DAY + 6 * HOUR


def spread(count: int, start: float, seconds: float) -> list[RequestRecord]:
    """``count`` records received evenly over ``seconds`` from ``start``."""
    return [replace(make_record(number), received_at=start + number * seconds / count,
                    first_token_at=start + number * seconds / count + 0.25,
                    done_at=start + number * seconds / count + 1.0)
            for number in range(count)]


async def rollup_sums(store: RecordStore) -> tuple[int, int, float]:
    """Requests, prompt tokens and cost the rollups stand for."""
    ((requests, prompt, cost),) = await store.rows(
        f"SELECT SUM(requests), SUM(prompt_tokens), SUM(cost) FROM {ROLLUP_TABLE}")
    return int(requests or 0), int(prompt or 0), float(cost or 0)


def test_the_rollups_columns_are_the_tables() -> None:
    assert ("hour", *GROUP_COLUMNS, *SUMS) == tuple(
        column.name for column in (*REQUEST_LOG_HOURLY, HOURLY_CACHE_WRITES))


def test_the_cutoff_is_the_midnight_that_keeps_whole_days() -> None:
    assert cutoff(NOW, 1) == MIDNIGHT + DAY
    assert cutoff(NOW, 2) == MIDNIGHT
    assert cutoff(MIDNIGHT + 2 * DAY, 2) == MIDNIGHT


def test_retention_settings_are_checked() -> None:
    assert StoreConfig().retention_days is None
    assert StoreConfig(retention_days=7, rollup_retention_days=400).rollup_retention_days == 400
    for wrong in ({"retention_days": 0}, {"retention_days": 7, "rollup_retention_days": 3},
                  {"rollup_retention_days": 30}):
        with pytest.raises(ValidationError):
            StoreConfig(**wrong)  # type: ignore[arg-type]


async def test_expire_folds_each_row_once_in_chunks(bench: StoreBench) -> None:
    store = await bench.opened()
    records = spread(2 * EXPIRE_CHUNK_ROWS + 100, MIDNIGHT, DAY)  # one day: old
    recent = [replace(r, request_id=f"new-{r.request_id}", received_at=r.received_at + DAY)
              for r in records[:50]]
    await store.write([*records, *recent])

    assert await store.expire(MIDNIGHT + DAY) == len(records)

    assert await store.count() == len(recent)
    assert await rollup_sums(store) == (len(records), sum(r.prompt_tokens for r in records),
                                        pytest.approx(sum(r.cost for r in records)))
    hours = await store.rows(f"SELECT hour, SUM(requests), SUM(e2e_count), SUM(e2e_s) "
                             f"FROM {ROLLUP_TABLE} GROUP BY hour ORDER BY hour")
    assert [int(hour) for hour, *_ in hours] == [int(MIDNIGHT + n * HOUR) for n in range(24)]
    assert sum(int(count) for _, count, _, _ in hours) == len(records)
    assert all(float(e2e) == pytest.approx(1.0 * int(done)) for _, _, done, e2e in hours)
    assert await rows_dropped_before(store) == MIDNIGHT + DAY
    assert await store.expire(MIDNIGHT + DAY) == 0


async def test_stores_expiring_at_once_count_each_row_once(bench: StoreBench) -> None:
    stores = [await bench.opened() for _ in range(3)]
    records = spread(EXPIRE_CHUNK_ROWS + 700, MIDNIGHT - 3 * DAY, 3 * DAY)
    for day in range(3):
        await stores[0].prepare(MIDNIGHT - (3 - day) * DAY)
    await stores[0].write(records)
    folded = await asyncio.gather(*(store.expire(MIDNIGHT) for store in stores))
    assert sum(folded) == len(records)
    assert (await rollup_sums(stores[1]))[0] == len(records)
    assert await stores[2].count() == 0


def maintenance(store: RecordStore, **settings: int | None) -> StoreMaintenance:
    """The maintenance task with ``settings``, its clock at NOW."""
    config = StoreConfig(**settings)  # type: ignore[arg-type]
    return StoreMaintenance(store, lambda: config, clock=lambda: NOW)


async def test_maintenance_keeps_the_days_and_rollups_it_is_told_to(
        bench: StoreBench, records: Callable[[int], list[RequestRecord]]) -> None:
    store = await bench.opened()
    days = [MIDNIGHT - 5 * DAY + n * DAY for n in range(8)]  # 5 days before NOW's, 2 after
    for day in days:
        await store.prepare(day)
    await store.write([replace(record, received_at=day + 3600)
                       for day, record in zip(days, records(len(days)), strict=True)])

    assert (await maintenance(store).round()).folded == 0  # no retention: every row stays
    assert await store.count() == len(days)

    first = await maintenance(store, retention_days=2, rollup_retention_days=4).round()
    assert first.folded == 5  # the five days before MIDNIGHT
    assert first.rollups_removed == 3  # the three of them before cutoff(NOW, 4)
    assert await store.count() == 3
    hours = [int(hour) for (hour,) in await store.rows(f"SELECT hour FROM {ROLLUP_TABLE}")]
    assert sorted(hours) == [int(day + 3600) for day in days[3:5]]


async def test_the_task_runs_a_round_at_start(bench: StoreBench) -> None:
    store = await bench.opened()
    await store.prepare(MIDNIGHT - DAY)
    await store.write(spread(10, MIDNIGHT - DAY, HOUR))
    task = maintenance(store, retention_days=1)
    await task.start()
    try:
        async with asyncio.timeout(30):
            while await store.count():  # noqa: ASYNC110 - the store is what changes
                await asyncio.sleep(0.02)
    finally:
        await task.stop()
    assert (await rollup_sums(store))[0] == 10


async def test_the_latency_report_says_when_the_rows_it_ranked_begin(bench: StoreBench) -> None:
    store = await bench.opened()
    await store.prepare(MIDNIGHT - DAY)
    await store.prepare(MIDNIGHT)
    slow, *fast = [replace(record, received_at=at, first_token_at=at + 0.5, done_at=at + took)
                   for record, at, took in zip(spread(3, 0, 1),
                                               (MIDNIGHT - DAY + 60, MIDNIGHT + 60,
                                                MIDNIGHT + 120), (9.0, 1.0, 2.0), strict=True)]
    await store.write([slow, *fast])
    both_days = Period(MIDNIGHT - DAY, MIDNIGHT + DAY)
    before = await latency_report(store, both_days, None, [])
    assert before["rows_dropped_before"] is None
    assert before["data"][0]["e2e_s"]["p99"] == 9.0

    assert await store.expire(MIDNIGHT) == 1
    after = await latency_report(store, both_days, None, [])
    assert after["rows_dropped_before"] == MIDNIGHT  # percentiles cannot come from sums
    assert after["requests"] == 2 and after["data"][0]["e2e_s"]["p99"] == 2.0
    second_day = await latency_report(store, Period(MIDNIGHT, MIDNIGHT + DAY), None, [])
    assert second_day["rows_dropped_before"] is None
