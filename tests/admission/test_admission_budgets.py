"""Spending budgets: hard stop with Retry-After until the UTC period ends, one soft and one hard
alert per period, a new period starting at zero; in-process and against a real Redis, with two OS
processes sharing one Redis, and a Redis outage as a 503."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from switchgear.admission.budgets import (
    Budget,
    BudgetAlert,
    BudgetExceeded,
    Budgets,
    InProcessBudgets,
    Period,
    RedisBudgets,
    period_bounds,
)
from switchgear.store.redis import StateUnavailable, connect_redis

#: Upper bound, in seconds, on any single wait in these tests.
WAIT = 30.0
#: The tests' clock starts at noon UTC on the 10th of next month: in the future, so Redis keeps
#: counters that expire at the end of their period, and the next day is in the same month.
TOMORROW = (datetime.now(UTC).replace(day=28) + timedelta(days=4)).replace(
    day=10, hour=12, minute=0, second=0, microsecond=0
)
NOON = TOMORROW.timestamp()
DAY_ID = TOMORROW.strftime("%Y-%m-%d")
NEXT_MONTH = (TOMORROW.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Bench:
    """One budgets implementation, its clock and the alerts it reported."""

    def __init__(self, kind: str, client: Redis, prefix: str) -> None:
        self.clock = FakeClock()
        self.alerts: list[BudgetAlert] = []
        self.budgets: Budgets
        if kind == "in-process":
            self.budgets = InProcessBudgets(on_alert=self.alerts.append, clock=self.clock)
        else:
            self.budgets = RedisBudgets(client, prefix=prefix, on_alert=self.alerts.append, clock=self.clock)




@pytest.fixture(params=["in-process", "redis"])
def bench(request: pytest.FixtureRequest, redis_client: Redis, prefix: str) -> Bench:
    """Each implementation on a clock the test moves."""
    return Bench(request.param, redis_client, prefix)


def test_periods_are_utc_days_and_months() -> None:
    noon = datetime(2024, 5, 15, 12, 0, tzinfo=UTC).timestamp()
    assert period_bounds(Period.DAY, noon) == ("2024-05-15", noon + 12 * 3600)
    month_end = datetime(2024, 6, 1, tzinfo=UTC).timestamp()
    assert period_bounds(Period.MONTH, noon) == ("2024-05", month_end)
    december = datetime(2024, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    assert period_bounds(Period.MONTH, december) == ("2024-12", datetime(2025, 1, 1, tzinfo=UTC).timestamp())


async def test_daily_hard_stop_until_midnight_utc(bench: Bench) -> None:
    budgets = [Budget("tenant:acme", daily=1.0)]
    await bench.budgets.check(budgets)
    await bench.budgets.add(budgets, 0.6)
    await bench.budgets.check(budgets)  # under the limit: still admitted
    await bench.budgets.add(budgets, 0.5)

    with pytest.raises(BudgetExceeded) as caught:
        await bench.budgets.check(budgets)
    error = caught.value
    assert error.status == 429
    assert error.body()["error"]["code"] == "insufficient_quota"
    assert error.body()["error"]["type"] == "insufficient_quota"
    assert error.retry_after == pytest.approx(12 * 3600)  # until 00:00 UTC
    assert "tenant:acme" in error.message

    # A new day starts at zero; the month keeps counting.
    bench.clock.now = NOON + 12 * 3600
    await bench.budgets.check(budgets)
    assert await bench.budgets.spent(budgets[0]) == {
        Period.DAY: 0.0,
        Period.MONTH: pytest.approx(1.1),
    }


async def test_monthly_hard_stop_until_the_month_ends(bench: Bench) -> None:
    budgets = [Budget("tenant:acme", daily=100.0, monthly=2.0)]
    await bench.budgets.add(budgets, 2.0)
    with pytest.raises(BudgetExceeded) as caught:
        await bench.budgets.check(budgets)
    assert caught.value.retry_after == pytest.approx(NEXT_MONTH.timestamp() - NOON)

    bench.clock.now = NEXT_MONTH.timestamp() + 1
    await bench.budgets.check(budgets)


async def test_any_exhausted_scope_refuses(bench: Bench) -> None:
    tenant, key = Budget("tenant:acme", daily=10.0), Budget("key:k1", daily=1.0)
    await bench.budgets.add([tenant, key], 1.0)
    await bench.budgets.check([tenant])
    with pytest.raises(BudgetExceeded, match="key:k1"):
        await bench.budgets.check([tenant, key])
    # Another tenant's budget is its own.
    await bench.budgets.check([Budget("tenant:other", daily=1.0)])


async def test_soft_alert_fires_once_per_period(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    budgets = [Budget("tenant:acme", daily=10.0, soft=0.8)]
    with caplog.at_level(logging.WARNING, logger="switchgear.admission.budgets"):
        assert await bench.budgets.add(budgets, 5.0) == []
        soft = await bench.budgets.add(budgets, 3.5)  # 8.5 >= 8.0
        assert [(a.level, a.period, a.period_id) for a in soft] == [("soft", Period.DAY, DAY_ID)]
        assert soft[0].spent == pytest.approx(8.5)
        assert soft[0].limit == 10.0
        assert await bench.budgets.add(budgets, 0.1) == []
        hard = await bench.budgets.add(budgets, 2.0)
        assert [a.level for a in hard] == ["hard"]
        assert await bench.budgets.add(budgets, 1.0) == []
    assert [a.level for a in bench.alerts] == ["soft", "hard"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "tenant:acme" in warnings[0].getMessage()

    # The next day it may fire again, once.
    bench.clock.now = NOON + 24 * 3600
    assert [a.level for a in await bench.budgets.add(budgets, 9.0)] == ["soft"]
    assert await bench.budgets.add(budgets, 0.1) == []


async def test_one_cost_can_cross_both_limits(bench: Bench) -> None:
    budgets = [Budget("key:k1", monthly=1.0, soft=0.5)]
    alerts = await bench.budgets.add(budgets, 5.0)
    assert [(a.level, a.period) for a in alerts] == [("soft", Period.MONTH), ("hard", Period.MONTH)]


async def test_a_failing_alert_callback_does_not_fail_the_request(redis_client: Redis, prefix: str) -> None:
    def broken(alert: BudgetAlert) -> None:
        raise RuntimeError("pager down")

    implementations: list[Budgets] = [
        InProcessBudgets(on_alert=broken),
        RedisBudgets(redis_client, prefix=prefix, on_alert=broken),
    ]
    for budgets in implementations:
        alerts = await budgets.add([Budget("tenant:acme", daily=1.0)], 1.0)
        assert [a.level for a in alerts] == ["soft", "hard"]


def test_budget_values_are_validated() -> None:
    with pytest.raises(ValueError, match="soft"):
        Budget("tenant:acme", daily=1.0, soft=1.5)
    with pytest.raises(ValueError, match="daily"):
        Budget("tenant:acme", daily=-1.0)


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from switchgear.admission.budgets import Budget, BudgetExceeded, RedisBudgets
    from switchgear.store.redis import connect_redis

    async def main(prefix):
        client = connect_redis("redis://127.0.0.1:6379/0")
        budgets = RedisBudgets(client, prefix=prefix)
        scope = [Budget("tenant:shared", daily=5.0, soft=0.5)]
        await client.ping()
        print("ready", flush=True)
        sys.stdin.readline()
        alerts = 0
        for _ in range(100):
            alerts += len(await budgets.add(scope, 0.05))
        refused = False
        try:
            await budgets.check(scope)
        except BudgetExceeded:
            refused = True
        await client.aclose()
        print(alerts, refused)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_two_processes_share_the_counters_and_alert_once(redis_client: Redis, prefix: str) -> None:
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, prefix,
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
    results = [out.decode().split() for out, _ in outputs]
    # 200 x 0.05 = 10.0 spent together, past the daily 5.0: one soft and one hard alert in all,
    # and the last check refuses in the process that finished last at least.
    assert sum(int(alerts) for alerts, _ in results) == 2
    assert "True" in [refused for _, refused in results]
    spent = await RedisBudgets(redis_client, prefix=prefix).spent(Budget("tenant:shared"))
    assert spent[Period.DAY] == pytest.approx(10.0)


async def test_unreachable_redis_is_503_not_401(refused_url: Callable[..., str]) -> None:
    client = connect_redis(refused_url("redis") + "/0")
    budgets = RedisBudgets(client)
    try:
        with pytest.raises(StateUnavailable) as caught:
            await budgets.check([Budget("tenant:acme", daily=1.0)])
        assert caught.value.status == 503
        with pytest.raises(StateUnavailable):
            await budgets.add([Budget("tenant:acme", daily=1.0)], 0.1)
    finally:
        await client.aclose()


def test_period_bounds_agree_with_the_calendar() -> None:
    rng = random.Random(5)
    for now in [0.0, 951782400.0, 4102444799.0, *(rng.uniform(0, 4e9) for _ in range(5000))]:
        moment = datetime.fromtimestamp(now, UTC)
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        following = (month.replace(year=month.year + 1, month=1) if month.month == 12
                     else month.replace(month=month.month + 1))
        assert period_bounds(Period.DAY, now) == (day.strftime("%Y-%m-%d"), day.timestamp() + 86400)
        assert period_bounds(Period.MONTH, now) == (month.strftime("%Y-%m"), following.timestamp())
