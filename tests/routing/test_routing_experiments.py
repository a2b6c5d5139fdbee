"""Experiments: traffic split by weight, sticky per user or key, and the canary guard."""

from __future__ import annotations

import logging
import random
from collections import Counter

import pytest
from routing_support import make_exchange

from switchgear.config import CanaryGuard as CanaryGuardConfig
from switchgear.config import ModelConfig, Variant
from switchgear.routing.experiments import EVALUATE_EVERY, CanaryGuard, Experiment

DRAWS = 10_000


def experiment(sticky: str = "none", *, canary: bool = False, base_weight: float = 3,
               new_weight: float = 1, **guard: float) -> Experiment:
    """An alias "chat" split between "base" and "new" (the canary when ``canary``)."""
    config = ModelConfig.model_validate({
        "variants": [Variant(model="base", weight=base_weight),
                     Variant(model="new", weight=new_weight, canary=canary)],
        "sticky": sticky,
        "canary_guard": CanaryGuardConfig.model_validate(guard),
    })
    return Experiment("chat", config)


def guard_of(exp: Experiment) -> CanaryGuard:
    """The experiment's canary guard (there must be one)."""
    assert exp.guard is not None
    return exp.guard


def finish(guard: CanaryGuard, variant: str, *, failed: bool = False, latency: float = 0.1) -> None:
    """Feed the guard one finished request of ``variant``."""
    exchange = make_exchange("chat")
    exchange.variant = variant
    exchange.status = 500 if failed else 200
    exchange.done = exchange.received + latency
    guard.observe(exchange)


def run(guard: CanaryGuard, requests: int, *, canary_error_every: int = 0,
        baseline_error_every: int = 0, canary_latency: float = 0.1,
        baseline_latency: float = 0.1) -> None:
    """``requests`` requests to each variant, interleaved; every n-th one of a variant fails."""
    for i in range(1, requests + 1):
        finish(guard, "base", failed=bool(baseline_error_every) and i % baseline_error_every == 0,
               latency=baseline_latency)
        finish(guard, "new", failed=bool(canary_error_every) and i % canary_error_every == 0,
               latency=canary_latency)


def test_weights_split_the_traffic() -> None:
    exp, rng = experiment(), random.Random(4)
    counts = Counter(exp.choose(make_exchange("chat"), rng) for _ in range(DRAWS))
    assert counts["base"] / DRAWS == pytest.approx(0.75, abs=0.02)
    assert counts["new"] / DRAWS == pytest.approx(0.25, abs=0.02)


def test_sticky_user_keeps_each_user_on_one_variant() -> None:
    exp, rng = experiment("user"), random.Random(0)
    for user in ("alice", "bob", "carol", "dave"):
        chosen = {exp.choose(make_exchange("chat", user=user), rng) for _ in range(50)}
        assert len(chosen) == 1


def test_sticky_user_reads_the_body_user_field_too() -> None:
    exp, rng = experiment("user"), random.Random(0)
    by_principal = exp.choose(make_exchange("chat", user="user-42"), rng)
    chosen = {exp.choose(make_exchange("chat", body={"messages": [], "user": "user-42"}), rng)
              for _ in range(50)}
    assert chosen == {by_principal}


def test_sticky_users_spread_by_weight() -> None:
    exp, rng = experiment("user"), random.Random(0)
    counts = Counter(exp.choose(make_exchange("chat", user=f"user-{i}"), rng) for i in range(4000))
    assert counts["base"] / 4000 == pytest.approx(0.75, abs=0.05)
    assert counts["new"] / 4000 == pytest.approx(0.25, abs=0.05)


def test_sticky_key_keeps_each_key_on_one_variant() -> None:
    exp, rng = experiment("key"), random.Random(0)
    for key in ("key-a", "key-b", "key-c"):
        chosen = {exp.choose(make_exchange("chat", key_id=key, user=f"u{i}"), rng)
                  for i in range(50)}
        assert len(chosen) == 1
    counts = Counter(exp.choose(make_exchange("chat", key_id=f"key-{i}"), rng) for i in range(4000))
    assert counts["new"] / 4000 == pytest.approx(0.25, abs=0.05)


def test_sticky_without_a_user_splits_at_random() -> None:
    exp, rng = experiment("user"), random.Random(9)
    counts = Counter(exp.choose(make_exchange("chat"), rng) for _ in range(DRAWS))
    assert counts["new"] / DRAWS == pytest.approx(0.25, abs=0.02)


def test_no_guard_without_a_canary() -> None:
    assert experiment().guard is None
    assert guard_of(experiment(canary=True)).canary == "new"


