"""Requests-per-minute and tokens-per-minute limits per key, tenant and model.

A request names any set of ``Limit``s (its key's, its tenant's, its model's, ...), each with its
own rpm and/or tpm, and is admitted only if every one of them admits it; the check and the
consumption are one atomic step, so a refusal by one limit consumes nothing from the others.

Algorithm: GCRA (the generic cell rate algorithm), which is a token bucket kept as one number.
Each bucket stores its theoretical arrival time ``tat``: the moment it will be full again. A
limit of L per minute has an emission interval ``T = 60 / L``; taking ``n`` units moves
``tat`` to ``max(tat, now) + n * T``, allowed while that is at most one minute ahead of now (a
burst of up to L, then one every T). Chosen over a counter-and-refill bucket because the state
is one float per bucket with no refill bookkeeping, which makes the Redis script a single GET and
SET per bucket, and a window-free algorithm has no boundary burst of 2L that fixed windows have.
Remaining units and the time to full follow directly from ``tat - now``.

Tokens are reserved at admission (the prompt estimate plus ``max_tokens``) and settled on
completion with the real usage: a smaller real count gives the difference back, a larger one
charges it (a bucket may go into debt, refusing until it drains).

Two implementations of the ``Limiter`` protocol: ``InProcessLimiter`` (one process, the
default) and ``RedisLimiter`` (one Lua script per operation by EVALSHA, atomic across gateway
replicas). A Redis failure raises ``StateUnavailable`` (503).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from redis.asyncio import Redis

from switchgear.errors import RateLimited
from switchgear.store.redis import LuaScript, text

#: The window every limit is expressed in, in seconds (per minute).
PERIOD = 60.0
#: Float slack when comparing a bucket's fill against the period.
EPSILON = 1e-6

Dimension = Literal["requests", "tokens"]
DIMENSIONS: tuple[Dimension, ...] = ("requests", "tokens")
#: Per dimension, in ``DIMENSIONS`` order: its ``x-ratelimit-{limit,remaining,reset}-*`` names.
HEADER_NAMES: tuple[tuple[Dimension, bytes, bytes, bytes], ...] = tuple(
    (dimension, f"x-ratelimit-limit-{dimension}".encode(),
     f"x-ratelimit-remaining-{dimension}".encode(), f"x-ratelimit-reset-{dimension}".encode())
    for dimension in DIMENSIONS)


@dataclass(frozen=True, slots=True)
class Limit:
    """Limits for one limit key (e.g. ``key:k1``, ``tenant:acme``, ``model:gpt-4o``); ``None``
    leaves that dimension unlimited."""

    key: str
    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is not None and value < 1:
                raise ValueError(f"limit {self.key!r}: {name} must be at least 1, got {value}")


@dataclass(slots=True)
class LimitStatus:
    """One bucket after a decision: its limit, what is left of it now, seconds until it is full.
    Never changed once made (not frozen: one is built per bucket per request, and a frozen
    dataclass costs a call per field to build)."""

    key: str
    dimension: Dimension
    limit: int
    remaining: int
    reset_after: float


@dataclass(slots=True)
class Reservation:
    """The tokens an admitted request holds in its token buckets until it is settled (never
    changed once made; not frozen, like ``LimitStatus``)."""

    tokens: int
    buckets: tuple[tuple[str, float], ...] = ()  # (bucket name, emission interval) per tpm limit


class RateLimitExceeded(RateLimited):
    """A limit refused the request: 429 with Retry-After and OpenAI's ``x-ratelimit-*`` headers."""

    def __init__(
        self, message: str, *, retry_after: float, headers: list[tuple[bytes, bytes]], code: str | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after, code=code)
        self.headers = headers


