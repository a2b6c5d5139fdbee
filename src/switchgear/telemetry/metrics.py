"""Prometheus metrics of the gateway, in a registry of their own (one per app, never global).

Latencies follow vLLM's definitions: end-to-end (arrival to last byte), time to first token (the
whole answer when not streamed), inter-token latency (the gaps between streamed chunks that carry
choices) and time per output token, TPOT = (e2e - TTFT) / (output tokens - 1), for streams of
more than one token. Per-chunk work is one timestamp (``Exchange.chunk_times``); everything is
observed once, when the request ends.

Label values come from a bounded set: a requested model that is not a configured alias is
labelled ``unknown``, never by its raw name; every label a client can influence (model,
deployment, tenant, feature, priority) keeps at most ``max_label_values`` distinct values
(later newcomers are counted as ``other``), each cut to ``LABEL_LIMIT`` characters with its
control characters replaced.

Cost is counted once per request, in the ledger's currency, under the same bounded labels: what
the request cost as the ledger prices it (``switchgear_cost``), or what a cache hit or a joined
request saved (``switchgear_cost_saved``). The SLOs' figures (``switchgear_slo_*``) are the SLO
monitor's latest evaluation, published by the monitor on its interval and read as they stand when
/metrics is scraped: nothing per request. So are the deployments' routing state
(``switchgear_deployment_*``, the router's snapshot) and their labels, which come from the config,
and the fleet-wide limits' places (``switchgear_fleet_places_*``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, islice
from operator import sub
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from switchgear.exchange import Exchange
from switchgear.sections.slo import LATENCY_BUCKETS
from switchgear.store.leases import FleetPlaces
from switchgear.store.text import safe_line
from switchgear.store.writer import RecordWriter

#: Seconds between tokens (vLLM's inter-token and per-output-token buckets).
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
                 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
#: Output tokens per second of one request.
THROUGHPUT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
                      5000.0, 10000.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The label value standing for every value past a label's cap.
OTHER = "other"
#: The model label of a request for a model that is not a configured alias.
UNKNOWN = "unknown"
#: Characters kept of a label value.
LABEL_LIMIT = 128
#: The labels of the per-request series.
SERIES_LABELS = ("model", "deployment", "tenant", "feature")
#: Series remembered by the raw values they are labelled from (model label, deployment, tenant,
#: feature), at most this many: past it, the labels are worked out each time.
RAW_SERIES_LIMIT = 10_000


class BoundedLabel:
    """One label's values: the first ``cap`` distinct ones are kept (cut to ``LABEL_LIMIT``
    characters, control characters replaced), later ones read 'other'."""

    __slots__ = ("cap", "seen")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        #: Each value seen (already cut) and the label it became.
        self.seen: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        value = value[:LABEL_LIMIT]  # the string itself, no copy, when short enough
        label = self.seen.get(value)
        if label is not None:
            return label
        if len(self.seen) < self.cap:
            label = self.seen[value] = safe_line(value, LABEL_LIMIT)
            return label
        return OTHER


class CountsCollector(Collector):
    """Counts read off an object when /metrics is scraped (the request-log writer, the
    connection guard): one family per ``(kind, name, help, attribute)``, nothing until
    ``source`` is set."""

    def __init__(self, families: Sequence[tuple[Callable[..., Metric], str, str, str]]) -> None:
        self.families = tuple(families)
        self.source: object | None = None

    def collect(self) -> Iterable[Metric]:
        source = self.source
        if source is None:
            return []
        return [kind(name, documentation, value=getattr(source, attribute))
                for kind, name, documentation, attribute in self.families]


#: The request-log writer's counts (store/writer.py).
WRITER_FAMILIES = (
    (CounterMetricFamily, "switchgear_request_log_written", "Request records written.",
     "written"),
    (CounterMetricFamily, "switchgear_request_log_rejected", "Request records the store refused "
     "even stripped, set aside unwritten.", "rejected"),
    (CounterMetricFamily, "switchgear_request_log_stripped", "Request records written only "
     "stripped of their text and non-ASCII characters.", "stripped"),
    (CounterMetricFamily, "switchgear_request_log_dropped", "Request records dropped unwritten "
     "because the writer held store.queue_size records.", "dropped"),
    (CounterMetricFamily, "switchgear_request_log_write_failures", "Failed writes to the record "
     "store (each retried).", "failures"),
    (GaugeMetricFamily, "switchgear_request_log_pending", "Request records the writer holds: not "
     "yet written, set aside or dropped.", "pending"),
)
#: The connection guard's counts (gateway/connections.py).
CONNECTION_FAMILIES = (
    (GaugeMetricFamily, "switchgear_connections_open", "Client connections open now.", "open"),
    (CounterMetricFamily, "switchgear_connections_refused", "Connections reset at once: over the "
     "per-address or total bound.", "refused"),
    (CounterMetricFamily, "switchgear_connections_evicted", "Connections still sending headers "
     "closed to make room for a new one.", "evicted"),
    (CounterMetricFamily, "switchgear_connections_timed_out", "Connections closed for sending "
     "headers or a body too slowly.", "timed_out"),
)


def _use_created() -> bool:
    """Whether counters and histograms expose their ``_created`` series, as prometheus_client's
    own do (``PROMETHEUS_DISABLE_CREATED_SERIES`` turns them off)."""
    return bool(prometheus_metrics._use_created)


class CounterCell:
    """One labelled counter's value (a plain float: only the event loop's thread adds to it)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (not negative)."""
        self.value += amount


class LabelledCounter(Collector):
    """A labelled counter exposed exactly as prometheus_client's Counter is, for a fraction of
    its cost per increment: no lock, no child objects, no label checks (the event loop's thread
    alone counts and collects; label values are strings from a bounded set)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self.cells: dict[tuple[str, ...], CounterCell] = {}
        registry.register(self)

    def labels(self, *labels: str) -> CounterCell:
        """The counter of these label values (created at 0 when new)."""
        cell = self.cells.get(labels)
        if cell is None:
            cell = self.cells[labels] = CounterCell()
        return cell

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.name, self.documentation, "counter")]

    def collect(self) -> Iterable[Metric]:
        family = Metric(self.name, self.documentation, "counter")
        created = _use_created()
        for labels, cell in self.cells.items():
            named = dict(zip(self.labelnames, labels, strict=True))
            family.add_sample(f"{self.name}_total", named, cell.value)
            if created:
                family.add_sample(f"{self.name}_created", named, cell.created)
        return [family]


