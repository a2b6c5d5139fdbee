"""The embedded engines' figures on /metrics, read from each engine when Prometheus scrapes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from switchgear.engine.stats import EngineStats

EngineSource = Callable[[], Iterable[tuple[str, EngineStats]]]

#: (metric name after ``switchgear_engine_``, kind, EngineStats attribute, help text)
FIGURES = (
    ("busy_slots", "gauge", "busy_slots", "Sequences holding a slot."),
    ("slots", "gauge", "slots", "Sequences that can decode together."),
    ("waiting_sequences", "gauge", "waiting", "Sequences waiting for a slot."),
    ("kv_cache_used_tokens", "gauge", "kv_used", "KV-cache cells in use."),
    ("kv_cache_tokens", "gauge", "kv_tokens", "KV-cache size in tokens."),
    ("batch_tokens", "gauge", "last_batch_tokens", "Tokens in the latest step's batch."),
    ("batch_sequences", "gauge", "last_batch_sequences", "Sequences in the latest step's batch."),
    ("utilization_ratio", "gauge", "utilization", "Share of the uptime spent running steps."),
    ("steps", "counter", "steps", "Steps run (one batch each)."),
    ("fed_tokens", "counter", "fed_tokens",
     "Tokens fed to the model (prompt chunks and decoded tokens)."),
    ("generated_tokens", "counter", "generated_tokens", "Tokens sampled."),
    ("preemptions", "counter", "preemptions",
     "Sequences preempted for higher-tier work or KV room."),
    ("interrupted_steps", "counter", "interrupted_steps",
     "Batch-tier steps stopped part-way because higher-tier work arrived."),
    ("busy_seconds", "counter", "busy_seconds", "Seconds spent running steps."),
)


class EngineCollector(Collector):
    """Slots, queue, KV-cache use, tokens, batch size, preemptions and utilization of every
    embedded engine ``source`` yields (by deployment name), without any work per request."""

    def __init__(self, source: EngineSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        """One family per figure, one sample per engine."""
        engines = list(self._source())
        for name, kind, attribute, text in FIGURES:
            family_type = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
            family = family_type(f"switchgear_engine_{name}", text, labels=["deployment"])
            for deployment, stats in engines:
                family.add_metric([deployment], float(getattr(stats, attribute)))
            yield family


def engine_stats(deployments: Iterable[Any]) -> list[tuple[str, EngineStats]]:
    """``(deployment name, stats)`` of every started deployment whose backend has an engine."""
    found = []
    for deployment in deployments:
        read = getattr(deployment.backend, "engine_stats", None)
        if read is not None and (stats := read()) is not None:
            found.append((deployment.name, stats))
    return found
