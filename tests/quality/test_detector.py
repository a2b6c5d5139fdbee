"""The change detector on answers fed straight to the signals, with simulated clocks: quiet at
baseline over many windows, firing on exactly the group whose answers changed, and rolling back a
canary arm that answers worse."""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import pytest

from switchgear.config import QualityConfig, parse_config
from switchgear.exchange import Exchange, Operation
from switchgear.quality.detector import ChangeDetector, compare, rate_shift
from switchgear.quality.signals import QualitySignals, Tally
from switchgear.routing.router import Router
from switchgear.telemetry.metrics import GatewayMetrics

SETTINGS = QualityConfig(recent_s=10, baseline_s=60, bucket_s=1, min_samples=100,
                         evaluate_every_s=5)


def answer(model: str, at: float, tokens: int, *, refused: bool = False, served: str | None = None,
           finish: str = "stop", schema_valid: bool | None = None, flagged: bool = False,
           text: str = "ok") -> Exchange:
    """A finished chat answer served by deployment ``d`` of ``served`` (default ``model``)."""
    exchange = Exchange("r", Operation.CHAT, {}, model, done=at, deployment="d",
                        served_alias=served or model, finish_reason=finish, refused=refused,
                        schema_valid=schema_valid, guard_action="flag" if flagged else None,
                        cache_status="miss")
    exchange.usage.completion_tokens = tokens
    exchange.completion_text.append(text)
    return exchange


class Traffic:
    """Answers at a steady rate with seeded randomness: refusals, lognormal lengths, some
    schema checks, guard flags, empty answers and length cuts, all at chosen rates."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)

    def answer(self, model: str, at: float, *, refusal_rate: float = 0.05,
               mean_tokens: float = 30, served: str | None = None) -> Exchange:
        rng = self.rng
        refused = rng.random() < refusal_rate
        tokens = 10 if refused else max(1, round(rng.lognormvariate(
            _mu(mean_tokens), 0.5)))
        return answer(model, at, tokens, refused=refused, served=served,
                      finish="length" if rng.random() < 0.1 else "stop",
                      schema_valid=(rng.random() < 0.95) if rng.random() < 0.5 else None,
                      flagged=rng.random() < 0.02, text="" if rng.random() < 0.01 else "ok")


def _mu(mean: float, sigma: float = 0.5) -> float:
    """The lognormal's mu for a distribution with this mean."""
    return math.log(mean) - sigma * sigma / 2


def detector(config: QualityConfig = SETTINGS, models: dict[str, Any] | None = None
             ) -> ChangeDetector:
    models = models or {alias: {"deployments": [{"name": "d", "backend": "simulated"}]}
                        for alias in ("a", "b")}
    parsed = parse_config({"models": models})
    router = Router(parsed.models, {})
    return ChangeDetector(QualitySignals(config), config, lambda: router, GatewayMetrics())


def run(watch: ChangeDetector, traffic: Traffic, start: float, seconds: int, per_second: int,
        **changed: dict[str, Any]) -> float:
    """Feed ``per_second`` answers a second to routes a and b (``changed[alias]`` are that
    route's traffic settings), evaluating as the background task would; the end time."""
    now = start
    for second in range(seconds):
        for index in range(per_second):
            at = start + second + index / per_second
            for alias in ("a", "b"):
                watch.signals.observe(traffic.answer(alias, at, **changed.get(alias, {})))
        now = start + second + 1
        if second % SETTINGS.evaluate_every_s == 0:
            watch.evaluate(now)
    return now


def test_at_baseline_it_stays_quiet_over_many_windows() -> None:
    watch = detector()
    # 2,000 s at 40 answers a second on each route: ~400 evaluations with full windows.
    end = run(watch, Traffic(), 1_000_000.0, 2000, 40)
    assert watch.fired == 0
    assert watch.alerts == {}
    report = watch.report(end)
    judged = [g for g in report["signals"] if g["baseline"]["answers"] >= 100]
    assert {(g["dimension"], g["name"]) for g in judged} == {
        ("route", "a"), ("route", "b"), ("served", "a"), ("served", "b"),
        ("deployment", "a/d"), ("deployment", "b/d")}
    assert all(g["shifts"] == [] for g in report["signals"])


