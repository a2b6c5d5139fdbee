"""The gateway's state: everything shared between requests, built once and passed explicitly."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from switchgear.backends import build_backend
from switchgear.config import Config
from switchgear.ledger.cost import PriceBook
from switchgear.pipeline import Handler
from switchgear.pipeline.record import Record, Recorder
from switchgear.pipeline.route import Route
from switchgear.routing.budget import RetryBudget
from switchgear.routing.checks import HealthChecker
from switchgear.routing.deployment import Deployment
from switchgear.routing.router import Router
from switchgear.store import open_store
from switchgear.store.base import RecordStore
from switchgear.store.writer import RecordWriter
from switchgear.telemetry.metrics import GatewayMetrics

log = logging.getLogger("switchgear.gateway")

#: How long shutdown keeps trying to write pending records to an unreachable store.
DRAIN_SECONDS = 60


@dataclass(slots=True)
class AppState:
    """Config, deployments, the assembled pipeline, the record writer and the metrics."""

    config: Config
    router: Router
    pipeline: Handler
    recorder: Recorder
    store: RecordStore
    writer: RecordWriter
    metrics: GatewayMetrics
    budget: RetryBudget
    checker: HealthChecker | None

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
        prices = PriceBook({(d.alias, d.name): d.config.price for d in router.deployments()})
        store = open_store(config.store.url)
        writer = RecordWriter(store, batch_size=config.store.batch_size,
                              flush_interval=config.store.flush_interval_ms / 1000,
                              queue_size=config.store.queue_size)
        metrics = GatewayMetrics()
        recorder = Recorder.standard(prices, metrics, writer, router.observe)
        budget = RetryBudget(routing.retry)
        route = Route(router, routing.retry, budget, routing.queue_timeout_ms / 1000)
        pipeline: Handler = Record(route, recorder)
        interval = routing.health_check_interval_s
        checker = HealthChecker(router.deployments(), interval) if interval else None
        return cls(config, router, pipeline, recorder, store, writer, metrics, budget, checker)

    async def start(self) -> None:
        """Open the store, start the record writer and every backend."""
        await self.store.open()
        self.writer.start()
        await asyncio.gather(*(d.backend.start() for d in self.router.deployments()))
        if self.checker is not None:
            self.checker.start()
        log.info("switchgear ready: models %s", ", ".join(self.router.aliases))

    async def stop(self) -> None:
        """Close the backends, then write every record still pending and close the store."""
        if self.checker is not None:
            await self.checker.stop()
        await asyncio.gather(*(d.backend.aclose() for d in self.router.deployments()),
                             return_exceptions=True)
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await self.writer.close()
        except TimeoutError:
            log.error("the store stayed unwritable for %ss at shutdown: %d records not written",
                      DRAIN_SECONDS, self.writer.pending)
        await self.store.close()
        log.info("switchgear stopped: %d records written", self.writer.written)
