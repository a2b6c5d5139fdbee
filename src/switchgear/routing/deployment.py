"""A deployment as the router sees it: its backend, weight, price, health and live load."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from switchgear.backends.base import Backend
from switchgear.config import DeploymentConfig, OutlierConfig
from switchgear.routing.health import DeploymentHealth


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
        return self.config.price.input_per_million + self.config.price.output_per_million

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