class LimitPlan:
    """The buckets of a set of limits, worked out once (per key, tenant and model, by
    ``Quotas``): everything an ``acquire`` needs but the clock and the tokens."""

    __slots__ = ("buckets", "header_groups", "limit_values", "token_buckets")

    def __init__(self, limits: Sequence[Limit]) -> None:
        self.buckets = _buckets(limits)
        #: The reservation's (bucket name, emission interval) per tpm limit.
        self.token_buckets = tuple((b.name, b.interval) for b in self.buckets
                                   if b.dimension == "tokens")
        #: Each bucket's limit as a header value.
        self.limit_values = tuple(b"%d" % b.limit for b in self.buckets)
        #: Per dimension with buckets, in ``DIMENSIONS`` order: its header names and buckets.
        self.header_groups = tuple(
            (names, indices) for names in HEADER_NAMES
            if (indices := tuple(i for i, b in enumerate(self.buckets) if b.dimension == names[0])))

    def remaining(self, index: int, lead: float) -> int:
        """What is left now of bucket ``index``, ``lead`` seconds from full."""
        bucket = self.buckets[index]
        return min(bucket.limit, max(0, math.floor((PERIOD - lead) / bucket.interval + EPSILON)))

    def strictest(self, indices: tuple[int, ...], leads: Sequence[float]) -> tuple[int, int]:
        """Of buckets ``indices``, the one that will refuse first (least remaining, then
        longest reset), and its remaining."""
        best = indices[0]
        left = self.remaining(best, leads[best])
        for index in indices[1:]:
            remaining = self.remaining(index, leads[index])
            if (remaining, -leads[index]) < (left, -leads[best]):
                best, left = index, remaining
        return best, left


@dataclass(slots=True)
class Decision:
    """The answer to one ``acquire``: admitted or not, and the limits' state for the headers:
    ``leads[i]``, seconds until bucket ``i`` of ``plan`` is full again (never changed once
    made; not frozen, like ``LimitStatus``)."""

    allowed: bool
    retry_after: float
    plan: LimitPlan
    leads: Sequence[float]
    reservation: Reservation
    refused_by: tuple[str, ...] = ()
    too_large: bool = False

    @property
    def statuses(self) -> tuple[LimitStatus, ...]:
        """Each bucket after the decision (before it, if refused)."""
        plan = self.plan
        return tuple(LimitStatus(bucket.key, bucket.dimension, bucket.limit,
                                 plan.remaining(index, lead), lead)
                     for index, (bucket, lead) in enumerate(zip(plan.buckets, self.leads,
                                                                strict=True)))

    def strictest(self, dimension: Dimension) -> LimitStatus | None:
        """The bucket of ``dimension`` that will refuse first: least remaining, then longest reset."""
        for names, indices in self.plan.header_groups:
            if names[0] == dimension:
                return self.statuses[self.plan.strictest(indices, self.leads)[0]]
        return None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the strictest limits."""
        out: list[tuple[bytes, bytes]] = []
        plan, leads = self.plan, self.leads
        for (_, limit, remaining, reset), indices in plan.header_groups:
            index, left = plan.strictest(indices, leads)
            out += ((limit, plan.limit_values[index]), (remaining, b"%d" % left),
                    (reset, duration(leads[index]).encode()))
        return out

    def error(self) -> RateLimitExceeded:
        """The 429 to raise for a refused decision."""
        names = ", ".join(self.refused_by)
        if self.too_large:
            message = f"Request too large for the tokens-per-minute limit of {names}; ask for fewer tokens."
            return RateLimitExceeded(
                message, retry_after=self.retry_after, headers=self.headers(), code="request_too_large"
            )
        message = f"Rate limit reached for {names}; try again in {duration(self.retry_after)}."
        return RateLimitExceeded(message, retry_after=self.retry_after, headers=self.headers())


def duration(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``20ms``, ``1.5s``, ``6m0s``."""
    seconds = max(0.0, seconds)
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60.0:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}m{round(rest, 3):g}s"


