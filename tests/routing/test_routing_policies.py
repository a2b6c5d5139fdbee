"""Routing policies: the order in which an alias's available deployments are tried."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from routing_support import Clock, make_deployment

from switchgear.config import DeploymentConfig, ModelConfig
from switchgear.routing.deployment import Deployment
from switchgear.routing.policies import (
    CostAware,
    LatencyAware,
    LeastOutstanding,
    Ordered,
    Weighted,
    policy_for,
)

T0 = 1000.0


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The policies read latencies as of T0 (a stand-in for the time module: no idle decay)."""
    clock = Clock(T0)
    monkeypatch.setattr("switchgear.routing.policies.time", clock)
    return clock
DRAWS = 10_000


def with_latency(deployment: Deployment, seconds: float) -> Deployment:
    """``deployment`` after one answer that took ``seconds`` (to first token and in total)."""
    deployment.health.succeeded(seconds, seconds, T0)
    return deployment


def firsts(order: list[Deployment], counts: Counter[str]) -> None:
    """Count the first pick of ``order`` in ``counts``."""
    counts[order[0].name] += 1


def test_weighted_honours_the_weights() -> None:
    deployments = [make_deployment("a", weight=1), make_deployment("b", weight=2),
                   make_deployment("c", weight=7)]
    rng, policy, counts = random.Random(7), Weighted(), Counter[str]()
    for _ in range(DRAWS):
        firsts(policy.order(deployments, rng), counts)
    assert counts["a"] / DRAWS == pytest.approx(0.1, abs=0.02)
    assert counts["b"] / DRAWS == pytest.approx(0.2, abs=0.02)
    assert counts["c"] / DRAWS == pytest.approx(0.7, abs=0.02)


def test_weighted_sends_little_to_a_deployment_holding_many_requests() -> None:
    # A hung deployment collects requests in flight; its weight is divided by them plus one,
    # so it gets ever less of the new traffic instead of an equal third.
    hung, a, b = (make_deployment(name) for name in ("hung", "a", "b"))
    hung.in_flight = 15
    rng, policy, counts = random.Random(3), Weighted(), Counter[str]()
    for _ in range(DRAWS):
        firsts(policy.order([hung, a, b], rng), counts)
    assert counts["hung"] / DRAWS == pytest.approx((1 / 16) / (2 + 1 / 16), abs=0.01)


def test_weighted_gives_a_slow_starting_deployment_a_tenth_at_first(frozen_clock: Clock) -> None:
    fresh, steady = make_deployment("fresh"), make_deployment("steady")
    fresh.health.check_failed(T0 - 2, "refused")
    fresh.health.check_passed(T0 - 1)
    fresh.health.admit(T0 - 1)
    fresh.health.succeeded(0.1, 0.1, T0)  # readmitted now: a tenth of its share
    rng, policy, counts = random.Random(5), Weighted(), Counter[str]()
    for _ in range(DRAWS):
        firsts(policy.order([fresh, steady], rng), counts)
    assert counts["fresh"] / DRAWS == pytest.approx(0.1 / 1.1, abs=0.01)


def test_weighted_puts_the_rest_after_the_pick_by_weight() -> None:
    deployments = [make_deployment("a", weight=1), make_deployment("b", weight=2),
                   make_deployment("c", weight=7)]
    rng = random.Random(1)
    for _ in range(100):
        order = Weighted().order(deployments, rng)
        assert sorted(d.name for d in order) == ["a", "b", "c"]
        rest = [d.config.weight for d in order[1:]]
        assert rest == sorted(rest, reverse=True)


@pytest.mark.parametrize("policy", [Weighted(), LeastOutstanding(), LatencyAware("ttft"),
                                    CostAware("ttft", 0.5), Ordered()],
                         ids=["weighted", "least_outstanding", "latency", "cost", "priority"])
