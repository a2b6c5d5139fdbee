"""The metrics' own parts: the bulk histogram exposes exactly what prometheus_client's Histogram
does for the same observations, and a capped label reads 'other' past its cap."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from switchgear.telemetry.metrics import OTHER, TOKEN_BUCKETS, BoundedLabel, BulkHistogram


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if not sample.name.endswith("_created")}


def test_bulk_histogram_matches_prometheus_histogram() -> None:
    rng = random.Random(1)
    values = [rng.expovariate(30) for _ in range(500)] + [0.0, 0.01, 5.0, 7.5]  # edges and +Inf
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("gaps_seconds", "Gaps.", ["model"], TOKEN_BUCKETS, ours)
    reference = Histogram("gaps_seconds", "Gaps.", ["model"], buckets=TOKEN_BUCKETS,
                          registry=theirs)
    bulk.observe_many(("a",), values[:200])
    bulk.observe_many(("a",), values[200:])
    bulk.observe_many(("b",), values[:3])
    for value in values:
        reference.labels("a").observe(value)
    for value in values[:3]:
        reference.labels("b").observe(value)
    expected, got = samples(theirs), samples(ours)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key[0].endswith("_sum"):  # added in another order: equal up to rounding
            assert abs(got[key] - value) < 1e-9
        else:
            assert got[key] == value, key


def test_a_label_keeps_its_first_values_and_reads_other_after() -> None:
    label = BoundedLabel(2)
    assert [label(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]
