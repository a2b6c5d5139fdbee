"""Burn rates, error budgets and alert states over records written to a real store at chosen
times (SQLite and PostgreSQL), and the bucket series against a brute-force count."""

from __future__ import annotations

import random
from typing import Any

import pytest
from slo_support import record

from switchgear.sections.durations import format_duration, parse_duration
from switchgear.sections.slo import SLOConfig
from switchgear.slo.alerts import AlertStates
from switchgear.slo.budget import BucketSeries
from switchgear.slo.monitor import SLOTracker
from switchgear.store.base import RecordStore
from switchgear.store.records import RequestRecord

NOW = 1_800_000_000.0
HOUR = 3600.0


def objective(**fields: Any) -> SLOConfig:
    return SLOConfig.model_validate({"name": "s", "owner": "o", "sli": {"kind": "availability"},
                                     "scope": {"model": "chat"}, "target": 0.99, **fields})


def spread(start: float, end: float, count: int, status: int, first: int) -> list[RequestRecord]:
    """``count`` records finishing evenly between ``start`` and ``end`` (seconds before NOW)."""
    step = (start - end) / count
    return [record(first + i, NOW - start + i * step, status) for i in range(count)]


async def evaluate(store: RecordStore, slo: SLOConfig) -> tuple[SLOTracker, Any]:
    tracker = SLOTracker(slo, 1.0, store.dialect)
    await tracker.refresh(store, NOW)
    return tracker, tracker.evaluate(NOW)


async def test_a_short_burst_does_not_page_but_a_sustained_failure_does(
        store: RecordStore) -> None:
    # A steady hour at 1% errors (burn 1), then two minutes of total failure.
    await store.write(spread(HOUR, 120, 3480, 200, 0) + spread(HOUR, 120, 35, 500, 10_000))
    await store.write(spread(120, 0, 60, 500, 20_000))
    _, burst = await evaluate(store, objective())
    # 5m: 60 of ~145+60 bad: far above 14.4; 1h: 95 of 3575, burn 2.7: below 14.4.
    assert burst.burn_rates["5m"] > 14.4 and burst.burn_rates["1h"] < 14.4
    # The ticket holds already: 2.7 times the budgeted rate over 6h and 3d (the workbook's 3d/6h).
    assert burst.conditions == {"page": False, "ticket": True}

    await store.write(spread(HOUR, 120, 700, 500, 30_000))
    _, sustained = await evaluate(store, objective())
    assert sustained.burn_rates["1h"] > 14.4
    assert sustained.conditions["page"] is True


async def test_scope_sli_and_budget_count_only_matching_records(store: RecordStore) -> None:
    rng = random.Random(7)
    records = [record(i, NOW - rng.uniform(0, 20 * 86400), rng.choice([200, 200, 429, 500, 503]),
                      rng.choice(["chat", "other"]), latency=rng.uniform(0, 1),
                      ttft=rng.choice([None, rng.uniform(0, 0.5)])) for i in range(2000)]
    records.append(record(9999, NOW - 40 * 86400, 500))  # outside the 30-day window
    await store.write(records)
    in_window = [r for r in records if r.model == "chat" and r.done_at and r.done_at > NOW - 30 * 86400]

    _, availability = await evaluate(store, objective())
    bad = sum(r.status >= 500 for r in in_window)
    assert (availability.requests, availability.bad) == (len(in_window), bad)
    assert availability.budget_remaining == pytest.approx(1 - bad / len(in_window) / 0.01)

    ttft = objective(sli={"kind": "latency", "measure": "ttft", "threshold": "250ms"})
    _, latency = await evaluate(store, ttft)
    counted = [r for r in in_window if r.first_token_at is not None]
    slow = sum(r.first_token_at - r.received_at > 0.25 for r in counted
               if r.first_token_at is not None)
    assert (latency.requests, latency.bad) == (len(counted), slow)


async def test_a_checks_sli_counts_the_answers_output_checks_judged(store: RecordStore) -> None:
    rng = random.Random(11)
    records = [record(i, NOW - rng.uniform(0, 86400),
                      output_passed=rng.choice([None, True, True, True, False]))
               for i in range(1000)]
    await store.write(records)
    _, checks = await evaluate(store, objective(sli={"kind": "checks"}))
    judged = [r for r in records if r.output_passed is not None]
    failed = sum(r.output_passed is False for r in judged)
    assert (checks.requests, checks.bad) == (len(judged), failed) and failed > 0


async def test_later_records_are_picked_up_by_the_next_refresh(store: RecordStore) -> None:
    tracker = SLOTracker(objective(), 1.0, store.dialect)
    await store.write(spread(600, 0, 100, 200, 0))
    await tracker.refresh(store, NOW)
    assert tracker.evaluate(NOW).requests == 100
    await store.write(spread(60, 0, 10, 500, 1000))  # written late, inside the last minute
    await tracker.refresh(store, NOW + 1)
    assert (tracker.evaluate(NOW + 1).requests, tracker.evaluate(NOW + 1).bad) == (110, 10)


async def test_only_one_replica_wins_each_alert_change(store: RecordStore) -> None:
    first, second = AlertStates(store), AlertStates(store)
    await first.prepare(["s"], NOW)
    await second.prepare(["s"], NOW)  # a second replica starting: nothing changes
    assert await first.change("s", "page", True, NOW + 1)
    assert not await second.change("s", "page", True, NOW + 1)
    states = await second.load()
    assert states[("s", "page")].firing and states[("s", "page")].since == NOW + 1
    assert not states[("s", "ticket")].firing
    assert await second.change("s", "page", False, NOW + 2)
    assert not await first.change("s", "page", False, NOW + 2)


def test_bucket_series_matches_a_brute_force_count() -> None:
    rng = random.Random(3)
    width, span = 10.0, 1000.0
    series = BucketSeries(width, span)
    events: list[tuple[float, bool]] = []
    now = 5000.0
    for _ in range(30):
        now += rng.uniform(0, 200)
        events += [(now - rng.uniform(0, 50), rng.random() < 0.3) for _ in range(20)]
        first = series.bucket(now - 100)
        rows: dict[int, list[int]] = {}
        for at, bad in events:
            bucket = series.bucket(at)
            if bucket >= first:
                counts = rows.setdefault(bucket, [0, 0])
                counts[0] += 1
                counts[1] += bad
        series.advance(now)
        series.replace(first, [(b, t, x) for b, (t, x) in rows.items()])
        for seconds in (10.0, 95.0, 300.0, 1000.0):
            oldest = series.bucket(now) - int(-(-seconds // width)) + 1
            inside = [bad for at, bad in events if series.bucket(at) >= oldest]
            assert series.window(seconds) == (len(inside), sum(inside))


@pytest.mark.parametrize(("text", "seconds"), [("30d", 2592000), ("6h", 21600), ("5m", 300),
                                               ("90s", 90), ("500ms", 0.5), (7.5, 7.5)])
def test_durations_parse_and_format_back(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("bad", ["", "5x", "-1s", 0, "1.5.2h", True])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than zero"):
        parse_duration(bad)