class HistogramCell:
    """One labelled histogram's buckets (the last one is +Inf, not cumulative) and sum."""

    __slots__ = ("bounds", "counts", "created", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        """Count ``value`` in its bucket."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: Iterable[float]) -> None:
        """Count every value in ``values``, for the price of a bisect each."""
        counts, bounds = self.counts, self.bounds
        added = 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            added += value
        self.total += added


class LabelledHistogram(Collector):
    """A labelled histogram exposed exactly as prometheus_client's Histogram is (with its
    ``_created`` series when ``created``), for a bisect per observation; observed and collected
    on the event loop's thread only, like ``LabelledCounter``."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry,
                 created: bool = True) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(bound) for bound in buckets)
        #: Each bucket's ``le`` label, as prometheus_client writes it.
        self.edges: tuple[str, ...] = (*map(floatToGoString, self.bounds), "+Inf")
        self.created = created
        self.cells: dict[tuple[str, ...], HistogramCell] = {}
        registry.register(self)

    def labels(self, *labels: str) -> HistogramCell:
        """The histogram of these label values (empty when new)."""
        cell = self.cells.get(labels)
        if cell is None:
            cell = self.cells[labels] = HistogramCell(self.bounds)
        return cell

    def observe_many(self, labels: tuple[str, ...], values: Iterable[float]) -> None:
        """Observe every value in ``values`` under ``labels``."""
        self.labels(*labels).observe_many(values)

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.name, self.documentation, "histogram")]

    def collect(self) -> Iterable[Metric]:
        family = Metric(self.name, self.documentation, "histogram")
        created = self.created and _use_created()
        for labels, cell in self.cells.items():
            named = dict(zip(self.labelnames, labels, strict=True))
            for edge, count in zip(self.edges, accumulate(cell.counts), strict=True):
                family.add_sample(f"{self.name}_bucket", {**named, "le": edge}, float(count))
            family.add_sample(f"{self.name}_count", named, float(sum(cell.counts)))
            family.add_sample(f"{self.name}_sum", named, cell.total)
            if created:
                family.add_sample(f"{self.name}_created", named, cell.created)
        return [family]


