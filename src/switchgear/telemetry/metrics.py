"""Prometheus metrics of the gateway, in a registry of their own (one per app, never global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from switchgear.exchange import Exchange

#: Seconds; spans a cache hit (sub-millisecond) to a long generation.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0, 120.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    """Requests, latency, time to first token, tokens, requests in flight and upstream errors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "switchgear_requests", "Finished requests.",
            ["model", "deployment", "status"], registry=self.registry)
        self.latency = Histogram(
            "switchgear_request_duration_seconds", "End-to-end request latency.",
            ["model", "deployment"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram(
            "switchgear_time_to_first_token_seconds",
            "Time from arrival to the first token (the whole answer when not streamed).",
            ["model", "deployment"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter(
            "switchgear_tokens", "Tokens processed.",
            ["model", "deployment", "direction"], registry=self.registry)
        self.in_flight = Gauge(
            "switchgear_in_flight_requests", "Requests being served now.", registry=self.registry)
        self.cache = Counter(
            "switchgear_cache_requests", "Requests by cache outcome (hit, miss, coalesced, bypass).",
            ["model", "outcome"], registry=self.registry)
        self.cache_evictions = Counter(
            "switchgear_cache_evictions", "Cached answers pushed out by the size bound.",
            registry=self.registry)
        self.upstream_errors = Counter(
            "switchgear_upstream_errors", "Failed attempts against a deployment.",
            ["model", "deployment", "error"], registry=self.registry)

        self.quality_signal = Gauge(
            "switchgear_quality_signal", "A quality signal's value in the detector's recent or "
            "baseline window, at its last evaluation.",
            ["dimension", "name", "signal", "window"], registry=self.registry)
        self.quality_shift = Gauge(
            "switchgear_quality_shift", "1 while a quality signal is shifted beyond its margin.",
            ["dimension", "name", "signal"], registry=self.registry)
        self.quality_alerts = Counter(
            "switchgear_quality_alerts", "Quality shifts detected (each counted when it starts).",
            ["dimension", "name", "signal"], registry=self.registry)

    def observe(self, exchange: Exchange) -> None:
        """Count a finished exchange."""
        model = exchange.model
        deployment = exchange.deployment or ""
        self.requests.labels(model, deployment, str(exchange.status)).inc()
        latency = exchange.latency
        if latency is not None:
            self.latency.labels(model, deployment).observe(latency)
        ttft = exchange.time_to_first_token
        if ttft is not None:
            self.ttft.labels(model, deployment).observe(ttft)
        usage = exchange.usage
        if usage.prompt_tokens:
            self.tokens.labels(model, deployment, "input").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self.tokens.labels(model, deployment, "output").inc(usage.completion_tokens)
        self.cache.labels(model, exchange.cache_status).inc()
        for attempt in exchange.attempts:
            if attempt.error is not None:
                self.upstream_errors.labels(model, attempt.deployment, attempt.error).inc()

    def render(self) -> bytes:
        """The text exposition format for GET /metrics."""
        return generate_latest(self.registry)
