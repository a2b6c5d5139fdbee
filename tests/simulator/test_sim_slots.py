"""SlotPool: at most ``size`` holders, the rest served first come first served."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from switchgear.simulator.slots import SlotPool

WaitUntil = Callable[[Callable[[], bool]], Awaitable[None]]  # the conftest fixture


async def test_waiters_get_the_slot_in_arrival_order(wait_until: WaitUntil) -> None:
    pool = SlotPool(1)
    order: list[str] = []
    release_first = asyncio.Event()

    async def holder(name: str, until: asyncio.Event | None = None) -> None:
        async with pool.hold():
            order.append(name)
            if until is not None:
                await until.wait()

    first = asyncio.create_task(holder("first", release_first))
    await wait_until(lambda: pool.busy == 1)
    waiters = []
    for name in ("b", "c", "d"):
        waiters.append(asyncio.create_task(holder(name)))
        await wait_until(lambda: pool.waiting == len(waiters))
    release_first.set()
    async with asyncio.timeout(5):
        await asyncio.gather(first, *waiters)
    assert order == ["first", "b", "c", "d"]
    assert (pool.busy, pool.waiting) == (0, 0)


async def test_a_cancelled_waiter_leaves_the_line_and_frees_nothing(
    wait_until: WaitUntil,
) -> None:
    pool = SlotPool(1)
    release = asyncio.Event()

    async def hold_until_released() -> None:
        async with pool.hold():
            await release.wait()

    holder = asyncio.create_task(hold_until_released())
    await wait_until(lambda: pool.busy == 1)
    waiter = asyncio.create_task(hold_until_released())
    await wait_until(lambda: pool.waiting == 1)
    waiter.cancel()
    await wait_until(lambda: pool.waiting == 0)
    assert pool.busy == 1
    release.set()
    async with asyncio.timeout(5):
        await holder
        await pool.wait_idle()
    assert (pool.busy, pool.waiting) == (0, 0)


async def test_the_peak_counts_holders_and_waiters_and_stays_after_they_leave(
    wait_until: WaitUntil,
) -> None:
    pool = SlotPool(2)
    release = asyncio.Event()

    async def hold_until_released() -> None:
        async with pool.hold():
            await release.wait()

    tasks = [asyncio.create_task(hold_until_released()) for _ in range(5)]
    await wait_until(lambda: (pool.busy, pool.waiting) == (2, 3))
    release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert (pool.busy, pool.waiting, pool.peak) == (0, 0, 5)
    async with pool.hold():
        assert pool.peak == 5
