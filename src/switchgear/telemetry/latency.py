"""Latency percentiles from the request log: p50, p95 and p99 of end-to-end latency, time to
first token and time per output token, per model, deployment, tenant or feature.

The measures are the metrics' (telemetry/metrics.py), taken from each row's times: e2e =
done - received; TTFT = first token - received (the whole answer when not streamed); TPOT =
(done - first token) / (output tokens - 1), for streams of more than one output token. Only
requests that succeeded (status 200, cache hits included) count.

Percentiles are **nearest-rank**: of n values sorted ascending, the p-th percentile is the value
at 1-based rank ⌈p·n/100⌉, always a latency that was observed, never an interpolation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: The percentiles every report gives.
PERCENTILES = (50, 95, 99)
#: What a report can be grouped by (columns of the request log).
GROUPS = ("model", "deployment", "tenant", "feature")
METHOD = "nearest-rank"


def rank(count: int, percentile: int) -> int:
    """The 1-based rank of the ``percentile``-th percentile of ``count`` sorted values."""
    return max(1, -(-percentile * count // 100))  # ⌈p·n/100⌉ in integers


def nearest_rank(ordered: Sequence[float], percentile: int) -> float:
    """The ``percentile``-th percentile (1 to 100) of ``ordered`` (sorted ascending, not empty)."""
    return ordered[rank(len(ordered), percentile) - 1]


def summary(values: list[float]) -> dict[str, Any] | None:
    """Count and nearest-rank percentiles of ``values`` in seconds; None when there are none."""
    if not values:
        return None
    values.sort()
    return {"count": len(values),
            **{f"p{p}": nearest_rank(values, p) for p in PERCENTILES}}


@dataclass(slots=True, frozen=True)
class LatencyRow:
    """The columns of one request-log row that the report reads."""

    model: str
    deployment: str | None
    tenant: str
    feature: str | None
    stream: bool
    received_at: float
    first_token_at: float | None
    done_at: float | None
    completion_tokens: int


def latency_report(rows: Iterable[LatencyRow], group_by: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per group (sorted by its key): the group's values, its request count and the
    e2e, TTFT and TPOT summaries (None where a measure has no value)."""
    groups: dict[tuple[str | None, ...], tuple[list[float], list[float], list[float]]] = {}
    for row in rows:
        key = tuple(getattr(row, name) for name in group_by)
        e2e, ttft, tpot = groups.get(key) or groups.setdefault(key, ([], [], []))
        done, first = row.done_at, row.first_token_at
        if done is not None:
            e2e.append(done - row.received_at)
        if first is not None:
            ttft.append(first - row.received_at)
            if row.stream and row.completion_tokens > 1 and done is not None:
                tpot.append((done - first) / (row.completion_tokens - 1))
    return [
        {**dict(zip(group_by, key, strict=True)), "requests": len(e2e),
         "e2e_s": summary(e2e), "ttft_s": summary(ttft), "tpot_s": summary(tpot)}
        for key, (e2e, ttft, tpot) in sorted(groups.items(), key=lambda item: str(item[0]))
    ]
