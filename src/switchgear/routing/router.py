"""The router: which deployments of an alias to try, in which order.

Minimal for now: one weighted random pick first, then the alias's other deployments by weight as
the fallbacks a failed attempt moves on to. Health, breakers and policies plug in here later.
"""

from __future__ import annotations

import random

from switchgear.errors import ModelNotFound
from switchgear.routing.deployment import Deployment


class Router:
    """Orders an alias's deployments for one request."""

    def __init__(self, deployments: dict[str, list[Deployment]], seed: int | None = None) -> None:
        self._deployments = {
            alias: sorted(group, key=lambda d: -d.config.weight)
            for alias, group in deployments.items()
        }
        self._weights = {
            alias: [d.config.weight for d in group] for alias, group in self._deployments.items()
        }
        self._random = random.Random(seed)

    @property
    def aliases(self) -> list[str]:
        """The model aliases clients may ask for."""
        return list(self._deployments)

    def deployments(self) -> list[Deployment]:
        """Every deployment of every alias."""
        return [d for group in self._deployments.values() for d in group]

    def plan(self, alias: str) -> list[Deployment]:
        """The deployments to try for ``alias``: a weighted pick, then the rest by weight."""
        group = self._deployments.get(alias)
        if group is None:
            raise ModelNotFound(f"The model '{alias}' does not exist.", param="model")
        if len(group) == 1:
            return group
        first = self._random.choices(group, weights=self._weights[alias])[0]
        return [first, *(d for d in group if d is not first)]