def test_every_policy_handles_zero_and_one_candidates(
        policy: Weighted | LeastOutstanding | LatencyAware | CostAware | Ordered) -> None:
    only = make_deployment("only")
    assert policy.order([], random.Random(0)) == []
    assert policy.order([only], random.Random(0)) == [only]


def test_least_outstanding_prefers_the_less_loaded() -> None:
    busy, idle = make_deployment("busy"), make_deployment("idle")
    busy.in_flight = 10
    rng = random.Random(3)
    assert all(LeastOutstanding().order([busy, idle], rng)[0] is idle for _ in range(100))


def test_least_outstanding_with_three_never_picks_the_busiest_first() -> None:
    deployments = [make_deployment(name) for name in "abc"]
    for deployment, load in zip(deployments, (10, 5, 0), strict=True):
        deployment.in_flight = load
    rng, counts = random.Random(5), Counter[str]()
    for _ in range(3000):
        order = LeastOutstanding().order(deployments, rng)
        firsts(order, counts)
        assert order[1:] == sorted(order[1:], key=lambda d: d.in_flight)
    # Power of two choices: the idlest wins whenever it is one of the two (2 draws in 3)...
    assert counts["c"] / 3000 == pytest.approx(2 / 3, abs=0.04)
    # ...and the busiest never does.
    assert counts["a"] == 0


def test_least_outstanding_weighs_load_against_the_concurrency_limit() -> None:
    big = make_deployment("big", max_concurrency=100)
    small = make_deployment("small", max_concurrency=10)
    big.in_flight, small.in_flight = 20, 5  # 20% against 50% full
    assert LeastOutstanding().order([small, big], random.Random(0))[0] is big


def test_latency_aware_prefers_the_faster() -> None:
    fast, slow = with_latency(make_deployment("fast"), 0.05), with_latency(make_deployment("slow"), 0.5)
    rng = random.Random(0)
    assert all(LatencyAware("ttft").order([slow, fast], rng) == [fast, slow] for _ in range(100))


def test_latency_aware_weighs_latency_by_load() -> None:
    fast, slow = with_latency(make_deployment("fast"), 0.1), with_latency(make_deployment("slow"), 0.5)
    fast.in_flight = 9  # 0.1 s x 10 = 1.0 against 0.5 s x 1
    assert LatencyAware("ttft").order([fast, slow], random.Random(0))[0] is slow


def test_latency_aware_tries_an_unmeasured_deployment_first() -> None:
    known, new = with_latency(make_deployment("known"), 0.05), make_deployment("new")
    assert LatencyAware("ttft").order([known, new], random.Random(0))[0] is new


def test_latency_aware_reads_the_configured_signal() -> None:
    a, b = make_deployment("a"), make_deployment("b")
    a.health.succeeded(0.01, 2.0, T0)  # first token early, long answer
    b.health.succeeded(0.2, 0.3, T0)
    rng = random.Random(0)
    assert LatencyAware("ttft").order([a, b], rng)[0] is a
    assert LatencyAware("total").order([a, b], rng)[0] is b


def test_latency_aware_moves_traffic_away_from_a_ten_times_slower_deployment() -> None:
    latency = {"a": 0.05, "b": 0.05, "c": 0.5}
    deployments = [make_deployment(name) for name in latency]
    policy, rng, counts = LatencyAware("ttft"), random.Random(11), Counter[str]()
    for i in range(1000):
        first = policy.order(deployments, rng)[0]
        counts[first.name] += 1
        first.health.succeeded(latency[first.name], latency[first.name], T0 + i / 100)
    assert counts["c"] / 1000 <= 0.10
    assert counts["a"] and counts["b"]  # both fast ones share the traffic


