"""The fleet's semaphores (store/leases.py) on a real Redis: several replicas (each its own
client and leases) never hold more places than the limit together; a replica that stops
renewing loses its places after the lease and another takes them; a graceful stop gives them
back at once; an outage is StateUnavailable; hostile names cannot share a key. And the fleet
tier gate over them: capacity across replicas, tier order and headroom, shedding, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from fleet_support import taken
from redis.asyncio import Redis

from switchgear.admission.tiers import FleetTierGate, TierSlot
from switchgear.errors import Overloaded
from switchgear.sections.tiers import TierConfig
from switchgear.store.leases import FleetLeases, lease_key
from switchgear.store.redis import StateUnavailable

from servers import REDIS_URL, OwnRedis

LIMIT = 4

#: Makes a started replica's leases: ``await replicas(lease_s)``.
Replicas = Callable[..., Awaitable[FleetLeases]]


@pytest.fixture
async def replicas(prefix: str) -> AsyncIterator[Replicas]:
    """Makes started leases of a replica of their own (``replicas(lease_s)``), stopped after."""
    made: list[FleetLeases] = []

    async def make(lease_s: float = 10.0) -> FleetLeases:
        leases = FleetLeases.connect(REDIS_URL, prefix, lease_s)
        await leases.start()
        made.append(leases)
        return leases

    yield make
    for leases in made:
        await leases.stop()


async def test_never_more_places_than_the_limit_across_replicas(
        replicas: Replicas) -> None:
    fleet = [await replicas() for _ in range(3)]
    running = peak = granted = 0

    async def request(leases: FleetLeases) -> None:
        nonlocal running, peak, granted
        semaphore = leases.semaphore("max_concurrency", "chat", "gpu")
        if not await semaphore.acquire(LIMIT, 10):
            return
        running += 1
        granted += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        semaphore.release()

    await asyncio.gather(*(request(fleet[n % 3]) for n in range(90)))
    assert granted == 90  # every waiter had its turn
    assert peak == LIMIT  # and never more than the limit at once, across the replicas


async def test_a_full_semaphore_refuses_and_a_release_lets_the_next_in(
        replicas: Replicas) -> None:
    one, two = await replicas(), await replicas()
    first, second = one.semaphore("tiers"), two.semaphore("tiers")
    assert await first.try_acquire(2) and await second.try_acquire(2)
    assert not await second.try_acquire(2)
    assert not await second.acquire(2, 0.05)  # waits, then gives up
    assert second.seen == 2
    waiting = asyncio.ensure_future(second.acquire(2, 10))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    first.release()
    assert await waiting
    assert (len(first.held), len(second.held)) == (0, 2)


async def test_a_replica_that_stops_renewing_loses_its_places_after_the_lease(
        replicas: Replicas, prefix: str, redis_client: Redis) -> None:
    dead = FleetLeases.connect(REDIS_URL, prefix, 0.5)  # never started: it renews nothing
    try:
        gone = dead.semaphore("max_concurrency", "chat", "gpu")
        for _ in range(LIMIT):
            assert await gone.try_acquire(LIMIT)
        kept = (await replicas(0.5)).semaphore("max_concurrency", "chat", "gpu")
        assert not await kept.try_acquire(LIMIT)
        assert await kept.acquire(LIMIT, 5)  # within a lease, the places lapse: one is taken
        await asyncio.sleep(0.1)  # the dead replica's later places lapse too (taken just after)
        for _ in range(LIMIT - 1):
            assert await kept.try_acquire(LIMIT)
        assert await redis_client.zcard(kept.key) == LIMIT
        await dead.renew()  # a late renewal brings no lapsed place back
        assert gone.held == []
        assert await redis_client.zcard(kept.key) == LIMIT
        assert not await kept.try_acquire(LIMIT)
    finally:
        await dead.stop()


class LateAnswers:
    """A Redis client whose scripts' answers arrive ``delay`` seconds after Redis ran them."""

    def __init__(self, client: Redis, delay: float) -> None:
        self.client = client
        self.delay = delay

    async def evalsha(self, *args: Any) -> Any:
        answer = await self.client.evalsha(*args)
        await asyncio.sleep(self.delay)
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


