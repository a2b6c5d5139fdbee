"""Priority tiers and load shedding: the gate in front of the backends.

At most ``capacity`` requests run at once (the sum of the deployments' capacity). Beyond that,
requests wait in one bounded FIFO queue per tier, and a freed place always goes to the oldest
waiter of the highest tier: interactive, then standard, then batch. Under overload the lowest tier
is shed first, in three ways:

- **queue full**: an arrival whose own tier's queue is at ``max_queue`` is shed at once;
- **displaced**: when all waiting places together are taken (``max_waiting``), an arrival of a
  higher tier pushes out the newest waiter of the lowest tier below it (an interactive request
  displaces the newest batch request); with no lower waiter to push out, the arrival is shed;
- **wait target**: a waiter still queued when its tier's ``wait_target_ms`` has passed is shed,
  so a higher tier taking every freed place turns into lower-tier sheds, not unbounded waits.

A tier may also leave ``headroom`` places free for the tiers above it (e.g. batch headroom 1:
batch runs on at most ``capacity - 1`` places), so an interactive arrival usually finds a place
at once instead of waiting for a long batch request to finish: running requests are never
preempted, so headroom is what keeps interactive waits short when batch could fill every place.

Shed requests get :class:`switchgear.errors.Overloaded` (503 with Retry-After), never
:class:`~switchgear.errors.RateLimited` (429): a shed says the *gateway* is out of capacity right
now, not that the caller went over its own quota. Keeping 429 for quota (RPM/TPM/budget) lets
clients, dashboards and SLOs tell "you sent too much" from "we are full"; both are retryable for
the OpenAI SDKs, which back off on 429 and 5xx alike.

Memory is bounded by the queues: a waiter is one small object in one deque of bounded length;
everything else is a fixed set of integer counters, whatever the offered load.

With ``capacity_scope: fleet`` (:class:`FleetTierGate`) ``capacity`` counts the running places of
every replica sharing the state Redis (a semaphore with leases, store/leases.py), and a tier's
headroom is a smaller fleet-wide limit; the queues, their order and the shedding stay this
replica's own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from switchgear.errors import Overloaded
from switchgear.sections.tiers import TIERS, Tier, TierConfig, TierLimits
from switchgear.store.leases import FleetSemaphore
from switchgear.store.redis import StateUnavailable

#: The header a request may use to lower its tier (never to raise it).
PRIORITY_HEADER = "x-switchgear-priority"

ShedReason = Literal["queue_full", "displaced", "wait_target"]
#: Each tier by its exact name.
TIER_NAMES: dict[str, Tier] = {name: name for name in TIERS}


def effective_tier(default: str, requested: str | None) -> Tier:
    """The tier a request runs at: its key's ``default``, or a lower tier it ``requested``.

    ``requested`` is the raw header value (``None`` when absent). A request may lower its tier,
    never raise it: asking for a higher tier, or for a name that is not a tier, keeps the default.
    Matching is case-insensitive and ignores surrounding spaces. A ``default`` that is not a tier is
    a configuration error (``ValueError``).
    """
    if requested is None and default in TIER_NAMES:  # most requests: their key's tier
        return TIER_NAMES[default]
    base = _tier_or_none(default)
    if base is None:
        raise ValueError(f"unknown priority tier {default!r}; expected one of {', '.join(TIERS)}")
    asked = _tier_or_none(requested)
    if asked is not None and TIERS.index(asked) > TIERS.index(base):
        return asked
    return base


def _tier_or_none(name: str | None) -> Tier | None:
    if name is None:
        return None
    cleaned = name.strip().lower()
    return cleaned if cleaned in TIERS else None


@dataclass(frozen=True, slots=True)
class TierSnapshot:
    """One tier at one moment: its queue, its running requests and its counters since start."""

    waiting: int
    in_use: int
    admitted: int
    shed_queue_full: int
    shed_displaced: int
    shed_wait_target: int
    max_depth: int
    max_queue: int
    wait_target_ms: float
    headroom: int

    @property
    def shed(self) -> int:
        """Requests of this tier shed so far, for any reason."""
        return self.shed_queue_full + self.shed_displaced + self.shed_wait_target


@dataclass(frozen=True, slots=True)
class GateSnapshot:
    """The whole gate at one moment (for /admin, metrics and benchmarks)."""

    capacity: int
    in_use: int
    waiting: int
    max_waiting: int
    tiers: dict[str, TierSnapshot]


class _Waiter:
    """A request waiting in a tier's queue; ``future`` resolves when it is handed a place."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


