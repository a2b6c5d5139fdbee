"""TierGate in-process: order across and within tiers, queue bounds, displacement, wait targets,
cancellation, release on errors, bounded memory under a flood, and the priority header's rule."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from switchgear.admission.tiers import TierGate, TierSlot, effective_tier
from switchgear.errors import Overloaded
from switchgear.sections.tiers import TIERS, TierConfig

LONG_MS = 60_000  # a wait target no test reaches


def make_gate(capacity: int = 1, queue: int = 10, wait_ms: float = LONG_MS,
              max_waiting: int | None = None, **tiers: dict[str, Any]) -> TierGate:
    limits = {"max_queue": queue, "wait_target_ms": wait_ms}
    return TierGate(TierConfig.model_validate(
        {"capacity": capacity, "max_waiting": max_waiting,
         **{tier: tiers.get(tier, limits) for tier in TIERS}}))


async def until(condition: Any, *, turns: int = 1000) -> None:
    """Let other tasks run until ``condition()`` holds (a bounded number of loop turns)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def waiting(gate: TierGate, tier: str) -> int:
    return gate.snapshot().tiers[tier].waiting


class Recorder:
    """Requests that take a place, note their turn, and hold it until told to go."""

    def __init__(self, gate: TierGate) -> None:
        self.gate = gate
        self.order: list[str] = []

    def start(self, name: str, tier: str) -> asyncio.Task[None]:
        async def run() -> None:
            async with self.gate.slot(tier):
                self.order.append(name)
        return asyncio.create_task(run())


async def test_fifo_within_a_tier() -> None:
    gate = make_gate()
    held = await gate.acquire("standard")
    rec = Recorder(gate)
    tasks = []
    for i in range(5):
        tasks.append(rec.start(f"s{i}", "standard"))
        await until(lambda n=i + 1: waiting(gate, "standard") == n)
    held.release()
    await asyncio.gather(*tasks)
    assert rec.order == ["s0", "s1", "s2", "s3", "s4"]
    assert gate.snapshot().in_use == 0


async def test_higher_tiers_go_first() -> None:
    gate = make_gate()
    held = await gate.acquire("batch")
    rec = Recorder(gate)
    tasks = []
    for name, tier in [("b1", "batch"), ("s1", "standard"), ("i1", "interactive"),
                       ("b2", "batch"), ("s2", "standard"), ("i2", "interactive")]:
        tasks.append(rec.start(name, tier))
        await until(lambda t=tier, n=name: waiting(gate, t) == int(n[1]))
    held.release()
    await asyncio.gather(*tasks)
    assert rec.order == ["i1", "i2", "s1", "s2", "b1", "b2"]
    snap = gate.snapshot()
    assert snap.in_use == 0 and snap.waiting == 0
    assert {t: s.admitted for t, s in snap.tiers.items()} == {
        "interactive": 2, "standard": 2, "batch": 3}


async def test_free_capacity_admits_at_once_whatever_the_tier() -> None:
    gate = make_gate(capacity=3)
    slots = [await gate.acquire(tier) for tier in TIERS]
    snap = gate.snapshot()
    assert snap.in_use == 3 and snap.waiting == 0
    assert all(s.in_use == 1 for s in snap.tiers.values())
    for held in slots:
        held.release()
    assert gate.snapshot().in_use == 0


async def test_waiting_past_the_target_sheds_with_503_and_retry_after() -> None:
    gate = make_gate(batch={"max_queue": 10, "wait_target_ms": 10})
    held = await gate.acquire("interactive")
    with pytest.raises(Overloaded) as shed:
        await gate.acquire("batch")
    assert shed.value.status == 503 and shed.value.retry_after is not None
    assert shed.value.retry_after >= 1
    assert "batch" in shed.value.message
    batch = gate.snapshot().tiers["batch"]
    assert batch.shed_wait_target == 1 and batch.shed == 1 and batch.waiting == 0
    held.release()
    assert gate.snapshot().in_use == 0


async def test_higher_tier_taking_every_place_turns_into_lower_tier_sheds() -> None:
    gate = make_gate(interactive={"max_queue": 10, "wait_target_ms": LONG_MS},
                     batch={"max_queue": 10, "wait_target_ms": 10})
    held = await gate.acquire("interactive")
    go = asyncio.Event()

    async def interactive_job() -> None:
        async with gate.slot("interactive"):
            await go.wait()

    inter = [asyncio.create_task(interactive_job()) for _ in range(3)]
    await until(lambda: waiting(gate, "interactive") == 3)
    batch = asyncio.create_task(gate.acquire("batch"))
    held.release()  # the freed place goes to interactive; batch keeps waiting and passes its target
    with pytest.raises(Overloaded):
        await batch
    go.set()
    await asyncio.gather(*inter)
    snap = gate.snapshot()
    assert snap.tiers["interactive"].shed == 0 and snap.tiers["interactive"].admitted == 4
    assert snap.tiers["batch"].shed_wait_target == 1 and snap.in_use == 0


