"""A deployment as the router sees it: its backend, weight, price, health and live load.

Its ``max_concurrency`` holds on this replica (``Deployment``: a counter, no I/O) or across the
fleet (``FleetDeployment``: places in a Redis semaphore, store/leases.py), chosen when the
deployment is built from ``max_concurrency_scope``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from switchgear.backends.base import Backend
from switchgear.config import DeploymentConfig, OutlierConfig
from switchgear.routing.health import DeploymentHealth
from switchgear.store.leases import FleetSemaphore


@dataclass(eq=False)
class Deployment:
    """One deployment of a model alias, with its health and its requests in flight."""

    alias: str
    config: DeploymentConfig
    backend: Backend
    outlier: OutlierConfig = field(default_factory=OutlierConfig)
    in_flight: int = 0
    #: Attempts sent here (for the share of traffic in /admin/routing).
    attempts: int = 0
    health: DeploymentHealth = field(init=False)
    _freed: asyncio.Event | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.health = DeploymentHealth(self.outlier)

    @property
    def name(self) -> str:
        """The deployment's configured name."""
        return self.config.name

    @property
    def upstream_model(self) -> str:
        """The model name the upstream server knows (defaults to the alias)."""
        return self.config.model or self.alias

    @property
    def price_per_million(self) -> float:
        """Input plus output price per million tokens (the cost policy's yardstick)."""
        price = self.config.charged_price
        return price.input_per_million + price.output_per_million

    @property
    def has_room(self) -> bool:
        """Whether another request fits under the deployment's max_concurrency."""
        return self.in_flight < self.config.max_concurrency

    def acquire(self) -> None:
        """Count a request in flight here."""
        self.in_flight += 1
        self.attempts += 1

    def release(self) -> None:
        """A request here ended; wake one that waits for room."""
        self.in_flight -= 1
        if self._freed is not None:
            self._freed.set()

    async def wait_for_room(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a free slot; whether one is free now."""
        if self.has_room or seconds <= 0:
            return self.has_room
        if self._freed is None:
            self._freed = asyncio.Event()
        try:
            async with asyncio.timeout(seconds):
                while not self.has_room:
                    self._freed.clear()
                    await self._freed.wait()
        except TimeoutError:
            return False
        return True


@dataclass(eq=False)
class FleetDeployment(Deployment):
    """A deployment whose ``max_concurrency`` holds across the replicas sharing ``places``.

    An attempt takes a place with ``take_place`` (waiting for one on the fleet's semaphore)
    before ``acquire``; ``release`` gives it back. ``in_flight`` still counts this replica's
    requests (for the policies and /admin/routing); ``has_room`` is a hint from the fleet's
    count as last seen, used to order and pick deployments, never to grant a place.
    """

    places: FleetSemaphore = field(kw_only=True)

    @property
    def has_room(self) -> bool:
        """Whether the fleet had a free place at this replica's last look, counting the
        requests here taking one since."""
        return self.places.demand < self.config.max_concurrency

    async def wait_for_room(self, seconds: float) -> bool:
        """True at once: the fleet's room is waited for when a place is taken (``take_place``)."""
        return True

    async def take_place(self, seconds: float) -> bool:
        """Take one of the fleet's places for an attempt, waiting up to ``seconds``; whether
        one was taken. StateUnavailable when the shared state cannot answer."""
        return await self.places.acquire(self.config.max_concurrency, seconds)

    def release(self) -> None:
        """A request here ended: give its fleet place back, then count it out here."""
        self.places.release()
        super().release()
