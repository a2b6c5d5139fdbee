"""The gateway's state: everything shared between requests, built once and passed explicitly."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from switchgear.admission.budgets import InProcessBudgets, RedisBudgets
from switchgear.admission.keys import KeyRing, bootstrap_key
from switchgear.admission.limits import InProcessLimiter, RedisLimiter
from switchgear.admission.state import connect_redis
from switchgear.admission.tiers import TierGate
from switchgear.backends import build_backend
from switchgear.config import Config, LimitsConfig, is_loopback
from switchgear.engine.metrics import EngineCollector, engine_stats
from switchgear.ledger.cost import PriceBook
from switchgear.pipeline import Handler
from switchgear.pipeline.admit import Admit, Authenticator, Quotas
from switchgear.pipeline.cache import Cache
from switchgear.pipeline.guard import Guard
from switchgear.pipeline.prioritize import Prioritize
from switchgear.pipeline.record import Record, Recorder, store_content
from switchgear.pipeline.route import Route
from switchgear.routing.budget import RetryBudget
from switchgear.routing.checks import HealthChecker
from switchgear.routing.deployment import Deployment
from switchgear.routing.router import Router
from switchgear.slo.monitor import SLOMonitor
from switchgear.store import open_store
from switchgear.store.base import RecordStore
from switchgear.store.writer import RecordWriter
from switchgear.telemetry.metrics import GatewayMetrics
from switchgear.telemetry.tracing import Tracer

log = logging.getLogger("switchgear.gateway")


def build_quotas(config: LimitsConfig) -> Quotas:
    """Rate limits and budgets: in this process, or in Redis when ``state_url`` is set."""
    if config.state_url is None:
        return Quotas(InProcessLimiter(), InProcessBudgets(), config)
    client = connect_redis(config.state_url)
    prefix = config.state_prefix
    return Quotas(RedisLimiter(client, prefix=prefix + "limit:"),
                  RedisBudgets(client, prefix=prefix + "budget:"), config, on_close=client.aclose)

#: How long shutdown keeps trying to write pending records to an unreachable store.
DRAIN_SECONDS = 60


@dataclass(slots=True)
class AppState:
    """Config, deployments, the assembled pipeline, the record writer, metrics and traces."""

    config: Config
    router: Router
    pipeline: Handler
    recorder: Recorder
    store: RecordStore
    writer: RecordWriter
    metrics: GatewayMetrics
    tracer: Tracer
    budget: RetryBudget
    checker: HealthChecker | None
    keys: KeyRing
    authenticator: Authenticator
    quotas: Quotas
    gate: TierGate | None
    cache: Cache
    slo: SLOMonitor

    @classmethod
    def build(cls, config: Config) -> AppState:
        """Assemble the state for ``config``; nothing is connected or loaded until ``start``."""
        routing = config.routing
        deployments = {
            alias: [Deployment(alias, d, build_backend(d), routing.outlier)
                    for d in model.deployments]
            for alias, model in config.models.items()
        }
        router = Router(config.models, deployments)
        prices = PriceBook.of(config)
        store = open_store(config.store.url)
        writer = RecordWriter(store, batch_size=config.store.batch_size,
                              flush_interval=config.store.flush_interval_ms / 1000,
                              queue_size=config.store.queue_size)
        metrics = GatewayMetrics(config.telemetry.max_label_values)
        metrics.registry.register(EngineCollector(lambda: engine_stats(router.deployments())))
        tracer = Tracer(config.telemetry)
        budget = RetryBudget(routing.retry)
        route = Route(router, routing.retry, budget, routing.queue_timeout_ms / 1000, tracer)
        admin_token = os.environ.get(config.auth.admin_key_env)
        keys = KeyRing(store, bootstrap_key(admin_token) if admin_token else None)
        authenticator = Authenticator(keys)
        quotas = build_quotas(config.limits)
        log_content = config.store.log_content
        recorder = Recorder.standard(prices, metrics, writer, router.observe, quotas.settle,
                                     *([store_content] if log_content else []),
                                     *([tracer.export] if tracer.exporting else []))
        gate = TierGate(config.tiers) if config.tiers is not None else None
        cache = Cache(Prioritize(route, gate), config.cache, prices, metrics.cache_evictions.inc)
        guards = config.guards
        guarded: Handler = cache if not (guards.input or guards.output or guards.routes
                                          or guards.keys) else Guard(cache, guards)
        pipeline: Handler = Record(Admit(guarded, authenticator, quotas), recorder)
        interval = routing.health_check_interval_s
        checker = HealthChecker(router.deployments(), interval) if interval else None
        return cls(config, router, pipeline, recorder, store, writer, metrics, tracer, budget,
                   checker, keys, authenticator, quotas, gate, cache, SLOMonitor(config.slo, store))

    async def start(self) -> None:
        """Open the store, start the record writer and every backend."""
        await self.store.open()
        await self.keys.load()
        self._choose_auth()
        self.writer.start()
        self.tracer.start()
        await asyncio.gather(*(d.backend.start() for d in self.router.deployments()))
        if self.checker is not None:
            self.checker.start()
        self.slo.start()
        log.info("switchgear ready: models %s", ", ".join(self.router.aliases))

    def _choose_auth(self) -> None:
        """Keys required, or open on loopback only: decided once at start-up, and said."""
        mode, host = self.config.auth.mode, self.config.server.host
        required = mode == "required" or (mode == "auto" and (
            self.keys.bootstrap is not None or not self.keys.empty or not is_loopback(host)))
        if required:
            self.authenticator.keys = self.keys
            log.info("API keys required (%d keys%s)", len(self.keys.all()),
                     ", bootstrap admin key set" if self.keys.bootstrap else "")
        else:
            self.authenticator.keys = None
            log.warning("authentication is OFF: open to anyone who can reach %s (loopback only); "
                        "set %s or create a key to require keys", host,
                        self.config.auth.admin_key_env)

    async def stop(self) -> None:
        """Close the backends, then write every record still pending and close the store."""
        if self.checker is not None:
            await self.checker.stop()
        await self.slo.stop()
        await self.cache.aclose()
        await asyncio.gather(*(d.backend.aclose() for d in self.router.deployments()),
                             return_exceptions=True)
        await self.quotas.aclose()
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await self.writer.close()
        except TimeoutError:
            log.error("the store stayed unwritable for %ss at shutdown: %d records not written",
                      DRAIN_SECONDS, self.writer.pending)
        await self.store.close()
        await self.tracer.stop()
        log.info("switchgear stopped: %d records written", self.writer.written)