async def test_a_full_queue_sheds_the_arrival() -> None:
    gate = make_gate(queue=2)
    held = await gate.acquire("standard")
    queued = [asyncio.create_task(gate.acquire("batch")) for _ in range(2)]
    await until(lambda: waiting(gate, "batch") == 2)
    with pytest.raises(Overloaded):
        await gate.acquire("batch")
    assert gate.snapshot().tiers["batch"].shed_queue_full == 1
    # another tier's queue still has room
    other = asyncio.create_task(gate.acquire("standard"))
    await until(lambda: waiting(gate, "standard") == 1)
    held.release()
    first = await other
    assert first.tier == "standard"
    first.release()
    for task in queued:
        (await task).release()
    assert gate.snapshot().in_use == 0


async def test_interactive_displaces_the_newest_batch_when_everything_is_full() -> None:
    gate = make_gate(queue=3, max_waiting=3)
    held = await gate.acquire("batch")
    rec = Recorder(gate)
    batch = []
    for i in range(3):
        batch.append(rec.start(f"b{i}", "batch"))
        await until(lambda n=i + 1: waiting(gate, "batch") == n)
    # every waiting place is taken: another batch request is shed itself
    with pytest.raises(Overloaded):
        await gate.acquire("batch")
    interactive = rec.start("i0", "interactive")
    await until(lambda: waiting(gate, "interactive") == 1)
    with pytest.raises(Overloaded) as displaced:
        await batch[2]  # the newest batch request made room
    assert displaced.value.status == 503
    snap = gate.snapshot()
    assert snap.waiting == 3 and snap.tiers["batch"].waiting == 2
    assert snap.tiers["batch"].shed_displaced == 1 and snap.tiers["batch"].shed_queue_full == 1
    held.release()
    await asyncio.gather(interactive, *batch[:2])
    assert rec.order == ["i0", "b0", "b1"]
    assert gate.snapshot().in_use == 0


async def test_lower_tiers_never_displace_higher_ones() -> None:
    gate = make_gate(queue=2, max_waiting=2)
    held = await gate.acquire("batch")
    queued = [asyncio.create_task(gate.acquire("interactive")) for _ in range(2)]
    await until(lambda: waiting(gate, "interactive") == 2)
    for tier in ("standard", "batch"):
        with pytest.raises(Overloaded):
            await gate.acquire(tier)
    snap = gate.snapshot()
    assert snap.tiers["interactive"].shed == 0 and snap.tiers["interactive"].waiting == 2
    held.release()
    for task in queued:
        (await task).release()
    assert gate.snapshot().in_use == 0


