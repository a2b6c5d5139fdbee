"""Rate limits: RPM and TPM (reserve and settle), all-or-nothing over several limit keys, the
x-ratelimit headers, Retry-After; in-process and against a real Redis, with two OS processes
sharing one Redis, and through a Redis outage and its recovery."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from switchgear.admission.limits import (
    PERIOD,
    Decision,
    InProcessLimiter,
    Limit,
    Limiter,
    LimitPlan,
    RateLimitExceeded,
    RedisLimiter,
    duration,
)
from switchgear.errors import AuthenticationFailed, Overloaded
from switchgear.store.redis import StateUnavailable, connect_redis

from servers import OwnRedis

#: Upper bound, in seconds, on any single wait in these tests.
WAIT = 30.0


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds





@pytest.fixture(params=["in-process", "redis"])
def limiter_and_clock(
    request: pytest.FixtureRequest, redis_client: Redis, prefix: str
) -> tuple[Limiter, FakeClock]:
    """Each limiter, driven by a clock the test moves."""
    clock = FakeClock()
    if request.param == "in-process":
        return InProcessLimiter(clock), clock
    return RedisLimiter(redis_client, prefix=prefix, clock=clock), clock


def status_of(decision: Decision, key: str, dimension: str) -> tuple[int, float]:
    """(remaining, reset_after) of one bucket in a decision."""
    for status in decision.statuses:
        if status.key == key and status.dimension == dimension:
            return status.remaining, status.reset_after
    raise AssertionError(f"no {dimension} status for {key}")


async def test_rpm_limit_holds_then_refills(limiter_and_clock: tuple[Limiter, FakeClock]) -> None:
    limiter, clock = limiter_and_clock
    limits = [Limit("key:k1", rpm=5)]
    admitted = [(await limiter.acquire(limits, 0)).allowed for _ in range(8)]
    assert admitted == [True] * 5 + [False] * 3

    refused = await limiter.acquire(limits, 0)
    assert not refused.allowed
    assert refused.refused_by == ("key:k1",)
    # One request frees up every 60 / 5 = 12 seconds.
    assert refused.retry_after == pytest.approx(12.0, abs=0.01)

    clock.advance(refused.retry_after)
    assert (await limiter.acquire(limits, 0)).allowed
    assert not (await limiter.acquire(limits, 0)).allowed

    clock.advance(PERIOD)
    again = [(await limiter.acquire(limits, 0)).allowed for _ in range(6)]
    assert again == [True] * 5 + [False]


async def test_tpm_over_reservation_is_given_back(limiter_and_clock: tuple[Limiter, FakeClock]) -> None:
    limiter, _ = limiter_and_clock
    limits = [Limit("tenant:acme", tpm=1000)]
    first = await limiter.acquire(limits, 800)  # prompt estimate + max_tokens
    assert first.allowed
    assert first.reservation.tokens == 800
    assert status_of(first, "tenant:acme", "tokens")[0] == 200
    assert not (await limiter.acquire(limits, 300)).allowed

    await limiter.settle(first.reservation, 100)  # it used only 100

    second = await limiter.acquire(limits, 300)
    assert second.allowed
    assert status_of(second, "tenant:acme", "tokens")[0] == 1000 - 100 - 300


async def test_tpm_under_reservation_is_charged(limiter_and_clock: tuple[Limiter, FakeClock]) -> None:
    limiter, clock = limiter_and_clock
    limits = [Limit("tenant:acme", tpm=1000)]
    first = await limiter.acquire(limits, 100)
    await limiter.settle(first.reservation, 700)  # it used more than it reserved

    refused = await limiter.acquire(limits, 400)
    assert not refused.allowed
    assert status_of(refused, "tenant:acme", "tokens")[0] == 300
    # 100 tokens are missing; at 1000 a minute they come back in 6 seconds.
    assert refused.retry_after == pytest.approx(6.0, abs=0.01)
    assert (await limiter.acquire(limits, 300)).allowed

    # A charge beyond the whole limit leaves the bucket in debt until it drains.
    big = await limiter.acquire([Limit("key:k2", tpm=1000)], 10)
    await limiter.settle(big.reservation, 1500)
    in_debt = await limiter.acquire([Limit("key:k2", tpm=1000)], 1)
    assert not in_debt.allowed
    assert status_of(in_debt, "key:k2", "tokens")[0] == 0
    assert in_debt.retry_after == pytest.approx(30.0 + 0.06, abs=0.01)
    clock.advance(in_debt.retry_after)
    assert (await limiter.acquire([Limit("key:k2", tpm=1000)], 1)).allowed


async def test_settle_with_exact_usage_changes_nothing(limiter_and_clock: tuple[Limiter, FakeClock]) -> None:
    limiter, _ = limiter_and_clock
    limits = [Limit("key:k1", tpm=100)]
    first = await limiter.acquire(limits, 40)
    await limiter.settle(first.reservation, 40)
    assert status_of(await limiter.acquire(limits, 0), "key:k1", "tokens")[0] == 60


async def test_all_limits_or_none(limiter_and_clock: tuple[Limiter, FakeClock]) -> None:
    limiter, _ = limiter_and_clock
    key, tenant, model = Limit("key:k1", rpm=10, tpm=10_000), Limit("tenant:acme", rpm=2), Limit(
        "model:big", tpm=500
    )
    limits = [key, tenant, model]
    assert (await limiter.acquire(limits, 100)).allowed
    assert (await limiter.acquire(limits, 100)).allowed

    # The tenant's RPM refuses: neither the key's requests nor anyone's tokens are taken.
    refused = await limiter.acquire(limits, 100)
    assert not refused.allowed
    assert refused.refused_by == ("tenant:acme",)
    assert refused.reservation.tokens == 0
    probe = await limiter.acquire([key, model], 0)
    assert status_of(probe, "key:k1", "requests")[0] == 10 - 3
    assert status_of(probe, "key:k1", "tokens")[0] == 10_000 - 200
    assert status_of(probe, "model:big", "tokens")[0] == 500 - 200

    # The model's TPM refuses: the key's request count is untouched.
    refused = await limiter.acquire([key, model], 400)
    assert not refused.allowed
    assert refused.refused_by == ("model:big",)
    probe = await limiter.acquire([key], 0)
    assert status_of(probe, "key:k1", "requests")[0] == 10 - 4
    assert status_of(probe, "key:k1", "tokens")[0] == 10_000 - 200


async def test_headers_name_the_strictest_limit(limiter_and_clock: tuple[Limiter, FakeClock]) -> None:
    limiter, _ = limiter_and_clock
    limits = [Limit("key:k1", rpm=60, tpm=1000), Limit("tenant:acme", rpm=4, tpm=100_000)]
    decision = await limiter.acquire(limits, 250)
    assert decision.allowed
    headers = dict(decision.headers())
    assert headers == {
        b"x-ratelimit-limit-requests": b"4",
        b"x-ratelimit-remaining-requests": b"3",
        b"x-ratelimit-reset-requests": b"15s",
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"750",
        b"x-ratelimit-reset-tokens": b"15s",
    }
    for _ in range(3):
        await limiter.acquire(limits, 0)
    refused = await limiter.acquire(limits, 0)
    assert not refused.allowed
    assert dict(refused.headers())[b"x-ratelimit-remaining-requests"] == b"0"
    assert dict(refused.headers())[b"x-ratelimit-reset-requests"] == b"1m0s"

    error = refused.error()
    assert isinstance(error, RateLimitExceeded)
    assert error.status == 429
    assert error.body()["error"]["type"] == "rate_limit_error"
    assert error.retry_after == pytest.approx(15.0, abs=0.01)
    assert error.headers == refused.headers()


async def test_request_larger_than_the_limit_is_refused_without_consuming(
    limiter_and_clock: tuple[Limiter, FakeClock],
) -> None:
    limiter, _ = limiter_and_clock
    limits = [Limit("key:k1", rpm=10, tpm=100)]
    refused = await limiter.acquire(limits, 101)
    assert not refused.allowed
    assert refused.too_large
    assert refused.error().code == "request_too_large"
    assert refused.retry_after == PERIOD
    probe = await limiter.acquire(limits, 0)
    assert status_of(probe, "key:k1", "requests")[0] == 9
    assert status_of(probe, "key:k1", "tokens")[0] == 100


async def test_limits_planned_once_decide_as_the_limits_themselves(
    limiter_and_clock: tuple[Limiter, FakeClock],
) -> None:
    """``take`` on a ``LimitPlan`` (made once per key, tenant and model) takes from the same
    buckets as ``acquire``, refuses at the same point and gives the same headers."""
    limiter, _ = limiter_and_clock
    limits = [Limit("key:k1", rpm=3, tpm=1000), Limit("key:k1", rpm=99), Limit("model:m", tpm=500)]
    plan = LimitPlan(limits)
    assert [bucket.name for bucket in plan.buckets] == ["key:k1:rpm", "key:k1:tpm", "model:m:tpm"]
    planned = [await limiter.take(plan, 100), await limiter.acquire(limits, 100),
               await limiter.take(plan, 100), await limiter.acquire(limits, 100)]
    assert [decision.allowed for decision in planned] == [True, True, True, False]
    assert [dict(decision.headers())[b"x-ratelimit-remaining-requests"]
            for decision in planned] == [b"2", b"1", b"0", b"0"]
    assert [dict(decision.headers())[b"x-ratelimit-remaining-tokens"]
            for decision in planned] == [b"400", b"300", b"200", b"200"]
    assert planned[0].reservation.buckets == planned[1].reservation.buckets
    assert planned[3].refused_by == ("key:k1",)
    with pytest.raises(ValueError, match="non-negative"):
        await limiter.take(plan, -1)


async def test_no_limits_admit_everything(limiter_and_clock: tuple[Limiter, FakeClock]) -> None:
    limiter, _ = limiter_and_clock
    decision = await limiter.acquire([], 10**6)
    assert decision.allowed
    assert decision.headers() == []


def test_limit_values_are_validated() -> None:
    with pytest.raises(ValueError, match="rpm"):
        Limit("key:k1", rpm=0)


def test_durations_read_like_openai() -> None:
    assert duration(0.02) == "20ms"
    assert duration(1.5) == "1.5s"
    assert duration(360.0) == "6m0s"


async def test_redis_limiter_on_server_time(redis_client: Redis, prefix: str) -> None:
    limiter = RedisLimiter(redis_client, prefix=prefix)  # Redis's own clock
    limits = [Limit("key:k1", rpm=3)]
    admitted = [(await limiter.acquire(limits, 0)).allowed for _ in range(5)]
    assert admitted == [True, True, True, False, False]
    refused = await limiter.acquire(limits, 0)
    assert 0 < refused.retry_after <= 20.0


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from switchgear.admission.limits import Limit, RedisLimiter
    from switchgear.store.redis import connect_redis

    async def main(prefix, limit, attempts):
        client = connect_redis("redis://127.0.0.1:6379/0")
        # A shared frozen clock: the count then depends only on atomicity, not on timing.
        limiter = RedisLimiter(client, prefix=prefix, clock=lambda: 1_000_000.0)
        limits = [Limit("tenant:shared", rpm=limit)]
        async def one():
            return (await limiter.acquire(limits, 0)).allowed
        await client.ping()  # connected and ready
        print("ready", flush=True)
        sys.stdin.readline()  # both start together
        results = []
        for _ in range(attempts // 20):
            results += await asyncio.gather(*(one() for _ in range(20)))
        await client.aclose()
        print(sum(results))

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)


async def test_two_processes_sharing_redis_admit_n_not_2n(prefix: str) -> None:
    limit, attempts = 50, 200
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, prefix, str(limit), str(attempts),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert await asyncio.wait_for(worker.stdout.readline(), WAIT) == b"ready\n"
    outputs = await asyncio.wait_for(asyncio.gather(*(w.communicate(b"go\n") for w in workers)), WAIT)
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
    counts = [int(out.decode().strip()) for out, _ in outputs]
    # Each alone would admit the whole limit (2N together if they did not share it).
    assert sum(counts) == limit


async def test_redis_outage_is_503_and_recovers_by_itself(own_redis: OwnRedis) -> None:
    client = connect_redis(f"redis://127.0.0.1:{own_redis.port}/0")
    limiter = RedisLimiter(client, prefix="sgtest:")
    limits = [Limit("key:k1", rpm=100, tpm=10_000)]
    try:
        decision = await limiter.acquire(limits, 10)
        assert decision.allowed

        await own_redis.stop()
        with pytest.raises(StateUnavailable) as caught:
            await limiter.acquire(limits, 10)
        assert isinstance(caught.value, Overloaded)
        assert not isinstance(caught.value, AuthenticationFailed)
        assert caught.value.status == 503
        assert caught.value.retry_after is not None and caught.value.retry_after > 0
        assert str(own_redis.port) not in caught.value.message
        with pytest.raises(StateUnavailable):
            await limiter.settle(decision.reservation, 5)

        # Redis returns (empty: its script cache too); the same limiter works again.
        await own_redis.start()
        again = await limiter.acquire(limits, 10)
        assert again.allowed
        await limiter.settle(again.reservation, 5)
    finally:
        await client.aclose()


async def test_unreachable_redis_is_503(refused_url: Callable[..., str]) -> None:
    client = connect_redis(refused_url("redis") + "/0")
    try:
        with pytest.raises(StateUnavailable):
            await RedisLimiter(client).acquire([Limit("key:k1", rpm=1)], 0)
    finally:
        await client.aclose()
