"""The simulator's Prometheus metrics (prefix ``switchgear_sim_``), in a registry of its own."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from switchgear.simulator.model import SimulatedModel

PREFIX = "switchgear_sim_"


class _ModelLoad(Collector):
    """Reads the model's live counters at scrape time."""

    def __init__(self, model: SimulatedModel) -> None:
        self._model = model

    def collect(self) -> Iterator[Metric]:
        model = self._model
        yield GaugeMetricFamily(f"{PREFIX}queue_depth", "Requests waiting for a slot.",
                                value=model.queue_depth)
        yield GaugeMetricFamily(f"{PREFIX}busy_slots", "Slots running a sequence.",
                                value=model.busy_slots)
        yield GaugeMetricFamily(f"{PREFIX}slots", "Sequence slots in all.",
                                value=model.options.slots)
        yield GaugeMetricFamily(f"{PREFIX}peak_in_flight", "The most requests running or "
                                "waiting for a slot at once since start.",
                                value=model.peak_in_flight)
        yield CounterMetricFamily(f"{PREFIX}requests_served", "Requests answered in full.",
                                  value=model.requests_served)


class SimulatorMetrics:
    """Counts requests by outcome and exposes them with the model's load as Prometheus text."""

    def __init__(self, model: SimulatedModel) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_ModelLoad(model))
        self._requests = Counter(
            f"{PREFIX}requests", "Inference requests by outcome: an HTTP status, or reset, hang, "
            "disconnect, client_closed.", ["status"], registry=self.registry,
        )

    def count(self, outcome: str) -> None:
        """Count one finished request with its outcome."""
        self._requests.labels(status=outcome).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
