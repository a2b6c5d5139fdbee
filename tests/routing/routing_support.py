"""Helpers for the routing tests: deployments over a fake backend, exchanges, a settable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from switchgear.backends.base import Body
from switchgear.config import DeploymentConfig, ModelConfig, OutlierConfig, Price
from switchgear.exchange import Exchange, Operation, Principal
from switchgear.routing.deployment import Deployment


class FakeBackend:
    """A stand-in for a model server. The routing building blocks under test (policies, health,
    the router's plan) only read a deployment's config and live state and never call its
    backend, so every method here fails loudly if one ever does."""

    name = "fake"

    async def start(self) -> None:
        """Never called by the code under test."""
        raise AssertionError("the routing building blocks never call the backend")

    async def complete(self, operation: Operation, body: Body, tier: str = "standard") -> Body:
        """Never called by the code under test."""
        raise AssertionError("the routing building blocks never call the backend")

    def stream(
        self, operation: Operation, body: Body, tier: str = "standard"
    ) -> AsyncIterator[Body]:
        """Never called by the code under test."""
        raise AssertionError("the routing building blocks never call the backend")

    async def check(self) -> None:
        """Never called by the code under test."""
        raise AssertionError("the routing building blocks never call the backend")

    async def aclose(self) -> None:
        """Never called by the code under test."""
        raise AssertionError("the routing building blocks never call the backend")


def deployment_config(name: str, *, weight: float = 1.0, price: float = 0.0,
                      max_concurrency: int = 64) -> DeploymentConfig:
    """A simulated deployment's config; ``price`` is split evenly over input and output."""
    return DeploymentConfig(
        name=name, backend="simulated", weight=weight, max_concurrency=max_concurrency,
        price=Price(input_per_million=price / 2, output_per_million=price / 2))


def make_deployment(name: str, *, alias: str = "m", weight: float = 1.0, price: float = 0.0,
                    max_concurrency: int = 64, outlier: OutlierConfig | None = None) -> Deployment:
    """A deployment of ``alias`` over a FakeBackend."""
    return Deployment(alias, deployment_config(name, weight=weight, price=price,
                                               max_concurrency=max_concurrency),
                      FakeBackend(), outlier or OutlierConfig())


def deployments_of(alias: str, model: ModelConfig) -> list[Deployment]:
    """Deployments for every DeploymentConfig of ``model``, over FakeBackends."""
    return [Deployment(alias, config, FakeBackend()) for config in model.deployments]


def make_exchange(model: str, *, user: str | None = None, key_id: str | None = None,
                  body: dict[str, Any] | None = None) -> Exchange:
    """A chat exchange for ``model`` from ``user`` / ``key_id``."""
    return Exchange(request_id="req", operation=Operation.CHAT,
                    body=body if body is not None else {"messages": []}, model=model,
                    principal=Principal(user=user, key_id=key_id))


class Clock:
    """A monotonic clock the test moves by hand (stands in for the ``time`` module)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        """The current fake time."""
        return self.now
