"""Nearest-rank percentiles, checked against a textbook example and against numpy's
inverted-CDF percentile (the same definition, implemented independently); PostgreSQL's
percentile_disc picking the same rank; and the latency report's rules (which requests and values
count, groups, chunks) on a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import asyncpg
import numpy
import pytest

from switchgear.percentiles import nearest_rank, rank
from switchgear.store.base import RecordStore
from switchgear.store.queries import Period
from switchgear.store.records import RequestRecord
from switchgear.telemetry import latency
from switchgear.telemetry.latency import (
    disc_fraction,
    latency_by_group,
    latency_percentile,
    latency_report,
)

from servers import POSTGRES_URL


@pytest.mark.parametrize(("percentile", "expected"),
                         [(5, 15), (30, 20), (40, 20), (50, 35), (100, 50)])
def test_the_textbook_example(percentile: int, expected: float) -> None:
    assert nearest_rank([15, 20, 35, 40, 50], percentile) == expected


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100, 1001])
def test_every_percentile_agrees_with_numpy_inverted_cdf(size: int) -> None:
    values = sorted(random.Random(size).lognormvariate(0, 1) for _ in range(size))
    for percentile in range(1, 101):
        independent = numpy.percentile(values, percentile, method="inverted_cdf")
        assert nearest_rank(values, percentile) == independent


#: A successful streamed request of five output tokens: e2e 1.0 s, TTFT 0.2 s, TPOT 0.2 s.
BASE = RequestRecord(
    request_id="r", tenant="acme", model="m", deployment="d", operation="chat", stream=True,
    received_at=1_700_000_000.0, first_token_at=1_700_000_000.2, done_at=1_700_000_001.0,
    prompt_tokens=5, completion_tokens=5, status=200, error_type=None, truncated=False,
    attempts=1, cost=0.0)
#: A period holding every request made by ``request`` below.
PERIOD = Period(1_699_999_000.0, 1_700_001_000.0)


def request(number: int, e2e: float | None = 1.0, ttft: float | None = 0.2, **changes: Any
            ) -> RequestRecord:
    """Request ``number``, received ``number`` ms after BASE's, with these latencies."""
    received = BASE.received_at + number / 1000
    return replace(BASE, request_id=f"r{number}", received_at=received,
                   first_token_at=None if ttft is None else received + ttft,
                   done_at=None if e2e is None else received + e2e, **changes)


async def report(store: RecordStore, group_by: list[str], tenant: str | None = None,
                 period: Period = PERIOD) -> list[dict[str, Any]]:
    return list((await latency_report(store, period, tenant, group_by))["data"])


async def test_tpot_only_for_streams_of_more_than_one_token(store: RecordStore) -> None:
    await store.write([request(0, e2e=0.5, ttft=0.1),   # TPOT (0.5 - 0.1) / 4
                       request(1, e2e=0.2, ttft=0.2, completion_tokens=1),  # one token: none
                       request(2, e2e=0.3, ttft=0.3, stream=False, completion_tokens=9)])
    [entry] = await report(store, ["model"])
    received = BASE.received_at
    assert entry["requests"] == 3
    assert entry["tpot_s"] == {"count": 1, **dict.fromkeys(
        ("p50", "p95", "p99"), ((received + 0.5) - (received + 0.1)) / 4)}
    assert entry["ttft_s"]["count"] == 3
    assert entry["ttft_s"]["p50"] == (received + 0.001 + 0.2) - (received + 0.001)
    assert entry["e2e_s"]["p99"] == (received + 0.5) - received


async def test_groups_are_split_by_every_key(store: RecordStore) -> None:
    await store.write([request(0, e2e=1.0, model="a"), request(1, e2e=2.0, model="b"),
                       request(2, e2e=3.0, model="a", feature="x")])
    data = await report(store, ["model", "deployment"])
    assert [(e["model"], e["deployment"], e["requests"]) for e in data] == [
        ("a", "d", 2), ("b", "d", 1)]
    received = BASE.received_at + 0.002
    assert data[0]["e2e_s"] == {"count": 2, "p50": (BASE.received_at + 1.0) - BASE.received_at,
                                "p95": (received + 3.0) - received,
                                "p99": (received + 3.0) - received}
    by_feature = await report(store, ["feature"])
    assert [(e["feature"], e["requests"]) for e in by_feature] == [("x", 1), (None, 2)]