def test_a_failing_canary_is_rolled_back_and_the_log_says_why(
        caplog: pytest.LogCaptureFixture) -> None:
    exp = experiment(canary=True, min_samples=50)
    guard = guard_of(exp)
    with caplog.at_level(logging.WARNING, logger="switchgear.routing"):
        run(guard, 100, canary_error_every=5)  # 20% of the canary's requests fail
    assert guard.rolled_back is not None
    assert "error rate 20.0%" in guard.rolled_back
    assert "baseline's 0.0%" in guard.rolled_back
    assert exp.weights == [3, 0.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "canary new of chat rolled back" in warnings[0].getMessage()
    assert guard.rolled_back in warnings[0].getMessage()
    # Rolled back: no more traffic to the canary, sticky or not.
    rng = random.Random(0)
    assert {exp.choose(make_exchange("chat"), rng) for _ in range(1000)} == {"base"}


def test_a_rolled_back_canary_stays_rolled_back() -> None:
    exp = experiment(canary=True, min_samples=50)
    guard = guard_of(exp)
    run(guard, 100, canary_error_every=5)
    reason = guard.rolled_back
    run(guard, 100)
    assert guard.rolled_back == reason
    assert exp.weights[1] == 0.0


def test_a_sticky_user_of_a_rolled_back_canary_moves_to_the_baseline() -> None:
    exp = experiment("user", canary=True, min_samples=50, base_weight=1, new_weight=1)
    rng = random.Random(0)
    on_canary = [u for u in (f"user-{i}" for i in range(100))
                 if exp.choose(make_exchange("chat", user=u), rng) == "new"]
    assert on_canary
    run(guard_of(exp), 100, canary_error_every=5)
    assert all(exp.choose(make_exchange("chat", user=u), rng) == "base" for u in on_canary)


def test_a_canary_as_good_as_the_baseline_stays(caplog: pytest.LogCaptureFixture) -> None:
    exp = experiment(canary=True, min_samples=50)
    guard = guard_of(exp)
    with caplog.at_level(logging.WARNING, logger="switchgear.routing"):
        run(guard, 500, canary_error_every=50, baseline_error_every=50)  # 2% each
    assert guard.rolled_back is None
    assert exp.weights == [3, 1]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_canary_within_the_error_margin_stays() -> None:
    exp = experiment(canary=True, min_samples=50, error_rate_margin=0.05)
    run(guard_of(exp), 500, canary_error_every=25, baseline_error_every=50)  # 4% against 2%
    assert guard_of(exp).rolled_back is None


def test_no_verdict_before_min_samples() -> None:
    exp = experiment(canary=True, min_samples=50)
    guard = guard_of(exp)
    for _ in range(40):
        finish(guard, "base")
        finish(guard, "new", failed=True)
    assert guard.rolled_back is None
    run(guard, 10, canary_error_every=1)
    assert guard.rolled_back is not None  # 50 of each now


def test_the_guard_evaluates_every_few_canary_requests() -> None:
    exp = experiment(canary=True, min_samples=5)
    guard = guard_of(exp)
    for _ in range(10):
        finish(guard, "base")
    for _ in range(EVALUATE_EVERY - 1):
        finish(guard, "new", failed=True)
    assert guard.rolled_back is None  # enough samples, but no evaluation yet
    finish(guard, "new", failed=True)  # the EVALUATE_EVERY-th canary request
    assert guard.rolled_back is not None


def test_a_slower_canary_is_rolled_back_on_p95(caplog: pytest.LogCaptureFixture) -> None:
    exp = experiment(canary=True, min_samples=50, p95_margin=0.5)
    guard = guard_of(exp)
    with caplog.at_level(logging.WARNING, logger="switchgear.routing"):
        run(guard, 100, canary_latency=0.3, baseline_latency=0.1)
    assert guard.rolled_back is not None
    assert "p95 latency 300 ms against the baseline's 100 ms" in guard.rolled_back
    assert exp.weights[1] == 0.0
    assert any("p95 latency" in r.getMessage() for r in caplog.records)


def test_a_canary_within_the_p95_margin_stays() -> None:
    exp = experiment(canary=True, min_samples=50, p95_margin=0.5)
    run(guard_of(exp), 100, canary_latency=0.14, baseline_latency=0.1)
    assert guard_of(exp).rolled_back is None


def test_requests_outside_the_experiment_are_ignored() -> None:
    exp = experiment(canary=True, min_samples=10)
    guard = guard_of(exp)
    for _ in range(100):
        exchange = make_exchange("chat")  # no variant: it never went through the split
        exchange.status = 500
        guard.observe(exchange)
    assert not guard.samples[True] and not guard.samples[False]