async def test_a_take_cancelled_while_redis_answers_keeps_no_place(
        replicas: Replicas, redis_client: Redis) -> None:
    leases = await replicas(60)
    leases.client = cast(Redis, LateAnswers(leases.client, 0.2))
    semaphore = leases.semaphore("tiers")
    taking = asyncio.ensure_future(semaphore.try_acquire(1))
    assert await taken(redis_client, semaphore.key, 1) == 1  # Redis granted the place
    taking.cancel()  # and the request leaves before the answer
    with pytest.raises(asyncio.CancelledError):
        await taking
    # the answer arrives and the place goes back: not after the 60 s lease, now
    assert await taken(redis_client, semaphore.key, 0) == 0
    assert semaphore.held == []


async def test_places_outlive_many_leases_while_renewed(
        replicas: Replicas) -> None:
    holder, other = await replicas(0.3), await replicas(0.3)
    assert await holder.semaphore("tiers").try_acquire(1)
    await asyncio.sleep(1.0)  # three leases long
    assert not await other.semaphore("tiers").try_acquire(1)


async def test_a_graceful_stop_gives_the_places_back_at_once(
        replicas: Replicas, prefix: str,
        redis_client: Redis) -> None:
    leaving = FleetLeases.connect(REDIS_URL, prefix, 60)
    await leaving.start()
    for _ in range(3):
        assert await leaving.semaphore("tiers").try_acquire(3)
    await leaving.stop()
    assert await redis_client.zcard(lease_key(prefix, "tiers")) == 0
    staying = await replicas(60)
    assert await staying.semaphore("tiers").try_acquire(3)


async def test_the_key_goes_with_the_last_lease(
        replicas: Replicas, redis_client: Redis) -> None:
    semaphore = (await replicas(0.5)).semaphore("tiers")
    assert await semaphore.try_acquire(1)
    ttl = await redis_client.pttl(semaphore.key)
    assert 0 < ttl <= 500  # no key left behind once every lease has lapsed


async def test_redis_outage_is_state_unavailable(refused_url: Callable[..., str]) -> None:
    leases = FleetLeases.connect(refused_url("redis") + "/0", "sgtest:", 1.0)
    await leases.start()
    try:
        semaphore = leases.semaphore("tiers")
        with pytest.raises(StateUnavailable) as caught:
            await semaphore.acquire(1, 1.0)
        assert caught.value.status == 503
        assert semaphore.held == []
        semaphore.held.append("placed-before-the-outage")
        with pytest.raises(StateUnavailable):
            await leases.renew()
        semaphore.release()
        await leases.flush()  # logged, not raised: the place lapses by itself
    finally:
        await leases.stop()


async def test_places_through_a_redis_restart(own_redis: OwnRedis) -> None:
    server = own_redis
    leases = FleetLeases.connect(f"redis://127.0.0.1:{server.port}/0", "sgtest:", 1.0)
    try:
        semaphore = leases.semaphore("tiers")
        assert await semaphore.try_acquire(2)
        await server.stop()
        with pytest.raises(StateUnavailable):
            await semaphore.try_acquire(2)
        with pytest.raises(StateUnavailable):
            await leases.renew()
        assert len(semaphore.held) == 1  # kept while Redis is away: it may come back whole

        await server.start()  # back, empty: the place lapsed with it
        await leases.renew()
        assert semaphore.held == []  # dropped here too, not renewed into a place it never had
        assert await semaphore.try_acquire(2) and await semaphore.try_acquire(2)
        assert not await semaphore.try_acquire(2)
    finally:
        await leases.stop()


@pytest.mark.parametrize(("one", "other"), [
    (("a:b", "c"), ("a", "b:c")),
    (("a%3Ab", "c"), ("a:b", "c")),
    (("x", "y"), ("x:y",)),
    (("dep\n", "ø"), ("dep", "\nø")),
])
async def test_hostile_names_get_keys_of_their_own(
        replicas: Replicas, one: tuple[str, ...],
        other: tuple[str, ...]) -> None:
    assert lease_key("p:", *one) != lease_key("p:", *other)
    leases = await replicas()
    assert await leases.semaphore(*one).try_acquire(1)
    assert await leases.semaphore(*other).try_acquire(1)  # not the first one's place


def fleet_gate(leases: FleetLeases, capacity: int, wait_ms: float = 60_000,
               **tiers: dict[str, float]) -> FleetTierGate:
    """A replica's fleet tier gate of ``capacity`` places; every tier waits ``wait_ms``."""
    limits = {"max_queue": 100, "wait_target_ms": wait_ms}
    config = TierConfig.model_validate({
        "capacity": capacity, "capacity_scope": "fleet", "max_waiting": None,
        **{tier: {**limits, **tiers.get(tier, {})} for tier in ("interactive", "standard",
                                                                 "batch")}})
    return FleetTierGate(config, leases.semaphore("tiers_capacity"))


