"""The Prioritize stage: run the request when its tier's turn comes, or shed it under overload.
The running place is held until the answer is complete (for a stream, its last chunk)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from switchgear.admission.tiers import TierGate, TierSlot
from switchgear.exchange import Exchange
from switchgear.pipeline import Body, Handler, Reply


class Prioritize:
    """Passes requests through the priority gate (or straight on when there is none)."""

    def __init__(self, next_stage: Handler, gate: TierGate | None) -> None:
        self.next_stage = next_stage
        self.gate = gate

    async def __call__(self, exchange: Exchange) -> Reply:
        gate = self.gate
        if gate is None:
            return await self.next_stage(exchange)
        slot = await gate.acquire(exchange.priority)
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
    async def _hold(slot: TierSlot, chunks: AsyncIterator[Body]) -> AsyncIterator[Body]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            slot.release()
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