class _TierState:
    """One tier's live queue and counters (owned by the gate, changed only on its event loop)."""

    __slots__ = ("admitted", "in_use", "limits", "max_depth", "name", "shed", "waiting")

    def __init__(self, name: Tier, limits: TierLimits) -> None:
        self.name = name
        self.limits = limits
        self.waiting: deque[_Waiter] = deque()
        self.in_use = 0
        self.admitted = 0
        self.max_depth = 0
        self.shed: dict[ShedReason, int] = {"queue_full": 0, "displaced": 0, "wait_target": 0}

    def snapshot(self) -> TierSnapshot:
        return TierSnapshot(
            waiting=len(self.waiting), in_use=self.in_use, admitted=self.admitted,
            shed_queue_full=self.shed["queue_full"], shed_displaced=self.shed["displaced"],
            shed_wait_target=self.shed["wait_target"], max_depth=self.max_depth,
            max_queue=self.limits.max_queue, wait_target_ms=self.limits.wait_target_ms,
            headroom=self.limits.headroom)


class TierSlot:
    """A running place held by one request; give it back with :meth:`release` (idempotent)."""

    __slots__ = ("_gate", "released", "tier")

    def __init__(self, gate: TierGate, tier: Tier) -> None:
        self._gate = gate
        self.tier = tier
        self.released = False

    def release(self) -> None:
        """Give the place back (to the next waiter, if any); later calls do nothing."""
        if not self.released:
            self.released = True
            self._gate._release(self.tier)


