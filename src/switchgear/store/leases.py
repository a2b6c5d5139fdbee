"""Counting semaphores that hold across replicas: places in Redis, each a lease that expires
unless the replica holding it renews it.

One sorted set per semaphore: a member is one place (``<replica id>:<counter>``), its score the
time its lease ends, in Redis's own clock (``TIME`` inside the scripts, so replicas' clocks do
not matter). Taking a place is one script: drop the expired members, then add one if fewer than
the limit are left. Giving one back is ``ZREM``, sent in the background in batches (the request
does not wait for it). Every ``lease_s / 3`` seconds one script renews every place this replica
holds, in all its semaphores at once. A replica that dies stops renewing: its places lapse
within ``lease_s`` and the fleet has them back. A replica that stops gracefully gives its places
back at once (``stop``).

Waiting for a place is no busy loop: one waiter per semaphore and replica asks Redis at a time
(the others queue behind it, first come first served), with a jittered backoff from
``FIRST_POLL_S`` to ``MAX_POLL_S``, cut short when this replica gives a place of that semaphore
back; another replica's release is seen at the next poll.

Every Redis failure is :class:`~switchgear.store.redis.StateUnavailable` (503) to the request
that needed a place. Places held while Redis is away are renewed when it returns, or have lapsed
(then the renewal says so in the log, and the places are dropped here). A request cancelled
while its take is in flight does not keep a place: the take finishes, and a place it was
granted is given back.

Keys are ``<prefix>lease:<escaped name parts joined by ':'>``: each part is percent-escaped
(``:`` and ``%`` included), so no name can reach another semaphore's key.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchgear.store.redis import LuaScript, StateUnavailable, connect_redis, text

log = logging.getLogger("switchgear.leases")

#: The first pause between two tries of a waiter for a place, and the longest one.
FIRST_POLL_S = 0.002
MAX_POLL_S = 0.05

#: Redis's clock in milliseconds, inside a script.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""
#: Let the key go when its last lease would have (no keys left behind by removed deployments).
_KEEP_KEY = """
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', key, last[2]) end
"""

#: KEYS[1] the semaphore; ARGV limit, lease in ms, member. Returns {granted 0/1, places taken}.
TAKE = LuaScript(_NOW + """
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local taken = redis.call('ZCARD', key)
if taken >= tonumber(ARGV[1]) then return {0, taken} end
redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[3])
""" + _KEEP_KEY + """
return {1, taken + 1}
""")

#: KEYS the semaphores; ARGV the lease in ms, then per key its member count and members.
#: Returns per key {members still held (renewed), places taken}.
RENEW = LuaScript(_NOW + """
local expiry = now + tonumber(ARGV[1])
local at = 2
local out = {}
for index, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local kept = {}
  for _ = 1, tonumber(ARGV[at]) do
    at = at + 1
    if redis.call('ZSCORE', key, ARGV[at]) then
      redis.call('ZADD', key, expiry, ARGV[at])
      kept[#kept + 1] = ARGV[at]
    end
  end
  at = at + 1
""" + _KEEP_KEY + """
  out[index] = {kept, redis.call('ZCARD', key)}
end
return out
""")


def lease_key(prefix: str, *parts: str) -> str:
    """The Redis key of the semaphore named by ``parts`` (each escaped: no collisions)."""
    return prefix + "lease:" + ":".join(quote(part, safe="") for part in parts)


class FleetSemaphore:
    """One semaphore shared by the fleet, as this replica uses it: the places it holds and the
    fleet's count as last seen. Its limit is given at each ``acquire``, so a config change
    applies at once (and headroom is a smaller limit)."""

    def __init__(self, leases: FleetLeases, key: str, labels: tuple[str, ...]) -> None:
        self._leases = leases
        self.key = key
        #: What it limits, for metrics: e.g. ``("max_concurrency", alias, deployment)``.
        self.labels = labels
        #: The places this replica holds (their members in the sorted set).
        self.held: list[str] = []
        #: Places taken across the fleet at this replica's last look.
        self.seen = 0
        #: Requests here taking a place now (asking or waiting): demand ``seen`` misses.
        self.taking = 0
        self._turn = asyncio.Lock()
        self._freed = asyncio.Event()

    async def try_acquire(self, limit: int) -> bool:
        """Take a place if fewer than ``limit`` are taken fleet-wide; whether one was taken.
        StateUnavailable when Redis cannot answer. Cancelled while Redis answers, a place it
        granted is given back."""
        leases = self._leases
        member = leases.member()
        call = asyncio.ensure_future(TAKE(leases.client, [self.key],
                                          [limit, leases.lease_ms, member]))
        try:
            granted, self.seen = await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(partial(self._abandoned, member))
            raise
        if granted:
            self.held.append(member)
        return bool(granted)

    def _abandoned(self, member: str, call: asyncio.Future[Any]) -> None:
        """A take whose caller left: give back the place Redis granted it, if it did."""
        if not call.cancelled() and call.exception() is None and call.result()[0]:
            self._leases.give_back(self, member)

    @property
    def demand(self) -> int:
        """Places taken fleet-wide at the last look, plus those being taken here since."""
        return self.seen + self.taking

    async def acquire(self, limit: int, seconds: float) -> bool:
        """Take a place, waiting up to ``seconds`` for one; whether one was taken."""
        self.taking += 1
        try:
            return await self._acquire(limit, seconds)
        finally:
            self.taking -= 1

    async def _acquire(self, limit: int, seconds: float) -> bool:
        if await self.try_acquire(limit):
            return True
        if seconds <= 0:
            return False
        try:
            async with asyncio.timeout(seconds), self._turn:
                delay = FIRST_POLL_S
                while True:
                    self._freed.clear()
                    if await self.try_acquire(limit):
                        return True
                    await self._pause(delay)
                    delay = min(delay * 2, MAX_POLL_S)
        except TimeoutError:
            return False

    def release(self) -> None:
        """Give one of this replica's places back (sent to Redis in the background)."""
        if self.held:
            self._leases.give_back(self, self.held.pop())
            self.seen = max(0, self.seen - 1)

    async def _pause(self, delay: float) -> None:
        """Sleep about ``delay`` seconds (jittered), less if this replica frees a place."""
        try:
            async with asyncio.timeout(delay * self._leases.jitter()):
                await self._freed.wait()
        except TimeoutError:
            pass

    def freed(self) -> None:
        """A place this replica held is back in Redis: let a waiter here try again now."""
        self._freed.set()


@dataclass(frozen=True, slots=True)
class FleetPlaces:
    """One semaphore's figures for /metrics: what it limits, places held here, the fleet's."""

    labels: tuple[str, ...]
    held: int
    seen: int


class FleetLeases:
    """This replica's places in the fleet's semaphores (``semaphore``), renewed in one call
    every ``lease_s / 3`` and given back in batches; ``start`` and ``stop`` them with the
    runtime. Owns its Redis client (closed at ``stop``)."""

    def __init__(self, client: Redis, prefix: str, lease_s: float,
                 replica: str | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.lease_s = lease_s
        self.lease_ms = max(1, round(lease_s * 1000))
        #: This replica's name in the members it adds (host, process, random: unique).
        self.replica = replica or (f"{socket.gethostname()}/{os.getpid()}/"
                                   f"{secrets.token_hex(4)}")
        self._counter = itertools.count()
        self._random = random.Random()
        self._semaphores: dict[str, FleetSemaphore] = {}
        self._returning: list[tuple[FleetSemaphore, str]] = []
        self._returns = asyncio.Event()
        self._renewer: asyncio.Task[None] | None = None
        self._returner: asyncio.Task[None] | None = None
        #: Set by ``stop``: the returner ends after its next flush.
        self._stopping = False

    @classmethod
    def connect(cls, url: str, prefix: str, lease_s: float) -> FleetLeases:
        """Leases in the Redis at ``url`` (a fail-fast client; nothing connects until used)."""
        return cls(connect_redis(url), prefix, lease_s)

    def semaphore(self, *name: str) -> FleetSemaphore:
        """The semaphore called ``name`` (its parts, e.g. ``"max_concurrency", alias,
        deployment``): the same object for the same name, so places outlive config versions."""
        key = lease_key(self.prefix, *name)
        found = self._semaphores.get(key)
        if found is None:
            found = self._semaphores[key] = FleetSemaphore(self, key, name)
        return found

    def member(self) -> str:
        """A new place's member: unique in the fleet."""
        return f"{self.replica}:{next(self._counter)}"

    def jitter(self) -> float:
        """A factor in [0.5, 1) that keeps replicas' polls apart."""
        return 0.5 + self._random.random() / 2

    def give_back(self, semaphore: FleetSemaphore, member: str) -> None:
        """Queue ``member``'s removal from ``semaphore`` for the returner task."""
        self._returning.append((semaphore, member))
        self._returns.set()

    def places(self) -> Iterator[FleetPlaces]:
        """Each semaphore's figures (for /metrics)."""
        for semaphore in self._semaphores.values():
            yield FleetPlaces(semaphore.labels, len(semaphore.held), semaphore.seen)

    async def start(self) -> None:
        """Start renewing places and giving them back."""
        if self._renewer is None:
            loop = asyncio.get_running_loop()
            self._stopping = False
            self._renewer = loop.create_task(self._renewing(), name="fleet-lease-renewal")
            self._returner = loop.create_task(self._returning_places(),
                                              name="fleet-lease-returns")

    async def stop(self) -> None:
        """Stop renewing; give back every place still held here (a graceful exit frees its
        capacity at once, not after the lease); close the client. The returner is told to end
        rather than cancelled: a cancellation that reaches it inside the Redis client's call
        can be lost there, and it would then wait for give-backs forever."""
        renewer, returner, self._renewer, self._returner = (self._renewer, self._returner,
                                                            None, None)
        self._stopping = True
        self._returns.set()
        if renewer is not None:
            renewer.cancel()
        await asyncio.gather(*(t for t in (renewer, returner) if t), return_exceptions=True)
        for semaphore in self._semaphores.values():
            while semaphore.held:
                semaphore.release()
        try:
            await self.flush()
        finally:
            await self.client.aclose()

    async def flush(self) -> None:
        """Send every queued give-back now (places that cannot be sent lapse by themselves)."""
        returning, self._returning = self._returning, []
        self._returns.clear()
        if not returning:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for semaphore, member in returning:
                    pipe.zrem(semaphore.key, member)
                await pipe.execute()
        except (RedisError, OSError) as error:
            log.warning("could not give back %d fleet places (%s): they lapse within %gs",
                        len(returning), type(error).__name__, self.lease_s)
        for semaphore in {semaphore for semaphore, _ in returning}:
            semaphore.freed()

    async def renew(self) -> None:
        """Extend every place held here by a lease from now, in one call; drop (and log) the
        places that lapsed meanwhile; update the fleet's counts as seen. StateUnavailable when
        Redis cannot answer."""
        # those it holds places of, and those it saw taken (their count, for has_room hints)
        watched = [s for s in self._semaphores.values() if s.held or s.seen]
        if not watched:
            return
        sent = {semaphore: list(semaphore.held) for semaphore in watched}
        args: list[str | int] = [self.lease_ms]
        for members in sent.values():
            args += [len(members), *members]
        answers = await RENEW(self.client, [s.key for s in watched], args)
        for (semaphore, members), (kept, taken) in zip(sent.items(), answers, strict=True):
            semaphore.seen = int(taken)
            lapsed = set(members) - {text(member) for member in kept}
            if lapsed:
                log.warning("%d fleet places of %s lapsed before renewal (Redis away longer "
                            "than limits.fleet_lease_s?)", len(lapsed), semaphore.key)
                semaphore.held = [m for m in semaphore.held if m not in lapsed]

    async def _renewing(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.renew()
            except StateUnavailable as error:
                log.warning("fleet places not renewed: %s", error)

    async def _returning_places(self) -> None:
        while not self._stopping:
            await self._returns.wait()
            await self.flush()