class Limiter(Protocol):
    """Admits a request against all its limits at once and settles its tokens when it is done."""

    async def acquire(self, limits: Sequence[Limit], tokens: int) -> Decision:
        """Take one request and ``tokens`` tokens from every limit, or nothing if any refuses."""
        ...

    async def take(self, plan: LimitPlan, tokens: int) -> Decision:
        """``acquire`` on limits planned once (``LimitPlan``)."""
        ...

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Replace the reserved tokens with ``used_tokens``: give back the excess or charge the rest."""
        ...


class _Bucket(NamedTuple):
    name: str
    key: str
    dimension: Dimension
    limit: int
    interval: float
    per_token: bool  # costs the request's tokens (tpm), or 1 (rpm)


def _buckets(limits: Sequence[Limit]) -> tuple[_Bucket, ...]:
    seen: set[str] = set()
    out: list[_Bucket] = []
    for limit in limits:
        if limit.key in seen:  # the same bucket twice would be read stale and charged twice
            continue
        seen.add(limit.key)
        if limit.rpm is not None:
            out.append(_Bucket(f"{limit.key}:rpm", limit.key, "requests", limit.rpm,
                               PERIOD / limit.rpm, False))
        if limit.tpm is not None:
            out.append(_Bucket(f"{limit.key}:tpm", limit.key, "tokens", limit.tpm,
                               PERIOD / limit.tpm, True))
    return tuple(out)


def _checked(tokens: int) -> None:
    if tokens < 0:
        raise ValueError(f"tokens must be non-negative, got {tokens}")


def _allowed(plan: LimitPlan, leads: Sequence[float], tokens: int) -> Decision:
    """The decision admitting a request, from each bucket's ``tat - now`` after the step."""
    return Decision(True, 0.0, plan, leads, Reservation(tokens, plan.token_buckets))


def _refused(plan: LimitPlan, leads: Sequence[float], tokens: int) -> Decision:
    """The decision refusing a request, from each bucket's ``tat - now`` before the step."""
    refused: list[str] = []
    retry_after = 0.0
    too_large = False
    for bucket, lead in zip(plan.buckets, leads, strict=True):
        cost = tokens if bucket.per_token else 1
        wait = lead + cost * bucket.interval - PERIOD
        if wait > EPSILON:
            refused.append(bucket.key)
            retry_after = max(retry_after, wait)
        if cost > bucket.limit:
            too_large = True
    retry_after = PERIOD if too_large else max(retry_after, 0.001)
    return Decision(False, retry_after, plan, leads, Reservation(0), tuple(dict.fromkeys(refused)),
                    too_large)


class InProcessLimiter:
    """GCRA buckets in a dict, for one gateway process: O(1) per bucket, no locks (nothing awaits
    between reading and writing a bucket)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._prune_at = 1024

    async def acquire(self, limits: Sequence[Limit], tokens: int) -> Decision:
        """Take one request and ``tokens`` tokens from every limit, or nothing if any refuses."""
        return self.take_now(LimitPlan(limits), tokens)

    async def take(self, plan: LimitPlan, tokens: int) -> Decision:
        """``acquire`` on limits planned once (``LimitPlan``)."""
        return self.take_now(plan, tokens)

    def take_now(self, plan: LimitPlan, tokens: int) -> Decision:
        """``take``, without awaiting anything."""
        _checked(tokens)
        now = self._clock()
        tats = self._tats
        ends = [max(tats.get(b.name, now), now) + (tokens if b.per_token else 1) * b.interval
                for b in plan.buckets]
        if not all(end - now <= PERIOD + EPSILON for end in ends):
            starts = [max(tats.get(b.name, now), now) - now for b in plan.buckets]
            return _refused(plan, starts, tokens)
        for bucket, end in zip(plan.buckets, ends, strict=True):
            tats[bucket.name] = end
        if len(tats) >= self._prune_at:
            self._prune(now)
        return _allowed(plan, [end - now for end in ends], tokens)

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Replace the reserved tokens with ``used_tokens``: give back the excess or charge the rest."""
        self.settle_now(reservation, used_tokens)

    def settle_now(self, reservation: Reservation, used_tokens: int) -> None:
        """``settle``, without awaiting anything."""
        delta = used_tokens - reservation.tokens
        if delta == 0:
            return
        now = self._clock()
        tats = self._tats
        for name, interval in reservation.buckets:
            tat = max(tats.get(name, now), now) + delta * interval
            if tat > now:
                tats[name] = tat
            else:
                tats.pop(name, None)

    def _prune(self, now: float) -> None:
        # Full buckets hold no information; dropping them when the table doubles keeps memory
        # bounded by the active buckets at amortized O(1) per request.
        for name in [name for name, tat in self._tats.items() if tat <= now]:
            del self._tats[name]
        self._prune_at = max(1024, 2 * len(self._tats))


