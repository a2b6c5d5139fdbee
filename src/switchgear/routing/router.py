"""The router: for one request, which alias (experiments), which deployments in which order
(policy over the healthy ones), and which aliases to fall back to."""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from switchgear.config import ModelConfig
from switchgear.errors import ModelNotFound
from switchgear.exchange import Exchange
from switchgear.routing.deployment import Deployment
from switchgear.routing.experiments import Experiment, RollBack
from switchgear.routing.health import State
from switchgear.routing.hedging import TailLatency
from switchgear.routing.policies import Policy, policy_for


@dataclass
class AliasRoutes:
    """Everything the router knows about one alias."""

    config: ModelConfig
    deployments: list[Deployment]
    policy: Policy
    experiment: Experiment | None = None
    picks: dict[str, int] = field(default_factory=dict)
    #: The recent tail of its times to first token, when the alias hedges after it.
    tail: TailLatency | None = None


class Router:
    """Plans where each request goes; reads live health and load, never blocks."""

    def __init__(self, models: dict[str, ModelConfig], deployments: dict[str, list[Deployment]],
                 seed: int | None = None, on_roll_back: RollBack | None = None,
                 rolled_back: Mapping[str, str] | None = None) -> None:
        """``on_roll_back`` is told of each canary rollback; ``rolled_back``: why each alias's
        canary was rolled back, as the router before this one knew it."""
        why = rolled_back or {}
        self.routes = {
            alias: AliasRoutes(model, deployments.get(alias, []), policy_for(model),
                               Experiment(alias, model, on_roll_back, why.get(alias))
                               if model.variants else None,
                               tail=TailLatency() if model.hedge else None)
            for alias, model in models.items()
        }
        self._random = random.Random(seed)

    @property
    def aliases(self) -> list[str]:
        """The model aliases clients may ask for."""
        return list(self.routes)

    def deployments(self) -> list[Deployment]:
        """Every deployment of every alias."""
        return [d for routes in self.routes.values() for d in routes.deployments]

    def _routes(self, alias: str) -> AliasRoutes:
        routes = self.routes.get(alias)
        if routes is None:
            raise ModelNotFound(f"The model '{alias}' does not exist.", param="model")
        return routes

    def resolve(self, exchange: Exchange) -> str:
        """The alias to serve ``exchange`` from: its own, or the variant its experiment picks."""
        routes = self._routes(exchange.model)
        if routes.experiment is None:
            return exchange.model
        exchange.variant = routes.experiment.choose(exchange, self._random)
        return exchange.variant

    def lone(self, alias: str) -> bool:
        """Whether ``alias`` has a single deployment (its failures can only be retried there)."""
        return len(self._routes(alias).deployments) == 1

    def hedge_delay(self, alias: str) -> float | None:
        """Seconds after which an attempt of ``alias`` without its first token is hedged (None:
        not hedged, or no tail known yet)."""
        routes = self._routes(alias)
        hedge = routes.config.hedge
        if hedge is None:
            return None
        if hedge.after_ms is not None:
            return hedge.after_ms / 1000
        return None if routes.tail is None else routes.tail.p95

    def first_token(self, alias: str, seconds: float) -> None:
        """Note how long an answer of ``alias`` took to its first token (for its hedging)."""
        routes = self.routes.get(alias)
        if routes is not None and routes.tail is not None:
            routes.tail.observe(seconds)

    def chain(self, alias: str) -> list[str]:
        """``alias`` then its fallbacks, in order."""
        return [alias, *self._routes(alias).config.fallbacks]

    def plan(self, alias: str) -> list[Deployment]:
        """The deployments of ``alias`` that can take a request now, best first."""
        routes = self._routes(alias)
        now = time.monotonic()
        available = [d for d in routes.deployments if d.health.available(now)]
        return routes.policy.order(available, self._random)

    def servable(self, reachable: Collection[Deployment]) -> dict[str, bool]:
        """Whether each alias can serve while just the ``reachable`` deployments answer: one of
        its own does, or (an experiment) every variant that gets traffic can, or a fallback
        can."""
        known: dict[str, bool] = {}

        def can(alias: str) -> bool:
            if alias not in known:
                known[alias] = False  # a cycle serves nothing
                routes = self.routes[alias]
                own = (any(d in reachable for d in routes.deployments) if routes.experiment is None
                       else all(can(variant) for variant, weight in zip(
                           routes.experiment.variants, routes.experiment.weights, strict=True)
                           if weight > 0))
                known[alias] = own or any(can(fallback) for fallback in routes.config.fallbacks)
            return known[alias]

        return {alias: can(alias) for alias in self.routes}

    def rollbacks(self) -> dict[str, str]:
        """Why each alias's canary was rolled back, for the aliases whose canary was."""
        return {alias: routes.experiment.guard.rolled_back
                for alias, routes in self.routes.items()
                if routes.experiment and routes.experiment.guard
                and routes.experiment.guard.rolled_back}

    def observe(self, exchange: Exchange) -> None:
        """Feed a finished request to its experiment's canary guard, if any."""
        routes = self.routes.get(exchange.model)
        if routes is not None and routes.experiment is not None and routes.experiment.guard:
            routes.experiment.guard.observe(exchange)

    def snapshot(self) -> dict[str, Any]:
        """Each alias's deployments with their state, load, latency, errors and traffic share."""
        now = time.monotonic()
        report: dict[str, Any] = {}
        for alias, routes in self.routes.items():
            total = sum(d.attempts for d in routes.deployments) or 1
            entry: dict[str, Any] = {"policy": routes.config.policy,
                                     "fallbacks": routes.config.fallbacks}
            entry["deployments"] = [{
                "name": d.name,
                "state": d.health.state.value,
                "reason": d.health.reason or None,
                "ejections": d.health.ejections,
                "ejected_for_s": (round(max(0.0, d.health.ejected_until - now), 3)
                                  if d.health.state is State.EJECTED else None),
                "consecutive_failures": d.health.consecutive_failures,
                "in_flight": d.in_flight,
                "ewma_ttft_ms": _ms(d.health.ttft.value),
                "ewma_total_ms": _ms(d.health.total.value),
                "error_ratio": round(d.health.error_ratio(now), 4),
                "traffic_share": round(d.attempts / total, 4),
                "attempts": d.attempts,
            } for d in routes.deployments]
            if routes.experiment is not None:
                experiment = routes.experiment
                entry["variants"] = dict(zip(experiment.variants, experiment.weights, strict=True))
                entry["sticky"] = experiment.sticky
                guard = experiment.guard
                entry["canary"] = None if guard is None else {
                    "variant": guard.canary, "rolled_back": guard.rolled_back,
                    "samples": {"canary": len(guard.samples[True]),
                                "baseline": len(guard.samples[False])},
                    "min_samples": guard.settings.min_samples}
            report[alias] = entry
        return report


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
