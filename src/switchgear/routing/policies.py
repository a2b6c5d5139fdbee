"""Routing policies: in which order to try an alias's available deployments.

Each policy puts its choice first and the rest after it as the fallbacks a failed attempt moves
on to. Policies read live state (requests in flight, peak-EWMA latency, price) and never block.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Protocol

from switchgear.config import ModelConfig
from switchgear.routing.deployment import Deployment


class Policy(Protocol):
    """Orders candidate deployments for one request."""

    def order(self, candidates: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
        """The candidates, best first."""


class Weighted:
    """A weighted random pick, then the rest by weight; each weight divided by the requests in
    flight plus one (Envoy's weighted least request) and scaled by the deployment's slow-start
    share, so one slow deployment cannot collect the concurrency: idle, the split is the
    configured one."""

    def order(self, candidates: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
        """See the class docstring."""
        if len(candidates) < 2:
            return list(candidates)
        now = time.monotonic()
        weight = {d: d.config.weight * d.health.share(now) / (d.in_flight + 1)
                  for d in candidates}
        first = rng.choices(candidates, weights=[weight[d] for d in candidates])[0]
        rest = sorted((d for d in candidates if d is not first), key=lambda d: -weight[d])
        return [first, *rest]


def _two_choices(candidates: Sequence[Deployment], rng: random.Random,
                 score: dict[Deployment, float]) -> list[Deployment]:
    """Power of two choices: the better of two random candidates first, the rest by score."""
    if len(candidates) < 2:
        return list(candidates)
    one, two = rng.sample(candidates, 2)
    first = one if score[one] <= score[two] else two
    return [first, *sorted((d for d in candidates if d is not first), key=score.__getitem__)]


class LeastOutstanding:
    """Power of two choices on requests in flight (relative to max_concurrency)."""

    def order(self, candidates: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
        """See the class docstring."""
        now = time.monotonic()
        return _two_choices(candidates, rng, {
            d: (d.in_flight + 1) / d.config.max_concurrency / d.health.share(now)
            for d in candidates})


class LatencyAware:
    """Power of two choices on peak-EWMA latency times load (Finagle's cost); a deployment with
    no latency yet is tried as if it were the fastest, so new ones get traffic and are measured."""

    def __init__(self, signal: str) -> None:
        self.signal = signal

    def latency(self, deployment: Deployment, now: float) -> float:
        """The deployment's peak-EWMA latency in seconds as of ``now`` (0 when unknown)."""
        ewma = deployment.health.ttft if self.signal == "ttft" else deployment.health.total
        return ewma.current(now) or 0.0

    def order(self, candidates: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
        """See the class docstring."""
        now = time.monotonic()
        return _two_choices(candidates, rng, {
            d: self.latency(d, now) * (d.in_flight + 1) / d.health.share(now)
            for d in candidates})


class CostAware:
    """The cheapest deployment that currently meets the latency target; if none does, the
    fastest. Price is input plus output price per million tokens."""

    def __init__(self, signal: str, target_seconds: float | None) -> None:
        self.latency = LatencyAware(signal)
        self.target = target_seconds

    def order(self, candidates: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
        """See the class docstring."""
        by_price = sorted(candidates, key=lambda d: (d.price_per_million, -d.config.weight))
        if self.target is None:
            return by_price
        now = time.monotonic()
        latency = {d: self.latency.latency(d, now) for d in by_price}
        meets: list[Deployment] = []
        misses: list[Deployment] = []
        for deployment in by_price:  # one pass: a `not in meets` test made this quadratic
            (meets if latency[deployment] <= self.target else misses).append(deployment)
        misses.sort(key=latency.__getitem__)
        return meets + misses


class Ordered:
    """Primary first, then secondary, and so on: the order the config lists them in."""

    def order(self, candidates: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
        """See the class docstring."""
        return list(candidates)


def policy_for(model: ModelConfig) -> Policy:
    """The policy an alias's config names."""
    target = model.latency_target_ms / 1000 if model.latency_target_ms else None
    policies: dict[str, Policy] = {
        "weighted": Weighted(),
        "least_outstanding": LeastOutstanding(),
        "latency": LatencyAware(model.latency_signal),
        "cost": CostAware(model.latency_signal, target),
        "priority": Ordered(),
    }
    return policies[model.policy]
