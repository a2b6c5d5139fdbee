"""Self-hosted instances' idle cost and utilization, and what doubling the traffic would add."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from switchgear.config import Capacity, Price
from switchgear.ledger.history import Stretch
from switchgear.ledger.rollup import HOUR, DeploymentUse

#: How far a deployment's load may be from a whole instance before rounding treats it as one
#: (float noise: 2 x 0.5 instances is one instance, not two).
EPSILON = 1e-9

#: The resources a deployment's ``Capacity`` names, as the report calls them.
REQUESTS = "requests/s per instance"
TOKENS = "tokens/s per instance"

#: What the report says of latency at twice the peak without a planner's model to predict it.
NO_LATENCY_MODEL = "unknown: the capacity is given as rates, not a `switchgear bench` profile"


@dataclass(frozen=True, slots=True)
class Sizing:
    """What a load needs of one deployment: instances (None: its capacity does not say), the
    resource that runs out first (None without load), and the latency predicted per instance
    there (None where nothing models it; ``latency`` says how it was found, or why not)."""

    instances: int | None
    limiting: str | None
    p95_s: float | None = None
    p99_s: float | None = None
    latency: str = NO_LATENCY_MODEL


#: Sizes a deployment of ``Capacity`` for a load of requests/s and tokens/s. The ledger's own
#: sizes by the capacity's rates; a layer above the ledger may pass one backed by the
#: capacity planner's model of a bench profile.
Sizer = Callable[[Capacity, float, float], Sizing]


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
        return cls.over((Stretch(price, seconds),), busy_s, instance_cost)

    @classmethod
    def over(cls, stretches: Sequence[Stretch], busy_s: float, instance_cost: float
             ) -> InstanceTime:
        """From the requests' busy seconds and instance charges, over the ``stretches`` of the
        period the deployment existed (only its self-hosted prices have instance time)."""
        hosted = [stretch for stretch in stretches if stretch.price.self_hosted]
        slot_s = sum(s.price.instances * s.price.concurrency * s.seconds for s in hosted)
        return cls(cost=sum(s.price.instances * s.price.instance_per_hour * s.seconds / HOUR
                            for s in hosted),
                   used_cost=instance_cost,
                   utilization=busy_s / slot_s if slot_s else 0.0)


def instance_loads(capacity: Capacity, requests_per_s: float, tokens_per_s: float
                   ) -> dict[str, float]:
    """Each resource ``capacity`` names: how many instances' worth of it this load takes."""
    loads = {}
    if capacity.requests_per_s is not None:
        loads[REQUESTS] = requests_per_s / capacity.requests_per_s
    if capacity.tokens_per_s is not None:
        loads[TOKENS] = tokens_per_s / capacity.tokens_per_s
    return loads


def instances_needed(capacity: Capacity, requests_per_s: float, tokens_per_s: float) -> int:
    """Instances that sustain this load, each at ``capacity`` (at least one)."""
    loads = instance_loads(capacity, requests_per_s, tokens_per_s).values()
    return max([1, *(math.ceil(load - EPSILON) for load in loads)])


def limiting_resource(capacity: Capacity, requests_per_s: float, tokens_per_s: float
                      ) -> str | None:
    """The resource this load uses up first: the one it takes the most instances' worth of
    (None without load or without rates; requests before tokens on a tie)."""
    loads = instance_loads(capacity, requests_per_s, tokens_per_s)
    resource = max(loads, key=lambda name: loads[name], default=None)
    return resource if resource is not None and loads[resource] > 0 else None


def rate_sizing(capacity: Capacity, requests_per_s: float, tokens_per_s: float) -> Sizing:
    """The load sized by the capacity's rates per instance (no latency model); nothing known
    of a capacity that only names a bench profile."""
    if not instance_loads(capacity, requests_per_s, tokens_per_s):
        return Sizing(None, None, latency="unknown: the capacity names only a bench profile, "
                                          "and this report was not given the planner's model")
    return Sizing(instances_needed(capacity, requests_per_s, tokens_per_s),
                  limiting_resource(capacity, requests_per_s, tokens_per_s))


