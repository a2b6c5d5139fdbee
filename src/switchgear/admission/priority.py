"""Priority tiers and load shedding: a fixed number of requests run at once; the rest wait in
bounded queues per tier, interactive before standard before batch, FIFO within a tier.

Under overload the lowest tier goes first: higher tiers take every freed place, so lower tiers'
waits grow until they pass their wait target or fill their queue, and those requests are shed.
Shed requests get 503 with Retry-After (the server is overloaded; the client did nothing wrong,
so not a 429). Memory is bounded by the queues' sizes, whatever the offered load.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from switchgear.config import TiersConfig
from switchgear.errors import Overloaded

TIERS = ("interactive", "standard", "batch")


@dataclass
class TierState:
    """One tier's queue and counters."""

    name: str
    max_queue: int
    wait_target: float
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    admitted: int = 0
    shed: int = 0
    max_depth: int = 0


class PriorityGate:
    """Lets ``capacity`` requests run at once and queues or sheds the rest by tier."""

    def __init__(self, config: TiersConfig) -> None:
        assert config.capacity is not None
        self.capacity = config.capacity
        self.in_use = 0
        self.tiers = {name: TierState(name, settings.max_queue, settings.wait_target_ms / 1000)
                      for name, settings in (("interactive", config.interactive),
                                             ("standard", config.standard),
                                             ("batch", config.batch))}

    @asynccontextmanager
    async def slot(self, tier: str) -> AsyncIterator[None]:
        """Hold one of the running places for the body of the ``async with``."""
        await self.acquire(tier)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, tier: str) -> None:
        """Take a running place now, or wait for one in ``tier``'s queue, or be shed."""
        state = self.tiers[tier if tier in self.tiers else "standard"]
        if self.in_use < self.capacity and not self._waiters_at_or_above(state.name):
            self.in_use += 1
            state.admitted += 1
            return
        if len(state.waiting) >= state.max_queue:
            state.shed += 1
            raise self._shed(state, "its queue is full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiting.append(waiter)
        state.max_depth = max(state.max_depth, len(state.waiting))
        try:
            async with asyncio.timeout(state.wait_target):
                await waiter
        except TimeoutError:
            if not _granted(waiter):
                state.shed += 1
                raise self._shed(state, "it waited past its target") from None
        except BaseException:
            if _granted(waiter):
                self.release()  # handed a place just as we left: pass it on
            raise
        finally:
            if waiter in state.waiting:
                state.waiting.remove(waiter)
        state.admitted += 1

    def release(self) -> None:
        """Give a running place back: to the oldest waiter of the highest tier, if any."""
        for name in TIERS:
            waiting = self.tiers[name].waiting
            while waiting:
                waiter = waiting.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the place passes on; in_use is unchanged
                    return
        self.in_use -= 1

    def snapshot(self) -> dict[str, Any]:
        """Places in use and, per tier, waiting, admitted, shed and the deepest queue seen."""
        return {"capacity": self.capacity, "in_use": self.in_use, "tiers": {
            name: {"waiting": len(t.waiting), "admitted": t.admitted, "shed": t.shed,
                   "max_depth": t.max_depth, "max_queue": t.max_queue,
                   "wait_target_ms": t.wait_target * 1000}
            for name, t in self.tiers.items()}}

    def _waiters_at_or_above(self, tier: str) -> bool:
        return any(self.tiers[name].waiting for name in TIERS[: TIERS.index(tier) + 1])

    def _shed(self, state: TierState, why: str) -> Overloaded:
        retry_after = max(1.0, state.wait_target)
        return Overloaded(f"Overloaded: this {state.name} request was shed because {why}; "
                          f"try again shortly.", retry_after=retry_after)


def _granted(waiter: asyncio.Future[None]) -> bool:
    """Whether ``release`` handed this waiter a place."""
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None
