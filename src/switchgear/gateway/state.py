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

    @classmethod
    def build(cls, config: Config) -> AppState:
        """Assemble the state for ``config``; nothing is connected or loaded until ``start``."""
        deployments = {
            alias: [Deployment(alias, d, build_backend(d)) for d in model.deployments]
            for alias, model in config.models.items()
        }
        router = Router(deployments)
        prices = PriceBook({(d.alias, d.name): d.config.price for d in router.deployments()})
        store = open_store(config.store.url)
        writer = RecordWriter(store, batch_size=config.store.batch_size,
                              flush_interval=config.store.flush_interval_ms / 1000,
                              queue_size=config.store.queue_size)
        metrics = GatewayMetrics()
        recorder = Recorder(prices, metrics, writer)
        pipeline: Handler = Record(Route(router), recorder)
        return cls(config, router, pipeline, recorder, store, writer, metrics)

    async def start(self) -> None:
        """Open the store, start the record writer and every backend."""
        await self.store.open()
        self.writer.start()
        await asyncio.gather(*(d.backend.start() for d in self.router.deployments()))
        log.info("switchgear ready: models %s", ", ".join(self.router.aliases))

    async def stop(self) -> None:
        """Close the backends, then write every record still pending and close the store."""
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