@dataclass(frozen=True, slots=True)
class Doubling:
    """What twice today's traffic adds to one deployment's bill over the same period: the API
    tokens again, plus for a self-hosted one the instances beyond those it has, over the
    ``charged_s`` seconds of the period it existed (None when its capacity is not known), and
    the resource that runs out first at twice the peak (None: no instances, or no load)."""

    alias: str
    deployment: str
    token_cost: float
    instances: int
    instances_needed: int | None
    instance_cost: float | None
    use: DeploymentUse
    sizing: Sizing | None = None
    charged_s: float = 0.0

    @property
    def limiting(self) -> str | None:
        """The resource that runs out first at twice the peak (None: not known, or no load)."""
        return None if self.sizing is None else self.sizing.limiting

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
        limit = f"; {self.limiting} runs out first" if self.limiting else ""
        if self.sizing is not None and self.sizing.p99_s is not None:
            limit += (f"; predicted p95 {self.sizing.p95_s:.3g} s, p99 {self.sizing.p99_s:.3g} s "
                      "per instance")
        load = (f"twice the peak ({2 * self.use.peak_requests_per_s:g} req/s, "
                f"{2 * self.use.peak_tokens_per_s:g} tok/s over the busiest "
                f"{self.use.peak_grain_s} s)")
        if self.instances_needed > self.instances:
            return (f"a step: {self.instances_needed} instances needed at {load}, "
                    f"{self.instances} running{limit}")
        return f"headroom: {self.instances_needed} of {self.instances} instances carry {load}{limit}"

    def report(self) -> dict[str, Any]:
        """As JSON."""
        use = self.use
        return {"alias": self.alias, "deployment": self.deployment,
                "added_cost": self.added_cost, "token_cost": self.token_cost,
                "instance_cost": self.instance_cost, "instances": self.instances,
                "instances_needed": self.instances_needed,
                "extra_instances": (None if self.instances_needed is None
                                    else max(self.instances_needed - self.instances, 0)),
                "charged_s": self.charged_s, "limiting": self.limiting,
                "peak_grain_s": use.peak_grain_s,
                "doubled_requests_per_s": 2 * use.peak_requests_per_s,
                "doubled_tokens_per_s": 2 * use.peak_tokens_per_s,
                "doubled_burst_requests_per_s": 2 * use.burst_requests_per_s,
                "latency_p95_s": None if self.sizing is None else self.sizing.p95_s,
                "latency_p99_s": None if self.sizing is None else self.sizing.p99_s,
                "latency": None if self.sizing is None else self.sizing.latency,
                "reason": self.reason}


def doubling(price: Price, capacity: Capacity | None, use: DeploymentUse, seconds: float,
             sizer: Sizer = rate_sizing) -> Doubling:
    """What doubling ``use`` adds at ``price``: the per-token bill again; and for a self-hosted
    deployment nothing while ``sizer`` finds twice the peak load fits the instances it has,
    else the cost of the extra instances over ``seconds`` (the part of the period it existed)."""
    token_cost = use.token_cost
    if not price.self_hosted:
        return Doubling(use.alias, use.deployment, token_cost, 0, 0, 0.0, use)
    if capacity is None:
        return Doubling(use.alias, use.deployment, token_cost, price.instances, None, None, use,
                        charged_s=seconds)
    sizing = sizer(capacity, 2 * use.peak_requests_per_s, 2 * use.peak_tokens_per_s)
    if sizing.instances is None:
        return Doubling(use.alias, use.deployment, token_cost, price.instances, None, None, use,
                        sizing, seconds)
    extra = max(sizing.instances - price.instances, 0)
    return Doubling(use.alias, use.deployment, token_cost, price.instances, sizing.instances,
                    extra * price.instance_per_hour * seconds / HOUR, use, sizing, seconds)
