"""Self-hosted instances' idle cost and utilization, and what doubling the traffic would add."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from switchgear.config import Capacity, Price
from switchgear.ledger.rollup import HOUR, DeploymentUse

#: How far a deployment's load may be from a whole instance before rounding treats it as one
#: (float noise: 2 x 0.5 instances is one instance, not two).
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class InstanceTime:
    """A self-hosted deployment's instance time over a period: what it cost in all, how much of
    it the requests used (busy / concurrency / wall-clock) and what the rest (idle) cost."""

    cost: float
    used_cost: float
    utilization: float

    @property
    def idle_cost(self) -> float:
        """The instance time nobody used, in money (never below zero)."""
        return max(self.cost - self.used_cost, 0.0)

    @classmethod
    def of(cls, price: Price, busy_s: float, instance_cost: float, seconds: float
           ) -> InstanceTime:
        """From the requests' busy seconds and instance charges over ``seconds`` of wall clock."""
        wall = price.instances * seconds
        return cls(cost=price.instances * price.instance_per_hour * seconds / HOUR,
                   used_cost=instance_cost,
                   utilization=busy_s / price.concurrency / wall if wall else 0.0)


def instances_needed(capacity: Capacity, requests_per_s: float, tokens_per_s: float) -> int:
    """Instances that sustain this load, each at ``capacity`` (at least one)."""
    needs = [1]
    if capacity.requests_per_s is not None:
        needs.append(math.ceil(requests_per_s / capacity.requests_per_s - EPSILON))
    if capacity.tokens_per_s is not None:
        needs.append(math.ceil(tokens_per_s / capacity.tokens_per_s - EPSILON))
    return max(needs)


@dataclass(frozen=True, slots=True)
class Doubling:
    """What twice today's traffic adds to one deployment's bill over the same period: the API
    tokens again, plus for a self-hosted one the instances beyond those it has (None when its
    capacity is not known)."""

    alias: str
    deployment: str
    token_cost: float
    instances: int
    instances_needed: int | None
    instance_cost: float | None

    @property
    def added_cost(self) -> float | None:
        """The whole addition (None when the instances needed are unknown)."""
        if self.instance_cost is None:
            return None
        return self.token_cost + self.instance_cost

    @property
    def reason(self) -> str:
        """Why, in words."""
        if self.instances == 0:
            return "per-token: the API bill doubles" if self.token_cost else "no price"
        if self.instances_needed is None:
            return "capacity unknown: set the deployment's capacity"
        if self.instances_needed > self.instances:
            return (f"a step: {self.instances_needed} instances needed at twice the peak load, "
                    f"{self.instances} running")
        return (f"headroom: {self.instances_needed} of {self.instances} instances carry twice "
                "the peak load")

    def report(self) -> dict[str, Any]:
        """As JSON."""
        return {"alias": self.alias, "deployment": self.deployment,
                "added_cost": self.added_cost, "token_cost": self.token_cost,
                "instance_cost": self.instance_cost, "instances": self.instances,
                "instances_needed": self.instances_needed, "reason": self.reason}


def doubling(price: Price, capacity: Capacity | None, use: DeploymentUse, seconds: float
             ) -> Doubling:
    """What doubling ``use`` (observed over ``seconds``) adds at ``price``: the per-token bill
    again; and for a self-hosted deployment nothing while the doubled peak load fits the
    instances it has, else the cost of the extra instances for the period."""
    token_cost = use.token_cost
    if not price.self_hosted:
        return Doubling(use.alias, use.deployment, token_cost, 0, 0, 0.0)
    if capacity is None:
        return Doubling(use.alias, use.deployment, token_cost, price.instances, None, None)
    needed = instances_needed(capacity, 2 * use.peak_requests_per_s, 2 * use.peak_tokens_per_s)
    extra = max(needed - price.instances, 0)
    return Doubling(use.alias, use.deployment, token_cost, price.instances, needed,
                    extra * price.instance_per_hour * seconds / HOUR)