class TierGate:
    """Admits at most ``config.capacity`` requests at once; queues, orders and sheds the rest.

    Use ``async with gate.slot(tier):`` around the work that needs a place. For work that outlives
    one block (a streamed answer), ``slot = await gate.acquire(tier)`` then ``slot.release()`` in
    a ``finally``. Not thread-safe: use it from one event loop.
    """

    def __init__(self, config: TierConfig) -> None:
        self.config = config
        self._in_use = 0
        self._waiting = 0
        self._tiers: dict[str, _TierState] = {
            name: _TierState(name, config.limits(name)) for name in TIERS}

    @asynccontextmanager
    async def slot(self, tier: str) -> AsyncIterator[TierSlot]:
        """Hold a running place for the body of the ``async with``.

        Raises :class:`~switchgear.errors.Overloaded` when the request is shed. The place is given
        back on exit, whether the body returns, raises or is cancelled.
        """
        held = await self.acquire(tier)
        try:
            yield held
        finally:
            held.release()

    async def acquire(self, tier: str) -> TierSlot:
        """Take a running place now, or wait for one in ``tier``'s queue, or be shed (Overloaded).

        A waiter that is cancelled leaves its queue at once; a place handed to it just as it was
        cancelled is passed on to the next waiter.
        """
        slot = self.take_free(tier)
        if slot is not None:
            return slot
        return await self._queue(self._state(tier))

    def take_free(self, tier: str) -> TierSlot | None:
        """A running place if one is free now, else None (``acquire`` waits for one), without
        awaiting anything; ValueError for a tier that is not one."""
        state = self._state(tier)
        if self._in_use < self.config.capacity - state.limits.headroom:
            self._in_use += 1
            return self._admit(state)
        return None

    async def _queue(self, state: _TierState) -> TierSlot:
        """Wait in ``state``'s queue for a place handed on, or be shed (Overloaded)."""
        self._make_room(state)
        waiter = _Waiter(asyncio.get_running_loop().create_future())
        state.waiting.append(waiter)
        self._waiting += 1
        state.max_depth = max(state.max_depth, len(state.waiting))
        self._queued()
        try:
            async with asyncio.timeout(state.limits.wait_target_ms / 1000):
                await waiter.future
        except TimeoutError:
            if not _granted(waiter.future):
                displaced = _displaced(waiter.future)
                if displaced is not None:  # displaced just as the target passed
                    raise displaced from None
                self._leave(state, waiter)
                raise self._shed(state, "wait_target") from None
        except BaseException:
            if _granted(waiter.future):
                self._handed_too_late()  # handed a place just as we left
            else:
                _displaced(waiter.future)  # marks a displacement's (or an outage's) error seen
                self._leave(state, waiter)
            raise
        return self._admit(state)

    def _queued(self) -> None:
        """A request just joined a queue (places come from releases here: nothing to do)."""

    def _handed_too_late(self) -> None:
        """A waiter that left was handed a place just then: pass it on."""
        self._hand_on()

    def snapshot(self) -> GateSnapshot:
        """Places in use, requests waiting and, per tier, its queue and counters."""
        return GateSnapshot(capacity=self.config.capacity, in_use=self._in_use,
                            waiting=self._waiting, max_waiting=self.config.waiting_bound,
                            tiers={name: state.snapshot() for name, state in self._tiers.items()})

    def _state(self, tier: str) -> _TierState:
        state = self._tiers.get(tier)
        if state is None:
            raise ValueError(f"unknown priority tier {tier!r}; expected one of {', '.join(TIERS)}")
        return state

    def _admit(self, state: _TierState) -> TierSlot:
        state.in_use += 1
        state.admitted += 1
        return TierSlot(self, state.name)

    def _make_room(self, state: _TierState) -> None:
        """Make sure ``state`` may queue one more request, or raise Overloaded for the arrival."""
        if len(state.waiting) >= state.limits.max_queue:
            raise self._shed(state, "queue_full")
        if self._waiting < self.config.waiting_bound:
            return
        for lower in reversed(TIERS[TIERS.index(state.name) + 1:]):
            victims = self._tiers[lower].waiting
            if victims:
                victim = victims.pop()  # the newest of the lowest tier goes first
                self._waiting -= 1
                victim.future.set_exception(self._shed(self._tiers[lower], "displaced"))
                return
        raise self._shed(state, "queue_full")

    def _leave(self, state: _TierState, waiter: _Waiter) -> None:
        """Take a waiter that gave up (cancelled, timed out) out of its queue, if still there."""
        try:
            state.waiting.remove(waiter)
        except ValueError:
            return  # already taken out: displaced
        self._waiting -= 1

    def _release(self, tier: Tier) -> None:
        """Give back a place that ``tier`` held."""
        self._tiers[tier].in_use -= 1
        self._hand_on()

    def _hand_on(self) -> None:
        """Pass a freed place to the oldest waiter of the highest tier that may take it (its
        headroom allowing), or free it if none may."""
        if not self._waiting:  # no queue holds anyone
            self._in_use -= 1
            return
        for name in TIERS:
            state = self._tiers[name]
            if self._in_use - 1 >= self.config.capacity - state.limits.headroom:
                continue
            waiting = state.waiting
            while waiting:
                waiter = waiting.popleft()
                self._waiting -= 1
                if not waiter.future.done():
                    waiter.future.set_result(None)  # the place passes on: in_use is unchanged
                    return
        self._in_use -= 1

    def _shed(self, state: _TierState, reason: ShedReason) -> Overloaded:
        state.shed[reason] += 1
        why = {"queue_full": "its queue is full",
               "displaced": "a higher-priority request needed its place in the queue",
               "wait_target": f"it waited past its {state.limits.wait_target_ms:g} ms target"}[reason]
        return Overloaded(f"Overloaded: this {state.name} request was shed because {why}; "
                          f"try again shortly.",
                          retry_after=max(1.0, state.limits.wait_target_ms / 1000))


#: Seconds the fleet gate's dispatcher waits for a place before it looks again at who is first.
DISPATCH_SLICE_S = 0.1