class BulkHistogram(LabelledHistogram):
    """A labelled histogram that takes many observations at once (a stream's token gaps), with
    no ``_created`` series."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        super().__init__(name, documentation, labelnames, buckets, registry, created=False)


class GaugeValue(Collector):
    """An unlabelled gauge kept as a plain number (raised and lowered on the event loop's
    thread), exposed as prometheus_client's Gauge is."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0.0
        registry.register(self)

    def inc(self) -> None:
        """Add one."""
        self.value += 1

    def dec(self) -> None:
        """Take one away."""
        self.value -= 1

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation, value=self.value)]


@dataclass(frozen=True, slots=True)
class SLOFigures:
    """One SLO's figures at its latest evaluation, as /metrics shows them: its target, the
    requests and bad ones over its window, the error budget left, the burn rate per window (by
    its unscaled name, e.g. ``5m``) and whether each severity's alert is firing."""

    slo: str
    target: float
    requests: int
    bad: int
    budget_remaining: float
    burn_rates: Mapping[str, float]
    firing: Mapping[str, bool]
    evaluated_at: float


class SLOSeries(Collector):
    """The SLO gauges: the figures the SLO monitor last published, whole (an SLO no longer
    configured disappears with the next publication)."""

    def __init__(self) -> None:
        self.figures: tuple[SLOFigures, ...] = ()

    def publish(self, figures: Iterable[SLOFigures]) -> None:
        """Replace the figures shown (the monitor calls this after each evaluation)."""
        self.figures = tuple(figures)

    def describe(self) -> Iterable[Metric]:
        return []  # families come and go with the SLOs configured: nothing to check up front

    def collect(self) -> Iterable[Metric]:
        def family(name: str, documentation: str, *labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"switchgear_slo_{name}", documentation,
                                     labels=["slo", *labels])

        target = family("objective", "The SLO's target: the share of good requests it promises.")
        sli = family("sli", "The share of good requests over the SLO's window (absent without "
                     "requests).")
        requests = family("requests", "Requests the SLO counted over its window.")
        bad = family("bad_requests", "Bad requests over the SLO's window.")
        budget = family("error_budget_remaining", "The share of the window's error budget not "
                        "yet spent (below 0 once overspent).")
        burn = family("burn_rate", "Bad share over the allowed share in each alerting window "
                      "(1 spends the budget exactly over the SLO's window).", "window")
        firing = family("alert_firing", "1 while the SLO's alert of this severity fires.",
                        "severity")
        evaluated = family("evaluated_timestamp_seconds", "When the figures were computed "
                           "(seconds since the epoch).")
        for figures in self.figures:
            name = [figures.slo]
            target.add_metric(name, figures.target)
            requests.add_metric(name, figures.requests)
            bad.add_metric(name, figures.bad)
            if figures.requests:
                sli.add_metric(name, (figures.requests - figures.bad) / figures.requests)
            budget.add_metric(name, figures.budget_remaining)
            for window, rate in figures.burn_rates.items():
                burn.add_metric([figures.slo, window], rate)
            for severity, on in figures.firing.items():
                firing.add_metric([figures.slo, severity], 1.0 if on else 0.0)
            evaluated.add_metric(name, figures.evaluated_at)
        return [target, sli, requests, bad, budget, burn, firing, evaluated]


#: The routing figures of a deployment exported as gauges: (name after ``switchgear_deployment_``,
#: help, key in the router's snapshot, factor to the exported unit).
ROUTING_FIGURES = (
    ("in_flight", "Requests on the deployment now.", "in_flight", 1.0),
    ("consecutive_failures", "Failed attempts in a row.", "consecutive_failures", 1.0),
    ("ejections", "Ejections in a row (each doubles the next ejection's length; back to 0 after "
     "a healthy stretch).", "ejections", 1.0),
    ("error_ratio", "Failed share of the deployment's recent attempts (the outlier detector's "
     "window).", "error_ratio", 1.0),
    ("ewma_ttft_seconds", "Peak-EWMA time to first token the router ranks deployments by.",
     "ewma_ttft_ms", 0.001),
    ("ewma_latency_seconds", "Peak-EWMA whole-attempt latency.", "ewma_total_ms", 0.001),
)


