"""The priority gate in-process: order, bounds, shedding, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from switchgear.admission.priority import PriorityGate
from switchgear.config import TiersConfig
from switchgear.errors import Overloaded


def gate(capacity: int = 1, queue: int = 10, wait_ms: float = 5000) -> PriorityGate:
    tier = {"max_queue": queue, "wait_target_ms": wait_ms}
    return PriorityGate(TiersConfig.model_validate(
        {"capacity": capacity, "interactive": tier, "standard": tier, "batch": tier}))


async def test_higher_tiers_first_and_fifo_within_a_tier() -> None:
    g = gate()
    await g.acquire("standard")  # the one running place
    order: list[str] = []

    async def wait(name: str, tier: str) -> None:
        await g.acquire(tier)
        order.append(name)
        g.release()

    tasks = []
    for name, tier in [("b1", "batch"), ("s1", "standard"), ("i1", "interactive"),
                       ("b2", "batch"), ("i2", "interactive")]:
        tasks.append(asyncio.create_task(wait(name, tier)))
        await asyncio.sleep(0)
    g.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["i1", "i2", "s1", "b1", "b2"]
    assert g.in_use == 0


async def test_a_full_queue_sheds_arrivals_and_lower_tiers_are_shed_first() -> None:
    g = PriorityGate(TiersConfig.model_validate({
        "capacity": 1,
        "interactive": {"max_queue": 10, "wait_target_ms": 5000},
        "standard": {"max_queue": 10, "wait_target_ms": 5000},
        "batch": {"max_queue": 2, "wait_target_ms": 100}}))

    async def job(tier: str) -> None:
        await g.acquire(tier)
        await asyncio.sleep(0.03)
        g.release()

    await g.acquire("standard")  # the one running place, busy
    batch = [asyncio.create_task(job("batch")) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as full:  # a third batch request: its queue is full
        await g.acquire("batch")
    assert full.value.status == 503 and full.value.retry_after
    interactive = [asyncio.create_task(job("interactive")) for _ in range(5)]
    await asyncio.sleep(0)
    g.release()  # interactive goes first: 5 x 30 ms, longer than batch may wait
    done = await asyncio.wait_for(asyncio.gather(*interactive, *batch, return_exceptions=True), 5)
    assert done[:5] == [None] * 5
    assert all(isinstance(r, Overloaded) for r in done[5:])
    tiers = g.snapshot()["tiers"]
    assert tiers["interactive"]["shed"] == 0 and tiers["batch"]["shed"] == 3
    assert g.in_use == 0


async def test_waiting_past_the_target_sheds() -> None:
    g = gate(wait_ms=20)
    await g.acquire("batch")
    with pytest.raises(Overloaded):
        await g.acquire("batch")
    assert g.snapshot()["tiers"]["batch"]["waiting"] == 0


async def test_a_cancelled_waiter_leaves_and_places_are_not_lost() -> None:
    g = gate()
    await g.acquire("standard")
    waiter = asyncio.create_task(g.acquire("standard"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert g.snapshot()["tiers"]["standard"]["waiting"] == 0
    g.release()
    assert g.in_use == 0
    async with g.slot("batch"):
        assert g.in_use == 1
    assert g.in_use == 0


async def test_the_slot_is_released_on_error() -> None:
    g = gate()
    with pytest.raises(RuntimeError):
        async with g.slot("interactive"):
            raise RuntimeError("boom")
    assert g.in_use == 0


async def test_queues_stay_bounded_under_a_flood() -> None:
    g = gate(capacity=2, queue=5, wait_ms=50)
    results = await asyncio.gather(*(g.acquire(t) for t in ["batch", "interactive"] * 200),
                                   return_exceptions=True)
    tiers = g.snapshot()["tiers"]
    assert all(t["max_depth"] <= 5 for t in tiers.values())
    assert sum(isinstance(r, Overloaded) for r in results) >= 380
