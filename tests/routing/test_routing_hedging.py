"""The tail hedged requests wait for: the p95 of an alias's recent times to first token."""

from __future__ import annotations

import pytest
from routing_support import deployments_of

from switchgear.config import ConfigError, ModelConfig, parse_config
from switchgear.routing.hedging import MIN_SAMPLES, REFRESH_EVERY, SAMPLES, TailLatency
from switchgear.routing.router import Router


def test_no_tail_until_enough_answers() -> None:
    tail = TailLatency()
    for _ in range(MIN_SAMPLES - 1):
        tail.observe(0.01)
    assert tail.p95 is None
    tail.observe(0.01)
    assert tail.p95 == 0.01


def test_the_tail_is_the_nearest_rank_p95_of_the_recent_answers() -> None:
    tail = TailLatency()
    for ms in range(1, 101):  # 1..100 ms; refreshed at 20, 52, 84: over the first 84
        tail.observe(ms / 1000)
    assert tail.p95 == pytest.approx(0.080)  # ceil(0.95 * 84) = 80th of 1..84
    for _ in range(REFRESH_EVERY):
        tail.observe(0.001)
    assert tail.p95 == pytest.approx(0.095)  # 1..100 and 16 more of 1 ms: the 111th of 116


def test_old_answers_leave_the_tail() -> None:
    tail = TailLatency()
    for _ in range(SAMPLES):
        tail.observe(1.0)
    for _ in range(SAMPLES):
        tail.observe(0.002)
    assert tail.p95 == 0.002


def test_a_hedge_needs_somewhere_to_go() -> None:
    with pytest.raises(ConfigError, match="hedge needs two deployments"):
        parse_config({"models": {"m": {"hedge": {}, "deployments": [
            {"name": "only", "backend": "simulated"}]}}})


def router_for(hedge: dict[str, float]) -> Router:
    model = ModelConfig.model_validate({"hedge": hedge, "deployments": [
        {"name": "a", "backend": "simulated"}, {"name": "b", "backend": "simulated"}]})
    return Router({"chat": model}, {"chat": deployments_of("chat", model)})


def test_a_fixed_hedge_delay_or_the_observed_tail() -> None:
    assert router_for({"after_ms": 250}).hedge_delay("chat") == 0.25
    router = router_for({})
    assert router.hedge_delay("chat") is None  # no tail yet: no hedging
    for _ in range(MIN_SAMPLES):
        router.first_token("chat", 0.04)
    assert router.hedge_delay("chat") == 0.04