# KEYS: the buckets. ARGV[1]: now in seconds ('' = Redis server time), ARGV[2]: the period,
# then per bucket i: ARGV[1 + 2i] emission interval, ARGV[2 + 2i] cost.
# Returns {allowed, now, tat_i - now ...} (after the step if allowed, before it if refused).
_ACQUIRE = LuaScript("""
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local period = tonumber(ARGV[2])
local starts, ends = {}, {}
local allowed = 1
for i = 1, #KEYS do
  local interval = tonumber(ARGV[1 + 2 * i])
  local cost = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  starts[i] = tat
  ends[i] = tat + cost * interval
  if ends[i] - now > period + 1e-6 then allowed = 0 end
end
local out = {allowed, string.format('%.6f', now)}
for i = 1, #KEYS do
  if allowed == 1 then
    if ends[i] > now then
      local ttl = math.ceil((ends[i] - now) * 1000) + 1000
      redis.call('SET', KEYS[i], string.format('%.6f', ends[i]), 'PX', ttl)
    end
    out[#out + 1] = string.format('%.6f', ends[i] - now)
  else
    out[#out + 1] = string.format('%.6f', starts[i] - now)
  end
end
return out
""")

# KEYS: the token buckets. ARGV[1]: now ('' = server time), then per bucket i: ARGV[2i] emission
# interval, ARGV[2i + 1] tokens to add (negative gives back).
_SETTLE = LuaScript("""
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local delta = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tat = tat + delta * interval
  if tat > now then
    redis.call('SET', KEYS[i], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
  else
    redis.call('DEL', KEYS[i])
  end
end
return 1
""")


class RedisLimiter:
    """GCRA buckets in Redis, shared by every gateway replica: each operation is one Lua script
    (EVALSHA), so check-and-take is atomic across processes. Time is Redis's own clock unless a
    ``clock`` is given (then every replica must share it)."""

    def __init__(
        self, client: Redis, *, prefix: str = "switchgear:limit:", clock: Callable[[], float] | None = None
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock

    def _now(self) -> str:
        return "" if self._clock is None else f"{self._clock():.6f}"

    async def acquire(self, limits: Sequence[Limit], tokens: int) -> Decision:
        """Take one request and ``tokens`` tokens from every limit, or nothing if any refuses.

        Raises ``StateUnavailable`` (503) if Redis cannot be reached.
        """
        return await self.take(LimitPlan(limits), tokens)

    async def take(self, plan: LimitPlan, tokens: int) -> Decision:
        """``acquire`` on limits planned once (``LimitPlan``); one script run."""
        _checked(tokens)
        buckets = plan.buckets
        if not buckets:
            return _allowed(plan, (), tokens)
        args: list[str | float | int] = [self._now(), repr(PERIOD)]
        for bucket in buckets:
            args += [repr(bucket.interval), tokens if bucket.per_token else 1]
        reply = await _ACQUIRE(self._client, [self._prefix + b.name for b in buckets], args)
        leads = [max(0.0, float(text(value))) for value in reply[2:]]
        if int(reply[0]) == 1:
            return _allowed(plan, leads, tokens)
        return _refused(plan, leads, tokens)

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Replace the reserved tokens with ``used_tokens``: give back the excess or charge the rest.

        Raises ``StateUnavailable`` (503) if Redis cannot be reached.
        """
        delta = used_tokens - reservation.tokens
        if delta == 0 or not reservation.buckets:
            return
        args: list[str | float | int] = [self._now()]
        for _, interval in reservation.buckets:
            args += [repr(interval), delta]
        await _SETTLE(self._client, [self._prefix + name for name, _ in reservation.buckets], args)