def test_a_worse_route_fires_on_that_route_only(caplog: pytest.LogCaptureFixture) -> None:
    watch = detector()
    traffic = Traffic()
    now = run(watch, traffic, 1_000_000.0, 70, 20)
    assert watch.fired == 0
    with caplog.at_level(logging.WARNING, logger="switchgear.quality"):
        now = run(watch, traffic, now, 12, 20, a={"refusal_rate": 0.35, "mean_tokens": 12})
    fired = {(dimension, name) for dimension, name, _ in watch.alerts}
    assert fired == {("route", "a"), ("served", "a"), ("deployment", "a/d")}
    assert {signal for dimension, _, signal in watch.alerts if dimension == "route"} == {
        "refusal_rate", "output_tokens"}
    assert any("quality shift on route a: refusal_rate" in r.getMessage() for r in caplog.records)
    metrics = watch.metrics.render().decode()
    assert ('switchgear_quality_alerts_total{dimension="route",name="a",signal="refusal_rate"} '
            '1.0') in metrics
    assert ('switchgear_quality_shift{dimension="route",name="a",signal="output_tokens"} '
            '1.0') in metrics
    assert 'name="b",signal="refusal_rate"} 1.0' not in metrics
    # The shift is reported with its direction: refusals up, output down.
    route_a = next(g for g in watch.report(now)["signals"] if g["name"] == "a")
    moved = {shift["signal"]: shift for shift in route_a["shifts"]}
    assert moved["refusal_rate"]["recent"] > moved["refusal_rate"]["baseline"] + 0.2
    assert moved["output_tokens"]["recent"] < moved["output_tokens"]["baseline"] / 2


def test_an_alert_clears_once_the_route_is_back_to_normal() -> None:
    watch = detector()
    traffic = Traffic()
    now = run(watch, traffic, 1_000_000.0, 70, 20)
    now = run(watch, traffic, now, 12, 20, a={"refusal_rate": 0.5})
    assert ("route", "a", "refusal_rate") in watch.alerts
    fired = watch.fired
    # Long enough at baseline again that the bad spell has left both windows. While it is only
    # in the baseline the recovery looks like an improvement, which raises nothing.
    run(watch, traffic, now, 80, 20)
    assert watch.alerts == {}
    assert watch.fired == fired
    assert ('switchgear_quality_shift{dimension="route",name="a",signal="refusal_rate"} 0.0'
            in watch.metrics.render().decode())


def tally(refused: int, judged: int) -> Tally:
    return Tally(answers=judged, judged=judged, refused=refused)


def test_a_significant_move_within_the_margin_is_no_shift() -> None:
    # 5% → 7% over 100,000 answers each: beyond doubt, but within the 5-point margin.
    assert compare(tally(7_000, 100_000), tally(5_000, 100_000), SETTINGS) == []


def test_a_large_move_on_few_answers_is_no_shift() -> None:
    # 1 in 20 → 3 in 20: ten points, far beyond the margin, but well within chance.
    thin = SETTINGS.model_copy(update={"min_samples": 10})
    assert compare(tally(3, 20), tally(1, 20), thin) == []
    assert rate_shift("refusal_rate", (3, 20), (1, 20), 0.05, 0.05) is None
    # Below min_samples nothing is judged, however clear.
    assert compare(tally(99, 99), tally(0, 99), SETTINGS) == []
    assert compare(tally(100, 100), tally(0, 100), SETTINGS) != []


EXPERIMENT = {
    "chat": {"variants": [{"model": "base", "weight": 3}, {"model": "new", "weight": 1,
                                                            "canary": True}]},
    "base": {"deployments": [{"name": "d", "backend": "simulated"}]},
    "new": {"deployments": [{"name": "d", "backend": "simulated"}]},
}


def canary_traffic(watch: ChangeDetector, new_refusal_rate: float) -> None:
    traffic = Traffic()
    start = 1_000_000.0
    for index in range(600):
        at = start + index / 60
        watch.signals.observe(traffic.answer("chat", at, served="base"))
        watch.signals.observe(traffic.answer("chat", at, served="new",
                                             refusal_rate=new_refusal_rate))
    watch.evaluate(start + 10)


def test_a_canary_arm_that_refuses_more_than_its_baseline_is_rolled_back() -> None:
    watch = detector(models=EXPERIMENT)
    canary_traffic(watch, new_refusal_rate=0.4)
    experiment = watch.serving_router().routes["chat"].experiment
    assert experiment is not None and experiment.guard is not None
    assert ("canary", "chat:new", "refusal_rate") in watch.alerts
    assert experiment.guard.rolled_back is not None
    assert experiment.guard.rolled_back.startswith("quality: refusal_rate")
    assert experiment.weights == [3, 0.0]


def test_a_canary_like_its_baseline_keeps_its_traffic() -> None:
    watch = detector(models=EXPERIMENT)
    canary_traffic(watch, new_refusal_rate=0.05)
    experiment = watch.serving_router().routes["chat"].experiment
    assert experiment is not None and experiment.guard is not None
    assert watch.alerts == {}
    assert experiment.guard.rolled_back is None


def test_canary_rollback_can_be_left_to_people() -> None:
    config = SETTINGS.model_copy(update={"canary_rollback": False})
    watch = detector(config, models=EXPERIMENT)
    canary_traffic(watch, new_refusal_rate=0.4)
    experiment = watch.serving_router().routes["chat"].experiment
    assert experiment is not None and experiment.guard is not None
    assert ("canary", "chat:new", "refusal_rate") in watch.alerts
    assert experiment.guard.rolled_back is None