async def test_a_cancelled_waiter_frees_its_place_in_the_queue() -> None:
    gate = make_gate(queue=1)
    held = await gate.acquire("standard")
    waiter = asyncio.create_task(gate.acquire("batch"))
    await until(lambda: waiting(gate, "batch") == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    snap = gate.snapshot()
    assert snap.waiting == 0 and snap.tiers["batch"].waiting == 0 and snap.tiers["batch"].shed == 0
    after = asyncio.create_task(gate.acquire("batch"))  # the one queue place is free again
    await until(lambda: waiting(gate, "batch") == 1)
    held.release()
    (await after).release()
    assert gate.snapshot().in_use == 0


async def test_a_place_handed_to_a_waiter_cancelled_at_that_moment_passes_on() -> None:
    gate = make_gate()
    held = await gate.acquire("standard")
    first = asyncio.create_task(gate.acquire("interactive"))
    second = asyncio.create_task(gate.acquire("batch"))
    await until(lambda: gate.snapshot().waiting == 2)
    held.release()  # hands the place to ``first``, which has not run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    slot = await second
    assert gate.snapshot().in_use == 1
    slot.release()
    snap = gate.snapshot()
    assert snap.in_use == 0 and snap.waiting == 0
    assert all(s.in_use == 0 for s in snap.tiers.values())


async def test_the_slot_is_released_on_exception_and_on_cancellation() -> None:
    gate = make_gate()
    with pytest.raises(RuntimeError):
        async with gate.slot("interactive"):
            raise RuntimeError("boom")
    assert gate.snapshot().in_use == 0

    inside = asyncio.Event()

    async def hold() -> None:
        async with gate.slot("batch"):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await inside.wait()
    assert gate.snapshot().in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.snapshot().in_use == 0
    async with gate.slot("batch") as slot:  # the place is usable again
        assert isinstance(slot, TierSlot) and gate.snapshot().in_use == 1


async def test_release_is_idempotent() -> None:
    gate = make_gate(capacity=2)
    slot = await gate.acquire("standard")
    other = await gate.acquire("standard")
    slot.release()
    slot.release()
    assert gate.snapshot().in_use == 1
    other.release()
    assert gate.snapshot().in_use == 0


async def test_queues_stay_bounded_under_a_flood() -> None:
    gate = make_gate(capacity=2, queue=5, max_waiting=8,
                     batch={"max_queue": 5, "wait_target_ms": 5})
    worst = 0

    async def job(tier: str) -> str:
        nonlocal worst
        try:
            async with gate.slot(tier):
                snap = gate.snapshot()
                worst = max(worst, snap.waiting)
                assert snap.in_use <= 2
                await asyncio.sleep(0)
            return "served"
        except Overloaded:
            return "shed"

    tiers = ["batch", "interactive", "standard", "batch", "batch"] * 2000
    results = await asyncio.gather(*(job(tier) for tier in tiers))
    snap = gate.snapshot()
    assert worst <= 8
    assert all(s.max_depth <= 5 for s in snap.tiers.values())
    assert snap.in_use == 0 and snap.waiting == 0
    assert results.count("served") == sum(s.admitted for s in snap.tiers.values())
    assert results.count("shed") == sum(s.shed for s in snap.tiers.values())
    assert results.count("shed") > len(tiers) // 2


async def test_headroom_keeps_places_free_for_higher_tiers() -> None:
    gate = make_gate(capacity=2, batch={"max_queue": 10, "wait_target_ms": LONG_MS, "headroom": 1})
    first = await gate.acquire("batch")
    second = asyncio.create_task(gate.acquire("batch"))  # one place free, but it is headroom
    await until(lambda: waiting(gate, "batch") == 1)
    assert gate.snapshot().in_use == 1
    interactive = await gate.acquire("interactive")  # takes the headroom place at once
    assert gate.snapshot().in_use == 2
    interactive.release()  # batch may not take it: it stays free
    await asyncio.sleep(0)
    snap = gate.snapshot()
    assert snap.in_use == 1 and snap.tiers["batch"].waiting == 1
    first.release()  # a batch place: it passes to the waiting batch request
    (await second).release()
    assert gate.snapshot().in_use == 0


async def test_unknown_tiers_are_refused() -> None:
    gate = make_gate()
    with pytest.raises(ValueError):
        await gate.acquire("urgent")


@pytest.mark.parametrize(("default", "requested", "expected"), [
    ("interactive", None, "interactive"),
    ("interactive", "batch", "batch"),
    ("interactive", "standard", "standard"),
    ("standard", "batch", "batch"),
    ("standard", "interactive", "standard"),  # may not raise
    ("batch", "interactive", "batch"),
    ("batch", "standard", "batch"),
    ("standard", " Batch ", "batch"),  # header values: case and spaces ignored
    ("standard", "urgent", "standard"),  # not a tier: ignored
    ("standard", "", "standard"),
])
def test_the_header_may_lower_the_tier_but_never_raise_it(
        default: str, requested: str | None, expected: str) -> None:
    assert effective_tier(default, requested) == expected


def test_a_default_that_is_not_a_tier_is_a_config_error() -> None:
    with pytest.raises(ValueError):
        effective_tier("gold", "batch")


def test_config_defaults_and_bounds() -> None:
    config = TierConfig(capacity=8)
    assert [config.limits(t).wait_target_ms for t in TIERS] == [50, 500, 5000]
    assert config.waiting_bound == 1000
    assert TierConfig(capacity=1, max_waiting=None).waiting_bound == config.queue_room
    with pytest.raises(ValidationError):
        TierConfig(capacity=0)
    with pytest.raises(ValidationError):
        TierConfig(capacity=1, max_waiting=config.queue_room + 1)
    batch = {"max_queue": 1, "wait_target_ms": 1}
    with pytest.raises(ValidationError):  # headroom as large as the capacity: batch never runs
        TierConfig.model_validate({"capacity": 2, "batch": {**batch, "headroom": 2}})
    with pytest.raises(ValidationError):  # headroom may not shrink going down the tiers
        TierConfig.model_validate({"capacity": 4, "standard": {**batch, "headroom": 2},
                                   "batch": {**batch, "headroom": 1}})


async def test_take_free_hands_a_free_place_without_waiting_and_none_when_full() -> None:
    gate = make_gate(capacity=1)
    slot = gate.take_free("batch")
    assert isinstance(slot, TierSlot) and gate.snapshot().in_use == 1
    assert gate.take_free("interactive") is None  # full: nothing taken, nobody queued
    assert gate.snapshot().in_use == 1 and gate.snapshot().waiting == 0
    with pytest.raises(ValueError, match="unknown priority tier"):
        gate.take_free("urgent")
    slot.release()
    assert gate.snapshot().in_use == 0