class RoutingCollector(Collector):
    """Each configured deployment's routing state, read from the router's snapshot (the figures
    of /admin/routing) when /metrics is scraped: its health state, load, failures, ejections and
    EWMA latencies. Labels come from the config only; nothing until ``source`` is set."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, Any]] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # families follow the deployments configured: nothing to check up front

    def collect(self) -> Iterable[Metric]:
        if self.source is None:
            return []
        labels = ["model", "deployment"]
        state = GaugeMetricFamily("switchgear_deployment_state", "1 for the deployment's health "
                                  "state (healthy, ejected, probing).", labels=[*labels, "state"])
        figures = [(GaugeMetricFamily(f"switchgear_deployment_{name}", documentation,
                                      labels=labels), key, factor)
                   for name, documentation, key, factor in ROUTING_FIGURES]
        for alias, routes in self.source().items():
            for deployment in routes["deployments"]:
                where = [alias, deployment["name"]]
                state.add_metric([*where, deployment["state"]], 1.0)
                for family, key, factor in figures:
                    value = deployment.get(key)
                    if value is not None:
                        family.add_metric(where, value * factor)
        return [state, *(family for family, _, _ in figures)]


class FleetCollector(Collector):
    """The fleet-wide limits' places (store/leases.py), read when /metrics is scraped: those
    this replica holds and those the whole fleet held at its last look, by what they limit
    (``max_concurrency`` of a model's deployment, or ``tiers_capacity``). Nothing until
    ``source`` is set; labels come from the config."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[FleetPlaces]] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # families follow the fleet-scoped limits configured

    def collect(self) -> Iterable[Metric]:
        if self.source is None:
            return []
        labels = ["limit", "model", "deployment"]
        held = GaugeMetricFamily("switchgear_fleet_places_held", "Places of a fleet-wide limit "
                                 "this replica holds now.", labels=labels)
        seen = GaugeMetricFamily("switchgear_fleet_places_in_use", "Places of a fleet-wide "
                                 "limit held by the whole fleet, as this replica last saw.",
                                 labels=labels)
        for places in self.source():
            limit, model, deployment = (*places.labels, "", "")[:3]
            held.add_metric([limit, model, deployment], places.held)
            seen.add_metric([limit, model, deployment], places.seen)
        return [held, seen]


class TierCollector(Collector):
    """The priority gate's queues (admission/tiers.py), read when /metrics is scraped: requests
    waiting and running per tier on this replica, what an autoscaler reads as queue depth.
    Nothing while there is no gate."""

    def __init__(self) -> None:
        #: Returns the gate's snapshot (``tiers``: name → ``waiting``, ``in_use``), or None.
        self.source: Callable[[], Any] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # nothing without a gate

    def collect(self) -> Iterable[Metric]:
        snapshot = None if self.source is None else self.source()
        if snapshot is None:
            return []
        waiting = GaugeMetricFamily("switchgear_tier_waiting", "Requests waiting in the priority "
                                    "gate's queue of their tier now.", labels=["tier"])
        running = GaugeMetricFamily("switchgear_tier_running", "Requests of the tier holding a "
                                    "running place of the priority gate now.", labels=["tier"])
        for tier, figures in snapshot.tiers.items():
            waiting.add_metric([tier], figures.waiting)
            running.add_metric([tier], figures.in_use)
        return [waiting, running]


@dataclass(slots=True, frozen=True)
class _Series:
    """The cells of one (model, deployment, tenant, feature), looked up once."""

    labels: tuple[str, str, str, str]
    e2e: HistogramCell
    ttft: HistogramCell
    tpot: HistogramCell
    throughput: HistogramCell
    input_tokens: CounterCell
    output_tokens: CounterCell
    cost: CounterCell
    saved: CounterCell
    #: Its finished-requests counters by status (the status's label made once per status).
    statuses: dict[int, CounterCell]
    #: Its model's cache-outcome counters by outcome.
    outcomes: dict[str, CounterCell]
    #: Its model and tenant's priority label and queue-wait histogram by raw priority.
    waits: dict[str | None, tuple[str, HistogramCell]]
    #: Its output-check counters by verdict (passed or not).
    verdicts: dict[bool, CounterCell]


class BatchSeries:
    """The batch runner's figures (batch/runner.py): lines by how they ended here, lines in
    flight here, the share of the deployments' places they hold, the times the runner stood
    back for waiting interactive or standard requests, and the batches by status (read from
    the store, so the fleet's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lines = Counter(
            "switchgear_batch_lines", "Batch lines ended on this replica: done, failed, retry "
            "(refused for now, pending again), cancelled, lost_lease (another replica had "
            "taken the line over; its result was not written).", ["state"], registry=registry)
        self.in_flight = Gauge(
            "switchgear_batch_lines_in_flight", "Batch lines running on this replica now.",
            registry=registry)
        self.share = Gauge(
            "switchgear_batch_capacity_share", "Batch lines running here over the deployments' "
            "max_concurrency: the share of capacity the batch runner holds.", registry=registry)
        self.yields = Counter(
            "switchgear_batch_yields", "Times the batch runner claimed nothing because "
            "interactive or standard requests waited.", registry=registry)
        self.batches = Gauge(
            "switchgear_batches", "Batches in the store by status.", ["status"],
            registry=registry)
        self._statuses: set[str] = set()

    def observe_batches(self, counts: Mapping[str, int]) -> None:
        """Set the batches-by-status gauge (a status seen before and gone now reads 0)."""
        self._statuses.update(counts)
        for status in self._statuses:
            self.batches.labels(status).set(counts.get(status, 0))


class GatewayMetrics:
    """Requests, latencies (e2e, TTFT, ITL, TPOT), throughput, tokens, cost, queue wait, cache
    outcomes, retries, sheds, requests in flight, upstream errors, the deployments' routing
    state and the SLOs' figures."""

    def __init__(self, max_label_values: int = 100) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.model, self.deployment, self.tenant, self.feature, self.priority = (
            BoundedLabel(max_label_values) for _ in (*SERIES_LABELS, "priority"))
        self.request_log = CountsCollector(WRITER_FAMILIES)
        registry.register(self.request_log)
        self.connections = CountsCollector(CONNECTION_FAMILIES)
        registry.register(self.connections)
        series = list(SERIES_LABELS)
        self.requests = LabelledCounter(
            "switchgear_requests", "Finished requests.",
            ["model", "deployment", "status", "tenant", "feature"], registry)
        self.latency = LabelledHistogram(
            "switchgear_request_duration_seconds", "End-to-end request latency.",
            series, LATENCY_BUCKETS, registry)
        self.ttft = LabelledHistogram(
            "switchgear_time_to_first_token_seconds",
            "Time from arrival to the first token (the whole answer when not streamed).",
            series, LATENCY_BUCKETS, registry)
        self.itl = BulkHistogram(
            "switchgear_inter_token_latency_seconds",
            "Gaps between consecutive streamed chunks that carry choices.",
            series, TOKEN_BUCKETS, registry)
        self.tpot = LabelledHistogram(
            "switchgear_time_per_output_token_seconds",
            "(e2e - TTFT) / (output tokens - 1), for streams of more than one token.",
            series, TOKEN_BUCKETS, registry)
        self.throughput = LabelledHistogram(
            "switchgear_output_tokens_per_second",
            "Output tokens of a request divided by its end-to-end latency.",
            series, THROUGHPUT_BUCKETS, registry)
        self.queue_wait = LabelledHistogram(
            "switchgear_queue_wait_seconds",
            "Time waiting for a running place (priority gate) and a deployment slot.",
            ["model", "tenant", "priority"], LATENCY_BUCKETS, registry)
        self.tokens = LabelledCounter(
            "switchgear_tokens", "Tokens processed.",
            ["model", "deployment", "direction"], registry)
        self.cost = LabelledCounter(
            "switchgear_cost", "What requests cost, in the ledger's currency (ledger.currency), "
            "as the ledger prices them: tokens at the deployment's prices plus self-hosted "
            "instance time.", series, registry)
        self.saved = LabelledCounter(
            "switchgear_cost_saved", "What cache hits and joined requests saved, in the "
            "ledger's currency: the cost of producing the answers they reused.", series,
            registry)
        self.slo = SLOSeries()
        registry.register(self.slo)
        self.routing = RoutingCollector()
        registry.register(self.routing)
        self.fleet = FleetCollector()
        registry.register(self.fleet)
        self.tiers = TierCollector()
        registry.register(self.tiers)
        self.in_flight = GaugeValue(
            "switchgear_in_flight_requests", "Requests being served now.", registry)
        self.draining = Gauge(
            "switchgear_draining", "1 while this replica drains: it was told to stop, /readyz "
            "answers 503 and it finishes what it has before it exits.", registry=registry)
        self.cache = LabelledCounter(
            "switchgear_cache_requests", "Requests by cache outcome (hit, miss, coalesced, bypass).",
            ["model", "outcome"], registry)
        self.retries = LabelledCounter(
            "switchgear_retries", "Attempts after a request's first, by the deployment retried on.",
            ["model", "deployment"], registry)
        self.shed = LabelledCounter(
            "switchgear_shed_requests", "Requests shed by the priority gate (503, Retry-After).",
            ["model", "tenant", "priority"], registry)
        self.cache_evictions = Counter(
            "switchgear_cache_evictions", "Cached answers pushed out by the size bound.",
            registry=registry)
        self.output_checked = LabelledCounter(
            "switchgear_output_checked_requests", "Answers judged by output checks, by verdict "
            "(pass: every check passed).", [*series, "verdict"], registry)
        self.guard_checks = LabelledCounter(
            "switchgear_guard_checks", "Guard checks run, by route, model, check, stage, verdict "
            "and action.", ["route", "model", "check", "stage", "verdict", "action"],
            registry)
        self.upstream_errors = LabelledCounter(
            "switchgear_upstream_errors", "Failed attempts against a deployment.",
            ["model", "deployment", "error"], registry)
        self.quality_signal = Gauge(
            "switchgear_quality_signal", "A quality signal's value in the detector's recent or "
            "baseline window, at its last evaluation.",
            ["dimension", "name", "signal", "window"], registry=registry)
        self.quality_shift = Gauge(
            "switchgear_quality_shift", "1 while a quality signal is shifted beyond its margin.",
            ["dimension", "name", "signal"], registry=registry)
        self.quality_alerts = Counter(
            "switchgear_quality_alerts", "Quality shifts detected (each counted when it starts).",
            ["dimension", "name", "signal"], registry=registry)
        self.batch = BatchSeries(registry)
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._raw_series: dict[tuple[str, str | None, str, str | None], _Series] = {}

    def _series_of(self, labels: tuple[str, str, str, str]) -> _Series:
        found = self._series.get(labels)
        if found is None:
            model, deployment = labels[:2]
            found = self._series[labels] = _Series(
                labels, self.latency.labels(*labels), self.ttft.labels(*labels),
                self.tpot.labels(*labels), self.throughput.labels(*labels),
                self.tokens.labels(model, deployment, "input"),
                self.tokens.labels(model, deployment, "output"),
                self.cost.labels(*labels), self.saved.labels(*labels), {}, {}, {}, {})
        return found

    def _series_for(self, model: str, exchange: Exchange) -> _Series:
        """The series of ``exchange`` under the model label ``model``: its other labels worked
        out once per raw value (a label, once given, never changes: the values a capped label
        keeps are never forgotten, and one past the cap always reads 'other')."""
        principal = exchange.principal
        raw = (model, exchange.deployment, principal.tenant, principal.feature)
        found = self._raw_series.get(raw)
        if found is None:
            found = self._series_of((model, self.deployment(raw[1] or ""), self.tenant(raw[2]),
                                     self.feature(raw[3] or "")))
            if len(self._raw_series) < RAW_SERIES_LIMIT:
                self._raw_series[raw] = found
        return found

    def _wait_of(self, series: _Series, raw: str | None) -> tuple[str, HistogramCell]:
        """The priority label of ``raw`` (a request's priority, None: unknown) and the
        queue-wait histogram of ``series``'s model and tenant at that priority."""
        found = series.waits.get(raw)
        if found is None:
            model, _, tenant, _ = series.labels
            priority = self.priority(raw or UNKNOWN)
            found = series.waits[raw] = (priority, self.queue_wait.labels(model, tenant, priority))
        return found

    def _requests_of(self, series: _Series, status: int) -> CounterCell:
        """The finished-requests counter of ``series`` with ``status``."""
        cell = series.statuses.get(status)
        if cell is None:
            model, deployment, tenant, feature = series.labels
            cell = series.statuses[status] = self.requests.labels(
                model, deployment, str(status), tenant, feature)
        return cell

    def watch_connections(self, guard: object) -> None:
        """Export the connection guard's counts (open, refused, evicted, timed out)."""
        self.connections.source = guard

    def watch_routing(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        """Export the deployments' routing state that ``snapshot`` (the serving router's
        ``snapshot``) returns at each scrape."""
        self.routing.source = snapshot

    def watch_fleet(self, places: Callable[[], Iterable[FleetPlaces]]) -> None:
        """Export the fleet-wide limits' places that ``places`` lists at each scrape."""
        self.fleet.source = places

    def watch_tiers(self, snapshot: Callable[[], Any]) -> None:
        """Export the priority gate's queues that ``snapshot`` (the serving gate's ``snapshot``,
        or None without a gate) returns at each scrape."""
        self.tiers.source = snapshot

    def watch_writer(self, writer: RecordWriter) -> None:
        """Export ``writer``'s counts (written, set aside, dropped, pending) with the other
        metrics."""
        self.request_log.source = writer

    def observer(self, models: Collection[str] | None) -> Callable[[Exchange], None]:
        """The Recorder step counting finished exchanges of a config whose aliases are
        ``models`` (every other requested model is labelled ``unknown``); None: unchecked."""
        return partial(self.observe, models=None if models is None else frozenset(models))

    def observe(self, exchange: Exchange, models: Collection[str] | None = None) -> None:
        """Count a finished exchange (a Recorder step); a model not in ``models`` (when given)
        is labelled ``unknown``."""
        requested = exchange.model
        model = (UNKNOWN if models is not None and (len(requested) > LABEL_LIMIT
                                                     or requested not in models)
                 else self.model(requested))
        series = self._series_for(model, exchange)
        _, deployment, tenant, feature = series.labels
        self._requests_of(series, exchange.status).value += 1
        received, done = exchange.received, exchange.done
        latency = None if done is None else done - received
        if latency is not None:
            series.e2e.observe(latency)
        first = exchange.first_token
        if first is not None:
            series.ttft.observe(first - received)
        usage = exchange.usage
        output = usage.completion_tokens
        if exchange.stream:
            self._observe_stream(exchange, series, output)
        if output and latency:
            series.throughput.observe(output / latency)
        if usage.prompt_tokens:
            series.input_tokens.value += usage.prompt_tokens
        if output:
            series.output_tokens.value += output
        if exchange.cost:
            series.cost.value += exchange.cost
        elif exchange.saved_cost:
            series.saved.value += exchange.saved_cost
        outcome = exchange.cache_status
        if outcome is not None:
            cell = series.outcomes.get(outcome)
            if cell is None:
                cell = series.outcomes[outcome] = self.cache.labels(model, outcome)
            cell.value += 1
        if exchange.queue_wait is not None:
            priority, waited = self._wait_of(series, exchange.priority)
            waited.observe(exchange.queue_wait)
            if exchange.shed:
                self.shed.labels(model, tenant, priority).inc()
        passed = exchange.output_passed
        if passed is not None:
            cell = series.verdicts.get(passed)
            if cell is None:
                cell = series.verdicts[passed] = self.output_checked.labels(
                    model, deployment, tenant, feature, "pass" if passed else "fail")
            cell.value += 1
        served = self.model(exchange.served_alias) if exchange.served_alias else model
        if exchange.checks:
            self._observe_checks(exchange, model, served)
        served_by = exchange.deployment
        for number, attempt in enumerate(exchange.attempts):
            # The served deployment's label is in hand (and labelling it again would change
            # nothing); any other is labelled, needed or not, as it always was.
            name = (deployment if attempt.deployment == served_by
                    else self.deployment(attempt.deployment))
            if number:
                self.retries.labels(model, name).inc()
            if attempt.error is not None:
                self.upstream_errors.labels(model, name, attempt.error).inc()

    def _observe_checks(self, exchange: Exchange, model: str, served: str) -> None:
        """Count the guard checks ``exchange`` ran (``served``: the label of the alias that
        answered)."""
        counter = self.guard_checks
        cells = counter.cells
        for check in exchange.checks:
            labels = (model, served, check["check"], check["stage"], check["verdict"],
                      check["action"])
            cell = cells.get(labels)
            if cell is None:
                cell = counter.labels(*labels)
            cell.value += 1

    def _observe_stream(self, exchange: Exchange, series: _Series, output: int) -> None:
        times = exchange.chunk_times
        if times and len(times) > 1:
            self.itl.observe_many(series.labels, _gaps(times))
        first, done = exchange.first_token, exchange.done
        if output > 1 and first is not None and done is not None:
            series.tpot.observe((done - first) / (output - 1))

    def render(self) -> bytes:
        """The text exposition format for GET /metrics."""
        return generate_latest(self.registry)


def _gaps(times: list[float]) -> Iterator[float]:
    """The gaps between consecutive ``times`` (subtracted in C, not by a generator)."""
    return map(sub, islice(times, 1, None), times)
