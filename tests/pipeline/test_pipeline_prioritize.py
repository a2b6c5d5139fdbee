"""Prioritize: the next stage runs on a place of the priority gate, held until the answer is
complete (a stream's end, however it ends); with no place and no room to wait, a 503 shed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from pipeline_support import NextStage, chained, chunks, drain, make_exchange, turns

from switchgear.admission.tiers import TierGate
from switchgear.errors import Overloaded, UpstreamTimeout
from switchgear.exchange import Exchange
from switchgear.pipeline.prioritize import Prioritize
from switchgear.sections.tiers import TierConfig


def prioritize(after: NextStage, queue: int = 0) -> Prioritize:
    """Prioritize over a gate of one running place and ``queue`` waiting places per tier,
    chained to ``after``."""
    limits = {"max_queue": queue, "wait_target_ms": 60_000}
    gate = TierGate(TierConfig.model_validate({
        "capacity": 1, "max_waiting": None,
        "interactive": limits, "standard": limits, "batch": limits}))
    return chained(Prioritize(gate), after)


def standard() -> Exchange:
    """A streamed request identified at the standard tier."""
    return make_exchange(priority="standard", stream=True)


def in_use(stage: Prioritize) -> int:
    """Running places the stage's gate has handed out and not had back."""
    assert stage.gate is not None
    return stage.gate.snapshot().in_use


async def test_without_a_gate_the_request_goes_straight_on() -> None:
    after = NextStage()
    exchange = make_exchange()
    await chained(Prioritize(None), after)(exchange)
    assert after.calls == 1 and exchange.queue_wait == 0.0 and exchange.queued_at is not None


async def test_a_whole_answer_gives_its_place_back_at_once() -> None:
    after = NextStage()
    stage = prioritize(after)
    for _ in range(3):
        await stage(make_exchange(priority="standard"))
        assert in_use(stage) == 0
    assert after.calls == 3


async def test_a_stream_holds_its_place_until_it_ends_and_a_request_without_room_is_shed(
        ) -> None:
    after = NextStage(stream=chunks("a", "b"))
    stage = prioritize(after)
    reply = await stage(standard())
    assert in_use(stage) == 1  # the answer is not complete yet
    shed = standard()
    with pytest.raises(Overloaded) as refused:
        await stage(shed)
    assert refused.value.status == 503 and refused.value.retry_after
    assert shed.shed and shed.queue_wait is not None
    assert after.calls == 1
    assert await drain(reply) == chunks("a", "b")
    assert in_use(stage) == 0 and after.closed == 1
    await drain(await stage(standard()))  # the place is free again
    assert after.calls == 2


async def test_a_waiter_runs_once_the_stream_ahead_of_it_ends() -> None:
    after = NextStage(stream=chunks("a"))
    stage = prioritize(after, queue=1)
    reply = await stage(standard())
    waiter = asyncio.create_task(stage(standard()))
    await turns()
    assert after.calls == 1 and not waiter.done()
    await drain(reply)
    await drain(await waiter)
    assert after.calls == 2 and in_use(stage) == 0


async def test_a_stream_the_client_leaves_gives_its_place_back() -> None:
    after = NextStage(stream=chunks("a", "b", "c"))
    stage = prioritize(after)
    reply = await stage(standard())
    assert isinstance(reply, AsyncGenerator)
    await anext(reply)
    await reply.aclose()
    assert in_use(stage) == 0 and after.closed == 1


async def test_a_failure_gives_the_place_back() -> None:
    for after in (NextStage(error=UpstreamTimeout("no answer")),
                  NextStage(stream=chunks("a"), error=UpstreamTimeout("cut off"))):
        stage = prioritize(after)
        with pytest.raises(UpstreamTimeout):
            await drain(await stage(standard()))
        assert in_use(stage) == 0


async def test_an_unidentified_request_goes_no_further() -> None:
    after = NextStage()
    with pytest.raises(RuntimeError, match="unidentified"):
        await prioritize(after)(make_exchange())
    assert after.calls == 0
