"""Latency percentiles from the request log: p50, p95 and p99 of end-to-end latency, time to
first token and time per output token, per model, deployment, tenant or feature.

The measures are the metrics' (telemetry/metrics.py), taken from each row's times: e2e =
done - received; TTFT = first token - received (the whole answer when not streamed); TPOT =
(done - first token) / (output tokens - 1), for streams of more than one output token. Only
requests that succeeded (status 200, cache hits included) count.

Percentiles are **nearest-rank** (switchgear/percentiles.py): of n values sorted ascending, the
p-th percentile is the value at 1-based rank ⌈p·n/100⌉, always a latency that was observed. They
are exact over every request of the period, however many:

- PostgreSQL computes them where the data lives, in one query grouped by the report's groups:
  ``percentile_disc`` (the same definition) of each measure, and the counts.
- SQLite has no percentile function: the measures are read in chunks of ``CHUNK_ROWS`` rows
  (keyset pagination along the ``received_at`` indexes, never OFFSET) into float64 arrays per
  group, 8 bytes a value (two million requests x three measures: 48 MB), then ranked with numpy.
  Each chunk is one query on the store's own thread, so its writes go on between chunks.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from switchgear.percentiles import METHOD, rank
from switchgear.store.base import RecordStore
from switchgear.store.queries import Period, where
from switchgear.store.retention import rows_dropped_before

#: The percentiles every report gives.
PERCENTILES = (50, 95, 99)
#: What a report can be grouped by (columns of the request log).
GROUPS = ("model", "deployment", "tenant", "feature")
#: Each measure's name in a report and its SQL (both dialects), NULL where a request has none.
MEASURES = {
    "e2e_s": "done_at - received_at",
    "ttft_s": "first_token_at - received_at",
    "tpot_s": ("CASE WHEN stream AND completion_tokens > 1 "
               "THEN (done_at - first_token_at) / (completion_tokens - 1) END"),
}
#: The requests counted: the successful ones.
SUCCEEDED = " AND status = 200"
#: Rows per SQLite query (about 15 MB of rows in flight at a time).
CHUNK_ROWS = 100_000

#: One group's key: its values of the report's ``group_by`` columns, in that order.
Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class GroupLatency:
    """One group's successful requests and each measure's count and percentiles (None where
    the measure has no value), as ``{"count": n, "p50": seconds, ...}``."""

    requests: int
    measures: dict[str, dict[str, Any] | None]


async def latency_report(store: RecordStore, period: Period, tenant: str | None,
                         group_by: Sequence[str]) -> dict[str, Any]:
    """The report of GET /admin/latency: how the percentiles were made (method, exact, the
    period, the requests counted) and one entry per group, sorted by its key. Percentiles need
    every request's own time, so requests whose rows retention removed are not in them:
    ``rows_dropped_before`` (None when the period has every row) says from when they are."""
    groups = await latency_by_group(store, period, tenant, group_by, tuple(MEASURES), PERCENTILES)
    dropped = await rows_dropped_before(store)
    data = [{**dict(zip(group_by, key, strict=True)), "requests": group.requests,
             **group.measures}
            for key, group in sorted(groups.items(), key=lambda item: str(item[0]))]
    return {"object": "latency_report", "method": METHOD, "exact": True,
            "percentiles": list(PERCENTILES), "since": period.start, "until": period.end,
            "tenant": tenant, "group_by": list(group_by),
            "rows_dropped_before": dropped if dropped is not None and dropped > period.start
            else None,
            "requests": sum(group.requests for group in groups.values()), "data": data}


async def latency_percentile(store: RecordStore, period: Period, tenant: str | None,
                             percentile: float) -> float | None:
    """The exact nearest-rank ``percentile`` of end-to-end seconds of the successful requests
    received in ``period`` (of one tenant, unless None); None when there were none."""
    groups = await latency_by_group(store, period, tenant, (), ("e2e_s",), (percentile,))
    summary = groups[()].measures["e2e_s"] if () in groups else None
    return None if summary is None else float(summary[_label(percentile)])


async def latency_by_group(store: RecordStore, period: Period, tenant: str | None,
                           group_by: Sequence[str], measures: Sequence[str],
                           percentiles: Sequence[float]) -> dict[Key, GroupLatency]:
    """Per group of ``group_by`` (the one group ``()`` when empty) that had successful requests
    received in ``period`` (of one tenant, unless None): exact nearest-rank ``percentiles`` of
    ``measures``, computed by PostgreSQL or, on SQLite, from the values read in chunks."""
    if not set(group_by) <= set(GROUPS) or len(set(group_by)) != len(group_by):
        raise ValueError(f"group_by must be distinct names from {list(GROUPS)}, got {group_by}")
    if not measures or not set(measures) <= set(MEASURES):
        raise ValueError(f"measures must be names from {list(MEASURES)}, got {measures}")
    if not percentiles or not all(0 < p <= 100 for p in percentiles):
        raise ValueError(f"percentiles must be above 0 and at most 100, got {percentiles}")
    if store.dialect == "postgresql":
        return await _postgres_groups(store, period, tenant, group_by, measures, percentiles)
    return await _chunked_groups(store, period, tenant, group_by, measures, percentiles)


def disc_fraction(percentile: float) -> float:
    """The fraction f for which PostgreSQL's ``percentile_disc(f)``, at rank ⌈f·n⌉ in float
    arithmetic, picks nearest-rank's rank ⌈p·n/100⌉: p/100 rounded down to a float, so that no
    rounding pushes f·n past a whole number (0.07·100 is 7.000000000000001 in floats)."""
    exact = Fraction(str(percentile)) / 100
    fraction = float(exact)
    return math.nextafter(fraction, 0.0) if Fraction(fraction) > exact else fraction


def _label(percentile: float) -> str:
    return f"p{percentile:g}"


async def _postgres_groups(store: RecordStore, period: Period, tenant: str | None,
                           group_by: Sequence[str], measures: Sequence[str],
                           percentiles: Sequence[float]) -> dict[Key, GroupLatency]:
    clause, params = where(store, period, tenant, SUCCEEDED)
    fractions = f"${len(params) + 1}::float8[]"
    columns = [*group_by, "count(*)"]
    for measure in measures:
        columns += [f"count({MEASURES[measure]})",
                    f"percentile_disc({fractions}) WITHIN GROUP (ORDER BY {MEASURES[measure]})"]
    grouped = f" GROUP BY {', '.join(group_by)}" if group_by else ""
    rows = await store.rows(f"SELECT {', '.join(columns)} FROM request_log {clause}{grouped}",
                            (*params, [disc_fraction(p) for p in percentiles]), report=True)
    groups, width = {}, len(group_by)
    for row in rows:
        key, requests, figures = tuple(row[:width]), row[width], row[width + 1:]
        if not requests:  # no GROUP BY: one row, even for no requests
            continue
        summaries: dict[str, dict[str, Any] | None] = {}
        for index, measure in enumerate(measures):
            count, values = figures[2 * index], figures[2 * index + 1]
            summaries[measure] = None if not count else {
                "count": count,
                **{_label(p): float(value) for p, value in zip(percentiles, values, strict=True)}}
        groups[key] = GroupLatency(requests, summaries)
    return groups


@dataclass(slots=True)
class _Collected:
    """One group's values read so far: its request count and an array per measure."""

    requests: int = 0
    values: list[array[float]] = field(default_factory=list)


