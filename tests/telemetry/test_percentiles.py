"""Nearest-rank percentiles, checked against a textbook example and against numpy's
inverted-CDF percentile (the same definition, implemented independently)."""

from __future__ import annotations

import random

import numpy
import pytest

from switchgear.percentiles import nearest_rank
from switchgear.telemetry.latency import LatencyRow, latency_report


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


def row(model: str, received: float, first: float | None, done: float, tokens: int,
        stream: bool = True) -> LatencyRow:
    return LatencyRow(model, "d", "t", None, stream, received, first, done, tokens)


def test_tpot_only_for_streams_of_more_than_one_token() -> None:
    rows = [row("m", 0.0, 0.1, 0.5, 5),   # TPOT (0.5 - 0.1) / 4 = 0.1
            row("m", 0.0, 0.2, 0.2, 1),   # one token: no TPOT
            row("m", 0.0, 0.3, 0.3, 9, stream=False)]  # not streamed: no TPOT
    [entry] = latency_report(rows, ["model"])
    assert entry["requests"] == 3
    assert entry["tpot_s"] == {"count": 1, "p50": 0.1, "p95": 0.1, "p99": 0.1}
    assert entry["ttft_s"]["count"] == 3 and entry["ttft_s"]["p50"] == 0.2
    assert entry["e2e_s"]["p99"] == 0.5


def test_groups_are_split_by_every_key() -> None:
    rows = [row("a", 0.0, 0.1, 1.0, 2), row("b", 0.0, 0.1, 2.0, 2), row("a", 0.0, 0.1, 3.0, 2)]
    report = latency_report(rows, ["model", "deployment"])
    assert [(e["model"], e["deployment"], e["requests"]) for e in report] == [
        ("a", "d", 2), ("b", "d", 1)]
    assert report[0]["e2e_s"]["p50"] == 1.0 and report[0]["e2e_s"]["p99"] == 3.0