class FleetTierGate(TierGate):
    """A :class:`TierGate` whose ``capacity`` holds across the replicas sharing ``places``.

    Tier order and shedding stay per replica: this replica's waiters queue, are displaced and
    shed exactly as in :class:`TierGate`, and the fleet's places, as they come free, go to the
    oldest waiter of this replica's highest tier (one dispatcher asks Redis for them, with
    backoff, woken at once when this replica frees one). A place counts against the whole
    fleet's ``capacity``; a tier with headroom takes one only while fewer than ``capacity -
    headroom`` are taken fleet-wide. ``in_use`` (snapshot) is this replica's running places.
    A shared-state outage is :class:`~switchgear.store.redis.StateUnavailable` (503).
    """

    def __init__(self, config: TierConfig, places: FleetSemaphore) -> None:
        super().__init__(config)
        self.places = places
        self._dispatcher: asyncio.Task[None] | None = None

    async def acquire(self, tier: str) -> TierSlot:
        """Take a fleet place now (when nobody here waits), or wait in ``tier``'s queue for
        one, or be shed (Overloaded); StateUnavailable when the shared state cannot answer."""
        state = self._state(tier)
        if not self._waiting and await self.places.try_acquire(self._limit(state)):
            self._in_use += 1
            return self._admit(state)
        return await self._queue(state)

    def take_free(self, tier: str) -> TierSlot | None:
        """None: a fleet place is had only by asking the shared state (``acquire``)."""
        return None

    def _queued(self) -> None:
        """Someone waits here: make sure the dispatcher is asking the fleet for places."""
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.get_running_loop().create_task(
                self._dispatch(), name="fleet-tier-dispatch")

    def _handed_too_late(self) -> None:
        """A waiter that left was handed a place just then: back to the fleet."""
        self._give_back()

    def _limit(self, state: _TierState) -> int:
        return self.config.capacity - state.limits.headroom

    def _leave(self, state: _TierState, waiter: _Waiter) -> None:
        """A waiter gave up; when it was the last one here, nobody needs the dispatcher."""
        super()._leave(state, waiter)
        if not self._waiting and self._dispatcher is not None:
            self._dispatcher.cancel()
            self._dispatcher = None  # the next waiter starts another

    def _release(self, tier: Tier) -> None:
        """Give back a place that ``tier`` held: to the fleet (a waiter here is woken)."""
        self._tiers[tier].in_use -= 1
        self._give_back()

    def _give_back(self) -> None:
        self._in_use -= 1
        self.places.release()

    def _first(self) -> tuple[_TierState, _Waiter] | None:
        """The oldest waiter of the highest tier that has one."""
        for name in TIERS:
            state = self._tiers[name]
            if state.waiting:
                return state, state.waiting[0]
        return None

    async def _dispatch(self) -> None:
        """While anyone here waits, take fleet places for the first waiter, one at a time."""
        while (first := self._first()) is not None:
            try:
                taken = await self.places.acquire(self._limit(first[0]), DISPATCH_SLICE_S)
            except StateUnavailable as error:
                self._fail_first(error)
                continue
            if taken:
                self._in_use += 1
                if not self._hand_first():
                    self._give_back()  # everyone left meanwhile

    def _hand_first(self) -> bool:
        """Hand a place just taken to the first waiter now; whether anyone took it."""
        waiter = self._pop_first()
        if waiter is None:
            return False
        waiter.future.set_result(None)
        return True

    def _fail_first(self, error: StateUnavailable) -> None:
        """The shared state is away: the first waiter gets the 503 (the next ones try again)."""
        waiter = self._pop_first()
        if waiter is not None:
            waiter.future.set_exception(error)

    def _pop_first(self) -> _Waiter | None:
        """Take the first waiter still waiting out of its queue (passing over those that
        just gave up: their ``_leave`` finds them gone)."""
        while (first := self._first()) is not None:
            state, waiter = first
            state.waiting.popleft()
            self._waiting -= 1
            if not waiter.future.done():
                return waiter
        return None


def _granted(future: asyncio.Future[None]) -> bool:
    """Whether the gate handed this waiter a place (its future holds a result, not an error)."""
    return future.done() and not future.cancelled() and future.exception() is None


def _displaced(future: asyncio.Future[None]) -> BaseException | None:
    """The error a displaced waiter's future holds (marking it as seen), or None."""
    if future.done() and not future.cancelled():
        return future.exception()
    return None
