"""The Prioritize stage: run the request when its tier's turn comes, or shed it under overload.
The running place is held until the answer is complete (for a stream, its last chunk)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from switchgear.admission.tiers import TierGate, TierSlot
from switchgear.errors import Overloaded
from switchgear.exchange import Exchange
from switchgear.pipeline import Body, Reply, Stage, close_stream
from switchgear.store.redis import StateUnavailable


class Prioritize(Stage):
    """Passes requests through the priority gate (or straight on when there is none), noting
    the time waited and whether the request was shed."""

    def __init__(self, gate: TierGate | None) -> None:
        self.gate = gate

    async def __call__(self, exchange: Exchange) -> Reply:
        gate = self.gate
        exchange.queued_at = started = time.time()
        if gate is None:
            exchange.waited(0.0)
            return await self.next_stage(exchange)
        tier = _tier(exchange)
        slot = gate.take_free(tier)
        if slot is None:
            slot = await self._wait(gate, tier, exchange, started)
        else:
            exchange.waited(0.0)  # a place was free: nothing waited
        try:
            reply = await self.next_stage(exchange)
        except BaseException:
            slot.release()
            raise
        if isinstance(reply, dict):
            slot.release()
            return reply
        return self._hold(slot, reply)

    @staticmethod
    async def _wait(gate: TierGate, tier: str, exchange: Exchange, started: float) -> TierSlot:
        """A place from ``gate``, waited for since ``started`` (the wait counted), or the
        shed's error."""
        try:
            return await gate.acquire(tier)
        except Overloaded as refused:  # shed, unless the fleet's shared state is away
            exchange.shed = not isinstance(refused, StateUnavailable)
            raise
        finally:
            exchange.waited(time.time() - started)

    @staticmethod
    async def _hold(slot: TierSlot, chunks: AsyncIterator[Body]) -> AsyncIterator[Body]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            slot.release()
            await close_stream(chunks)


def _tier(exchange: Exchange) -> str:
    """The request's tier, which ``identify`` decided before the pipeline began."""
    if exchange.priority is None:
        raise RuntimeError("the request reached the priority gate unidentified")
    return exchange.priority
