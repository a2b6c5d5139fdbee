"""The retry budget: retries at most a share of requests, refilled over time at a minimum rate."""

from __future__ import annotations

import pytest
from routing_support import Clock

from switchgear.config import RetryConfig
from switchgear.routing import budget as budget_module
from switchgear.routing.budget import MIN_RESERVE, RetryBudget


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A hand-moved clock in place of the budget module's ``time``."""
    fake = Clock()
    monkeypatch.setattr(budget_module, "time", fake)
    return fake


def spend(budget: RetryBudget, most: int = 1000) -> int:
    """Take retries until the budget refuses one (at most ``most``); how many it granted."""
    for granted in range(most):
        if not budget.try_retry():
            return granted
    return most


@pytest.mark.parametrize("requests", [10, 100, 1000, 10_000])
def test_retries_of_a_failing_burst_stay_within_the_ratio(clock: Clock, requests: int) -> None:
    budget = RetryBudget(RetryConfig(budget_ratio=0.2, budget_min_per_second=0, max_attempts=3))
    granted = 0
    for _ in range(requests):
        budget.on_request()
        for _ in range(2):  # every attempt fails: each request wants two retries
            granted += budget.try_retry()
        budget.on_routed()
    assert granted <= 0.2 * requests + MIN_RESERVE
    assert granted >= min(0.2 * requests, MIN_RESERVE)  # the budget does let some through
    assert budget.requests == requests
    assert budget.retries == granted
    assert budget.refused == 2 * requests - granted


def test_the_reserve_absorbs_a_short_burst(clock: Clock) -> None:
    budget = RetryBudget(RetryConfig(budget_ratio=0.2, budget_min_per_second=0))
    assert spend(budget) == MIN_RESERVE


def test_requests_earn_retries(clock: Clock) -> None:
    # 0.25 is exact in binary; with 0.2 the sum of 50 shares is 9.999... and grants 9.
    budget = RetryBudget(RetryConfig(budget_ratio=0.25, budget_min_per_second=0))
    spend(budget)
    for _ in range(40):
        budget.on_request()
    assert spend(budget) == 10  # 40 requests x 0.25


def test_time_refills_at_the_minimum_rate(clock: Clock) -> None:
    budget = RetryBudget(RetryConfig(budget_ratio=0, budget_min_per_second=5))
    assert spend(budget) == MIN_RESERVE
    assert not budget.try_retry()
    clock.now += 1.0
    assert spend(budget) == 5
    clock.now += 0.1
    assert not budget.try_retry()  # half a retry so far
    clock.now += 0.1
    assert budget.try_retry()


def test_refill_is_capped_at_the_reserve(clock: Clock) -> None:
    budget = RetryBudget(RetryConfig(budget_ratio=0.2, budget_min_per_second=5))
    spend(budget)
    clock.now += 3600
    for _ in range(1000):
        budget.on_request()
        budget.on_routed()
    assert spend(budget) == MIN_RESERVE


def test_a_high_minimum_rate_holds_a_second_of_it_in_reserve(clock: Clock) -> None:
    budget = RetryBudget(RetryConfig(budget_ratio=0.2, budget_min_per_second=50))
    assert spend(budget) == 50


def test_a_zero_budget_refuses_every_retry(clock: Clock) -> None:
    budget = RetryBudget(RetryConfig(budget_ratio=0, budget_min_per_second=0))
    spend(budget)
    for _ in range(100):
        budget.on_request()
    clock.now += 60
    assert not budget.try_retry()


def route(budget: RetryBudget, requests: int, concurrency: int) -> None:
    """``requests`` requests routed with ``concurrency`` of them in routing at once, all served;
    ``concurrency`` are left in routing."""
    for _ in range(concurrency):
        budget.on_request()
    for _ in range(requests - concurrency):
        budget.on_routed()
        budget.on_request()


def test_a_deployment_dying_under_load_has_every_request_it_held_retried(clock: Clock) -> None:
    budget = RetryBudget(RetryConfig(budget_ratio=0.25, budget_min_per_second=0))
    route(budget, 500, concurrency=32)
    # all 32 fail at once, as when their deployment is killed: each can be retried once
    assert budget.capacity == 32 and spend(budget) == 32
    # and then retries come only as requests earn them
    route(budget, 100, concurrency=32)
    assert spend(budget) == 25  # 100 requests x 0.25 (exact in binary)


def test_the_concurrency_reserve_shrinks_with_the_load(clock: Clock) -> None:
    budget = RetryBudget(RetryConfig(budget_ratio=0.2, budget_min_per_second=0))
    route(budget, 500, concurrency=32)
    for _ in range(32):
        budget.on_routed()
    budget.on_request()
    assert budget.routing == 1 and spend(budget) == MIN_RESERVE