async def test_the_fleet_gate_never_runs_more_than_capacity_across_replicas(
        replicas: Replicas) -> None:
    gates = [fleet_gate(await replicas(), LIMIT) for _ in range(3)]
    running = peak = done = 0

    async def request(gate: FleetTierGate, tier: str) -> None:
        nonlocal running, peak, done
        async with gate.slot(tier):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.005)
            running -= 1
            done += 1

    tiers = ("interactive", "standard", "batch")
    await asyncio.gather(*(request(gates[n % 3], tiers[n % 2 * 2]) for n in range(60)))
    assert (done, peak) == (60, LIMIT)
    assert [gate.snapshot().in_use for gate in gates] == [0, 0, 0]


async def test_a_freed_fleet_place_goes_to_the_highest_tier_waiting_here(
        replicas: Replicas) -> None:
    one, two = fleet_gate(await replicas(), 1), fleet_gate(await replicas(), 1)
    held = await one.acquire("batch")  # the fleet's only place, on the other replica
    order: list[str] = []

    async def request(name: str, tier: str) -> None:
        async with two.slot(tier):
            order.append(name)

    tasks = []
    for name, tier in [("b1", "batch"), ("s1", "standard"), ("i1", "interactive")]:
        tasks.append(asyncio.create_task(request(name, tier)))
        await asyncio.sleep(0.01)
    assert two.snapshot().waiting == 3
    held.release()
    await asyncio.gather(*tasks)
    assert order == ["i1", "s1", "b1"]


async def test_headroom_is_a_fleet_wide_limit(replicas: Replicas) -> None:
    one = fleet_gate(await replicas(), 2, wait_ms=50, batch={"headroom": 1})
    two = fleet_gate(await replicas(), 2, wait_ms=50, batch={"headroom": 1})
    await one.acquire("standard")  # one of the two places, taken on the other replica
    with pytest.raises(Overloaded, match="waited past"):
        await two.acquire("batch")  # batch leaves the last place to the tiers above it
    assert two.snapshot().tiers["batch"].shed_wait_target == 1
    slot = await two.acquire("interactive")  # which takes it at once
    assert isinstance(slot, TierSlot)
    with pytest.raises(Overloaded):
        await one.acquire("interactive")  # and the fleet is full


async def test_a_waiter_that_leaves_takes_no_fleet_place_with_it(
        replicas: Replicas, redis_client: Redis) -> None:
    here = await replicas()
    one, two = fleet_gate(here, 1), fleet_gate(await replicas(), 1)
    held = await one.acquire("standard")
    leaving = asyncio.create_task(two.acquire("standard"))
    await asyncio.sleep(0.02)
    leaving.cancel()
    held.release()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    slot = await one.acquire("standard")  # the place is free again, on either replica
    slot.release()
    await here.flush()
    assert await redis_client.zcard(one.places.key) == 0
    assert (one.snapshot().in_use, two.snapshot().in_use, two.snapshot().waiting) == (0, 0, 0)


async def test_the_fleet_gate_answers_an_outage_with_state_unavailable(
        refused_url: Callable[..., str]) -> None:
    leases = FleetLeases.connect(refused_url("redis") + "/0", "sgtest:", 1.0)
    await leases.start()
    try:
        gate = fleet_gate(leases, 2)
        with pytest.raises(StateUnavailable):
            await gate.acquire("interactive")
        assert gate.snapshot().in_use == 0
    finally:
        await leases.stop()



async def test_a_fleet_gate_hands_no_place_without_asking_the_fleet(replicas: Replicas) -> None:
    """``take_free`` (the priority stage's no-wait path) never takes a place the fleet did not
    grant: it leaves every fleet place to ``acquire``."""
    gate = fleet_gate(await replicas(), 1)
    assert gate.take_free("interactive") is None and gate.snapshot().in_use == 0
    assert isinstance(await gate.acquire("interactive"), TierSlot)
    assert gate.take_free("interactive") is None and gate.snapshot().in_use == 1


async def test_a_stop_right_after_a_release_ends_and_the_place_is_back(
        replicas: Replicas, redis_client: Redis) -> None:
    """The returner is woken by the release and told to end at once: it used to lose the
    stop's cancellation and wait for give-backs forever."""
    leases = await replicas()
    semaphore = leases.semaphore("stopping")
    assert await semaphore.acquire(1, 5)
    semaphore.release()
    await asyncio.wait_for(leases.stop(), 5)
    assert await redis_client.zcard(semaphore.key) == 0
