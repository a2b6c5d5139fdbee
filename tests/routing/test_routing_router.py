"""The router: which alias serves a request, which deployments in which order, the fallbacks."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from routing_support import deployments_of, make_exchange

from switchgear.config import Config, OutlierConfig
from switchgear.errors import ModelNotFound
from switchgear.routing.deployment import Deployment
from switchgear.routing.health import State
from switchgear.routing.router import Router


def config() -> Config:
    """"chat" (three deployments, falls back to "long"), "long", and the experiment "exp"."""
    return Config.model_validate({"models": {
        "chat": {"policy": "priority", "fallbacks": ["long"],
                 "deployments": [{"name": n, "backend": "simulated"} for n in ("a", "b", "c")]},
        "long": {"deployments": [{"name": "big", "backend": "simulated"}]},
        "exp": {"variants": [{"model": "chat", "weight": 1},
                             {"model": "long", "weight": 1, "canary": True}],
                "sticky": "user"},
    }})


def make_router(seed: int = 0) -> Router:
    """A router over ``config()`` with fake backends."""
    models = config().models
    return Router(models, {alias: deployments_of(alias, model) for alias, model in models.items()},
                  seed=seed)


def named(router: Router, alias: str, name: str) -> Deployment:
    """The deployment ``name`` of ``alias``."""
    return next(d for d in router.routes[alias].deployments if d.name == name)


def eject(deployment: Deployment) -> None:
    """Fail ``deployment`` until it is ejected."""
    for _ in range(OutlierConfig().consecutive_failures):
        deployment.health.failed(time.monotonic(), "UpstreamServerError")
    assert deployment.health.state is State.EJECTED


def names(plan: list[Deployment]) -> list[str]:
    """The names of the deployments in a plan."""
    return [d.name for d in plan]


def test_plan_orders_the_alias_deployments_by_its_policy() -> None:
    assert names(make_router().plan("chat")) == ["a", "b", "c"]  # priority: config order
    assert names(make_router().plan("long")) == ["big"]


def test_plan_excludes_ejected_deployments() -> None:
    router = make_router()
    eject(named(router, "chat", "b"))
    assert names(router.plan("chat")) == ["a", "c"]


def test_plan_offers_an_ejected_deployment_again_when_its_probe_is_due() -> None:
    router = make_router()
    b = named(router, "chat", "b")
    eject(b)
    b.health.ejected_until = time.monotonic() - 0.001
    assert names(router.plan("chat")) == ["a", "b", "c"]
    assert b.health.admit(time.monotonic())  # the probe goes
    assert names(router.plan("chat")) == ["a", "c"]  # and only the probe


def test_plan_is_empty_when_every_deployment_is_ejected() -> None:
    router = make_router()
    for deployment in router.routes["chat"].deployments:
        eject(deployment)
    assert router.plan("chat") == []


def test_resolve_without_an_experiment_is_the_alias_itself() -> None:
    exchange = make_exchange("chat")
    assert make_router().resolve(exchange) == "chat"
    assert exchange.variant is None


def test_resolve_picks_a_variant_and_records_it() -> None:
    router = make_router()
    picks = Counter[str]()
    for i in range(400):
        exchange = make_exchange("exp", user=f"user-{i}")
        alias = router.resolve(exchange)
        assert exchange.variant == alias
        picks[alias] += 1
    assert set(picks) == {"chat", "long"}
    again = make_exchange("exp", user="user-7")
    assert router.resolve(again) == router.resolve(make_exchange("exp", user="user-7"))


def test_chain_is_the_alias_then_its_fallbacks() -> None:
    router = make_router()
    assert router.chain("chat") == ["chat", "long"]
    assert router.chain("long") == ["long"]


def test_unknown_alias_is_model_not_found() -> None:
    router = make_router()
    with pytest.raises(ModelNotFound) as raised:
        router.resolve(make_exchange("gpt-9"))
    assert raised.value.status == 404
    assert raised.value.param == "model"
    assert "gpt-9" in str(raised.value)
    with pytest.raises(ModelNotFound):
        router.plan("gpt-9")
    with pytest.raises(ModelNotFound):
        router.chain("gpt-9")


def test_aliases_and_deployments() -> None:
    router = make_router()
    assert router.aliases == ["chat", "long", "exp"]
    assert [d.name for d in router.deployments()] == ["a", "b", "c", "big"]


def test_observe_feeds_the_canary_guard() -> None:
    router = make_router()
    guard = router.routes["exp"].experiment
    assert guard is not None and guard.guard is not None
    for variant in ("chat", "long"):
        exchange = make_exchange("exp")
        exchange.variant = variant
        exchange.done = exchange.received + 0.1
        router.observe(exchange)
    assert len(guard.guard.samples[True]) == 1 and len(guard.guard.samples[False]) == 1
    router.observe(make_exchange("chat"))  # not an experiment: nothing to do
    router.observe(make_exchange("gpt-9"))  # unknown: ignored, not raised


def test_snapshot_shape() -> None:
    router = make_router()
    a, b = named(router, "chat", "a"), named(router, "chat", "b")
    for _ in range(3):
        a.acquire()
    a.release()
    b.acquire()
    a.health.succeeded(0.0123, 0.25, time.monotonic())
    eject(named(router, "chat", "c"))

    snapshot = router.snapshot()
    assert set(snapshot) == {"chat", "long", "exp"}
    chat = snapshot["chat"]
    assert chat["policy"] == "priority" and chat["fallbacks"] == ["long"]
    assert "variants" not in chat
    rows = {row["name"]: row for row in chat["deployments"]}
    assert list(rows) == ["a", "b", "c"]
    assert set(rows["a"]) == {"name", "state", "reason", "ejections", "ejected_for_s",
                              "consecutive_failures", "in_flight", "ewma_ttft_ms",
                              "ewma_total_ms", "error_ratio", "traffic_share", "attempts"}
    assert rows["a"] | {"error_ratio": None} == {
        "name": "a", "state": "healthy", "reason": None, "ejections": 0, "ejected_for_s": None,
        "consecutive_failures": 0, "in_flight": 2, "ewma_ttft_ms": 12.3,
        "ewma_total_ms": 250.0, "error_ratio": None, "traffic_share": 0.75, "attempts": 3}
    assert rows["a"]["error_ratio"] == 0.0
    assert rows["b"]["traffic_share"] == 0.25 and rows["b"]["ewma_ttft_ms"] is None
    assert rows["c"]["state"] == "ejected"
    assert "consecutive failures" in rows["c"]["reason"]
    assert rows["c"]["ejections"] == 1 and rows["c"]["ejected_for_s"] > 0
    assert rows["c"]["error_ratio"] == 1.0

    assert snapshot["long"]["deployments"][0]["traffic_share"] == 0.0  # idle: no division by 0
    exp = snapshot["exp"]
    assert exp["deployments"] == []
    assert exp["variants"] == {"chat": 1.0, "long": 1.0}
    assert exp["sticky"] == "user"
    assert exp["canary"] == {"variant": "long", "rolled_back": None,
                             "samples": {"canary": 0, "baseline": 0}, "min_samples": 50}