async def test_only_successes_of_the_period_and_the_tenant_count(store: RecordStore) -> None:
    await store.write([request(0, e2e=1.0), request(1, e2e=9.0, status=500),
                       request(2, e2e=8.0, tenant="other"),
                       request(3, e2e=None, ttft=None),  # no answer: no e2e
                       replace(request(4, e2e=6.0), received_at=PERIOD.end)])
    whole = await latency_report(store, PERIOD, "acme", ["tenant"])
    assert whole["requests"] == 2 and whole["exact"] is True
    assert [(e["tenant"], e["requests"], e["e2e_s"]["count"], e["e2e_s"]["p99"])
            for e in whole["data"]] == [("acme", 2, 1, 1.0)]
    assert await latency_percentile(store, PERIOD, "acme", 95) == 1.0
    assert await latency_percentile(store, PERIOD, "nobody", 95) is None
    assert await report(store, ["model"], period=Period(0.0, 1.0)) == []


async def test_a_tenants_percentile_is_exact_at_every_rank(store: RecordStore) -> None:
    latencies = [round(random.Random(7).lognormvariate(0, 1) * (1 + n % 3), 6) for n in range(203)]
    await store.write([request(n, e2e=value) for n, value in enumerate(latencies)])
    values = [(BASE.received_at + n / 1000 + v) - (BASE.received_at + n / 1000)
              for n, v in enumerate(latencies)]
    for percentile in (1, 7, 33.3, 50, 95, 99, 99.9, 100):
        assert await latency_percentile(store, PERIOD, "acme", percentile) == numpy.quantile(
            values, percentile / 100, method="inverted_cdf"), percentile


async def test_rows_read_in_chunks_are_each_counted_once(
        store: RecordStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's chunks of 3 rows, with ties of received_at across their borders."""
    monkeypatch.setattr(latency, "CHUNK_ROWS", 3)
    records = [replace(request(n, e2e=n + 1.0), received_at=BASE.received_at + n // 4)
               for n in range(17)]
    await store.write(records)
    [entry] = await report(store, ["model"])
    e2e = sorted(r.done_at - r.received_at for r in records if r.done_at is not None)
    assert entry["requests"] == entry["e2e_s"]["count"] == 17
    assert entry["e2e_s"]["p50"] == nearest_rank(e2e, 50) and entry["e2e_s"]["p99"] == e2e[-1]


@pytest.mark.parametrize(("group_by", "measures", "percentiles"), [
    (["colour"], ["e2e_s"], [50]), (["model", "model"], ["e2e_s"], [50]),
    (["model"], ["e2e_s; DROP TABLE request_log"], [50]), (["model"], [], [50]),
    (["model"], ["e2e_s"], []), (["model"], ["e2e_s"], [0]), (["model"], ["e2e_s"], [100.5])])
async def test_bad_arguments_are_refused(store: RecordStore, group_by: list[str],
                                         measures: list[str], percentiles: list[float]) -> None:
    with pytest.raises(ValueError, match=r"^(group_by|measures|percentiles) must"):
        await latency_by_group(store, PERIOD, None, group_by, measures, percentiles)


PERCENTILES_TRIED = (0.1, 1, 7, 14, 28, 33.3, 50, 57, 95, 99, 99.9, 100)


async def test_percentile_disc_picks_the_nearest_rank() -> None:
    """PostgreSQL's percentile_disc of 1..n is the value at the rank it picks: with
    ``disc_fraction`` that is ⌈p·n/100⌉ for every n up to 2,000 and every percentile tried,
    where p/100 itself is wrong for some (0.07 · 100 is just above 7 in floats)."""
    fractions = [disc_fraction(p) for p in PERCENTILES_TRIED]
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await connection.fetch(
            "SELECT n, percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY v), "
            "percentile_disc($2::float8[]) WITHIN GROUP (ORDER BY v) "
            "FROM generate_series(1, 2000) AS n, generate_series(1, n) AS v GROUP BY n",
            fractions, [p / 100 for p in PERCENTILES_TRIED])
    finally:
        await connection.close()
    assert len(rows) == 2000
    for n, picked, _ in rows:
        assert list(picked) == [rank(n, p) for p in PERCENTILES_TRIED], n
    assert any(list(naive) != [rank(n, p) for p in PERCENTILES_TRIED] for n, _, naive in rows)