def _collect(groups: dict[Key, _Collected], rows: list[tuple[Any, ...]], width: int
             ) -> tuple[int, tuple[Any, ...]]:
    """Add rows of (received_at, rowid, *key of ``width`` values, *measures) to ``groups``;
    how many there were and the last one's (received_at, rowid). Empties ``rows``, so that
    they are freed on this thread, not on the event loop's (100,000 rows: tens of ms)."""
    count, last = len(rows), tuple(rows[-1][:2]) if rows else ()
    for row in rows:
        key = row[2:2 + width]
        collected = groups.get(key)
        if collected is None:
            collected = groups[key] = _Collected(0, [array("d") for _ in row[2 + width:]])
        collected.requests += 1
        for values, value in zip(collected.values, row[2 + width:], strict=True):
            if value is not None:
                values.append(value)
    rows.clear()
    return count, last


def summarize(values: array[float] | np.ndarray, percentiles: Sequence[float]
              ) -> dict[str, Any] | None:
    """Count and exact nearest-rank ``percentiles`` of ``values`` (any order); None when
    there are none."""
    if not len(values):
        return None
    ranks = [rank(len(values), p) - 1 for p in percentiles]
    ranked = np.partition(np.asarray(values, dtype=np.float64), ranks)
    return {"count": len(values),
            **{_label(p): float(ranked[r]) for p, r in zip(percentiles, ranks, strict=True)}}


async def _chunked_groups(store: RecordStore, period: Period, tenant: str | None,
                          group_by: Sequence[str], measures: Sequence[str],
                          percentiles: Sequence[float]) -> dict[Key, GroupLatency]:
    columns = ", ".join(["received_at", "rowid", *group_by, *(MEASURES[m] for m in measures)])
    groups: dict[Key, _Collected] = {}
    start, after = period.start, ""
    last: tuple[Any, ...] = ()
    while True:
        # From the last row read on: the index on received_at (or tenant, received_at) keeps
        # rows in (received_at, rowid) order, so each chunk starts where the last one ended.
        clause, params = where(store, Period(start, period.end), tenant, SUCCEEDED + after)
        rows = await store.rows(f"SELECT {columns} FROM request_log {clause} "
                                f"ORDER BY received_at, rowid LIMIT {CHUNK_ROWS}", (*params, *last))
        count, last = await asyncio.to_thread(_collect, groups, rows, len(group_by))
        if count < CHUNK_ROWS:
            break
        start, after = last[0], " AND (received_at > ? OR rowid > ?)"
    return await asyncio.to_thread(_summarize_groups, groups, measures, percentiles)


def _summarize_groups(groups: dict[Key, _Collected], measures: Sequence[str],
                      percentiles: Sequence[float]) -> dict[Key, GroupLatency]:
    return {key: GroupLatency(collected.requests, {
                measure: summarize(values, percentiles)
                for measure, values in zip(measures, collected.values, strict=True)})
            for key, collected in groups.items()}
