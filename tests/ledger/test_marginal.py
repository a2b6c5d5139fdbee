"""What doubling the traffic adds: nothing within headroom, a step of whole instances when the
doubled peak needs more, the API bill again for per-token deployments; idle cost and
utilization of self-hosted instance time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ledger_support import at, ledger_config, record, write

from switchgear.config import Capacity, Price
from switchgear.ledger.marginal import InstanceTime, doubling, instances_needed
from switchgear.ledger.report import MAX_POINTS, chart_bucket, cost_report
from switchgear.ledger.rollup import DeploymentUse
from switchgear.store import open_store
from switchgear.store.queries import Period

DAY = 86400.0
BOX = Price(instance_per_hour=4.0, instances=2, concurrency=4)


def use(requests_per_s: float, tokens_per_s: float = 0.0, token_cost: float = 0.0
        ) -> DeploymentUse:
    return DeploymentUse("local", "box", 100, 1000, 50.0, token_cost, 0.0, requests_per_s,
                         tokens_per_s)


def test_headroom_adds_nothing() -> None:
    estimate = doubling(BOX, Capacity(requests_per_s=10), use(requests_per_s=9), DAY)
    assert estimate.instances_needed == 2 and estimate.added_cost == 0
    assert estimate.reason.startswith("headroom")


def test_a_step_when_another_instance_is_needed() -> None:
    estimate = doubling(BOX, Capacity(requests_per_s=10), use(requests_per_s=11), DAY)
    assert estimate.instances_needed == 3
    assert estimate.added_cost == pytest.approx(1 * 4.0 * 24)  # one more instance for the day
    assert estimate.reason.startswith("a step")
    by_tokens = doubling(BOX, Capacity(requests_per_s=100, tokens_per_s=1000),
                         use(requests_per_s=1, tokens_per_s=2600), DAY)
    assert by_tokens.instances_needed == 6 and by_tokens.added_cost == pytest.approx(4 * 96)


def test_a_per_token_deployment_doubles_its_bill() -> None:
    api = Price(input_per_million=3, output_per_million=15)
    estimate = doubling(api, None, use(requests_per_s=50, token_cost=12.5), DAY)
    assert estimate.added_cost == 12.5 and estimate.reason.startswith("per-token")


def test_unknown_capacity_is_said_not_guessed() -> None:
    estimate = doubling(BOX, None, use(requests_per_s=1), DAY)
    assert estimate.added_cost is None and "capacity unknown" in estimate.reason


def test_instances_needed_rounds_up_but_not_float_noise() -> None:
    assert instances_needed(Capacity(requests_per_s=0.5), 1.0, 0) == 2
    assert instances_needed(Capacity(requests_per_s=0.1), 0.30000000000000004, 0) == 3
    assert instances_needed(Capacity(requests_per_s=1), 0.0, 0) == 1


def test_instance_time_is_busy_over_concurrency_over_wall_clock() -> None:
    # 2 instances x 4 slots for an hour; 7,200 busy request-seconds = a quarter of the capacity
    time = InstanceTime.of(BOX, busy_s=7200, instance_cost=7200 / 3600 * 4.0 / 4, seconds=3600)
    assert time.cost == 8.0 and time.utilization == pytest.approx(0.25)
    assert time.idle_cost == pytest.approx(6.0)


def test_the_report_takes_load_from_the_records(store_url: str) -> None:
    config = ledger_config(store_url, capacity={"requests_per_s": 0.01})
    # one request a minute for 6 minutes: the busiest minute has 1/60 per second; doubled:
    # 1/30, 4 instances of 0.01 needed; over the busiest hour (6/3600, doubled 1/300) one
    records = [record(config, n, f"2026-03-02T10:{n:02d}:00", "acme", "local", busy_s=60)
               for n in range(6)]
    records += [record(config, 10, "2026-03-02T15:00:00", "acme", "chat")]
    write(store_url, records)

    async def run(grain_s: int) -> dict[str, Any]:
        store = open_store(store_url)
        await store.open()
        try:
            return await cost_report(store, config, Period(at("2026-03-02T00:00:00"),
                                                           at("2026-03-03T00:00:00")),
                                     "model", "tenant", peak_grain_s=grain_s)
        finally:
            await store.close()

    hourly = {d["deployment"]: d for d in asyncio.run(run(3600))["doubling"]}
    assert hourly["box"]["instances_needed"] == 1 and hourly["box"]["added_cost"] == 0
    report = asyncio.run(run(60))
    assert report["peak"]["grain_s"] == 60
    doublings = {d["deployment"]: d for d in report["doubling"]}
    assert doublings["box"]["instances_needed"] == 4
    assert doublings["box"]["added_cost"] == pytest.approx(2 * 4.0 * 24)
    assert doublings["api"]["added_cost"] == pytest.approx(records[-1].cost)
    box = next(d for d in report["deployments"] if d["deployment"] == "box")
    assert box["utilization"] == pytest.approx(6 * 60 / 4 / (2 * DAY))
    assert box["idle_cost"] == pytest.approx(2 * 24 * 4.0 - 6 * 60 / 3600 * 4.0 / 4)


def test_long_periods_are_charted_in_at_most_400_points() -> None:
    assert chart_bucket(Period(0, 2 * DAY)) == 3600
    assert chart_bucket(Period(0, 30 * DAY)) == DAY
    year = Period(0, 3 * 365 * DAY)
    assert year.seconds / chart_bucket(year) <= MAX_POINTS