def test_latency_aware_notices_a_slowdown_on_the_next_answer() -> None:
    deployments = [with_latency(make_deployment(name), 0.05) for name in "abc"]
    policy, rng = LatencyAware("ttft"), random.Random(2)
    deployments[2].health.succeeded(0.5, 0.5, T0 + 1)  # c became ten times slower
    counts = Counter[str]()
    for i in range(1000):
        first = policy.order(deployments, rng)[0]
        counts[first.name] += 1
        first.health.succeeded(0.05 if first.name != "c" else 0.5, 0.05, T0 + 1 + i / 100)
    assert counts["c"] / 1000 <= 0.10


def test_an_idle_slow_deployment_fades_and_is_tried_again(frozen_clock: Clock) -> None:
    slow = with_latency(make_deployment("slow"), 1.0)  # at T0, then no traffic
    fast = make_deployment("fast")
    fast.health.succeeded(0.1, 0.1, T0 + 30)
    frozen_clock.now = T0 + 30
    assert LatencyAware("ttft").order([slow, fast], random.Random(0)) == [slow, fast]
    frozen_clock.now = T0 + 1
    assert LatencyAware("ttft").order([slow, fast], random.Random(0)) == [fast, slow]


def test_cost_aware_picks_the_cheapest_within_the_latency_target() -> None:
    cheap = with_latency(make_deployment("cheap", price=1), 2.0)
    mid = with_latency(make_deployment("mid", price=5), 0.3)
    pricey = with_latency(make_deployment("pricey", price=20), 0.1)
    order = CostAware("ttft", 0.5).order([pricey, cheap, mid], random.Random(0))
    assert [d.name for d in order] == ["mid", "pricey", "cheap"]


def test_cost_aware_falls_back_to_the_fastest_when_none_meets_the_target() -> None:
    cheap = with_latency(make_deployment("cheap", price=1), 2.0)
    mid = with_latency(make_deployment("mid", price=5), 0.3)
    pricey = with_latency(make_deployment("pricey", price=20), 0.1)
    order = CostAware("ttft", 0.05).order([cheap, mid, pricey], random.Random(0))
    assert [d.name for d in order] == ["pricey", "mid", "cheap"]


def test_cost_aware_without_a_target_is_cheapest_first() -> None:
    cheap = with_latency(make_deployment("cheap", price=1), 2.0)
    pricey = with_latency(make_deployment("pricey", price=20), 0.1)
    assert CostAware("ttft", None).order([pricey, cheap], random.Random(0)) == [cheap, pricey]


def test_cost_aware_counts_an_unmeasured_deployment_as_meeting_the_target() -> None:
    cheap_new = make_deployment("cheap_new", price=1)
    pricey = with_latency(make_deployment("pricey", price=20), 0.1)
    assert CostAware("ttft", 0.5).order([pricey, cheap_new], random.Random(0))[0] is cheap_new


def test_cost_aware_breaks_price_ties_by_weight() -> None:
    light = make_deployment("light", price=5, weight=1)
    heavy = make_deployment("heavy", price=5, weight=3)
    assert CostAware("ttft", 0.5).order([light, heavy], random.Random(0))[0] is heavy


def test_ordered_keeps_the_config_order() -> None:
    deployments = [make_deployment(name) for name in ("primary", "secondary", "tertiary")]
    deployments[0].in_flight = 50
    with_latency(deployments[0], 5.0)
    assert Ordered().order(deployments, random.Random(0)) == deployments


@pytest.mark.parametrize(("name", "kind"), [("weighted", Weighted),
                                            ("least_outstanding", LeastOutstanding),
                                            ("latency", LatencyAware), ("cost", CostAware),
                                            ("priority", Ordered)])
def test_policy_for_builds_the_named_policy(name: str, kind: type) -> None:
    model = ModelConfig.model_validate({
        "deployments": [DeploymentConfig(name="d", backend="simulated")], "policy": name,
        "latency_target_ms": 250, "latency_signal": "total"})
    policy = policy_for(model)
    assert isinstance(policy, kind)
    if isinstance(policy, CostAware):
        assert policy.target == 0.25 and policy.latency.signal == "total"
