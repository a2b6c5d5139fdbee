"""The priority tiers a request can run at, and the ``tiers:`` section that sizes the gate in
front of the backends (``admission/tiers.py``).

The tiers are part of the request's vocabulary: the engine's scheduler and the embedded backend
order work by them too, so they live below every package that uses them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Tier = Literal["interactive", "standard", "batch"]

#: The tiers from highest to lowest priority.
TIERS: tuple[Tier, ...] = ("interactive", "standard", "batch")


class TierLimits(BaseModel):
    """One tier's queue: how many requests may wait in it, and for how long each may wait;
    ``headroom``: running places this tier leaves free for higher tiers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_queue: int = Field(ge=0)
    wait_target_ms: float = Field(gt=0)
    headroom: int = Field(0, ge=0)


class TierConfig(BaseModel):
    """The gate's settings: running places (on each replica or across the fleet,
    ``capacity_scope``), and per tier a queue bound and a wait target.

    ``max_waiting`` bounds all queues together (``None``: the sum of the tiers' ``max_queue``, so
    only per-tier bounds apply). Set below that sum, a higher tier displaces the newest waiter of a
    lower tier when every waiting place is taken.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity: int = Field(ge=1)
    #: Where ``capacity`` holds: on each replica (``replica``), or across every replica sharing
    #: ``limits.state_url`` (``fleet``); queues, tier order and shedding stay per replica.
    capacity_scope: Literal["replica", "fleet"] = "replica"
    interactive: TierLimits = TierLimits(max_queue=100, wait_target_ms=50)
    standard: TierLimits = TierLimits(max_queue=500, wait_target_ms=500)
    batch: TierLimits = TierLimits(max_queue=1000, wait_target_ms=5000)
    max_waiting: int | None = Field(1000, ge=0)

    @model_validator(mode="after")
    def _waiting_within_queues(self) -> TierConfig:
        if self.max_waiting is not None and self.max_waiting > self.queue_room:
            raise ValueError(f"max_waiting ({self.max_waiting}) exceeds the tiers' queues together "
                             f"({self.queue_room})")
        headrooms = [self.limits(tier).headroom for tier in TIERS]
        if headrooms != sorted(headrooms) or headrooms[-1] >= self.capacity:
            raise ValueError(f"headroom must not shrink from interactive to batch and must stay "
                             f"below capacity ({self.capacity}); got {headrooms}")
        return self

    @property
    def queue_room(self) -> int:
        """The tiers' ``max_queue`` added up."""
        return sum(self.limits(tier).max_queue for tier in TIERS)

    @property
    def waiting_bound(self) -> int:
        """How many requests may wait at once, across all tiers."""
        return self.queue_room if self.max_waiting is None else self.max_waiting

    def limits(self, tier: Tier) -> TierLimits:
        """The queue settings of ``tier``."""
        limits: TierLimits = getattr(self, tier)
        return limits

    def reserving(self, reserve: float) -> TierConfig:
        """These settings with the batch tier leaving at least ``reserve`` (a share) of the
        places to the tiers above it (``batch.reserve``), never all of them."""
        headroom = max(self.batch.headroom, min(self.capacity - 1, reserved(self.capacity,
                                                                            reserve)))
        if headroom == self.batch.headroom:
            return self
        return self.model_copy(update={"batch": self.batch.model_copy(
            update={"headroom": headroom})})


def reserved(places: int, reserve: float) -> int:
    """The places of ``places`` that ``reserve`` (a share) keeps free, to the nearest whole:
    a single place is never reserved, so a lone one still takes batch work while it is idle."""
    return int(places * reserve + 0.5)
