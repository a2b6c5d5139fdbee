"""A deployment as the router sees it: its backend, weight, price and live load."""

from __future__ import annotations

from dataclasses import dataclass

from switchgear.backends.base import Backend
from switchgear.config import DeploymentConfig


@dataclass(slots=True, eq=False)
class Deployment:
    """One deployment of a model alias, with its live count of requests in flight."""

    alias: str
    config: DeploymentConfig
    backend: Backend
    in_flight: int = 0

    @property
    def name(self) -> str:
        """The deployment's configured name."""
        return self.config.name

    @property
    def upstream_model(self) -> str:
        """The model name the upstream server knows (defaults to the alias)."""
        return self.config.model or self.alias

    @property
    def has_room(self) -> bool:
        """Whether another request fits under the deployment's max_concurrency."""
        return self.in_flight < self.config.max_concurrency
