"""A canary rollback holds for every replica and across restarts: two gateways share one store,
only the first sees the failing canary's traffic, and both (and a restarted one) stop sending it
any."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from switchgear.cli.admin_client import admin_call
from switchgear.config import Config, ConfigError, parse_config
from switchgear.governance.canary import without_canary
from switchgear.simulator.faults import Faults
from switchgear.simulator.server import RunningSimulator

from servers import fetch_records, gateway, wait_for_version

HELLO = [{"role": "user", "content": "Say hello"}]


def configure(tmp_path: Path, stable: str, candidate: str) -> Config:
    def deployment(name: str, url: str) -> dict[str, Any]:
        return {"name": name, "backend": "openai_http", "url": url, "model": "sim",
                "timeouts": {"connect": 1, "ttft": 5, "idle": 5, "total": 10}}

    return parse_config({
        "models": {
            "chat": {"variants": [{"model": "stable", "weight": 70},
                                  {"model": "candidate", "weight": 30, "canary": True}],
                     "sticky": "none",
                     # p95 margin wide: this is about errors, not a busy machine's latency noise
                     "canary_guard": {"min_samples": 30, "error_rate_margin": 0.05,
                                      "p95_margin": 100}},
            "stable": {"deployments": [deployment("stable-1", stable)]},
            "candidate": {"deployments": [deployment("candidate-1", candidate)]},
        },
        "routing": {"outlier": {"error_ratio": 0.9, "consecutive_failures": 50}},
        "governance": {"poll_interval_s": 0.2},
        "store": {"url": f"sqlite:///{tmp_path}/records.db", "flush_interval_ms": 20},
    })


def canary_of(base_url: str) -> dict[str, Any]:
    routing = admin_call(base_url.removesuffix("/v1"), "GET", "/admin/routing", None)
    chat: dict[str, Any] = routing["models"]["chat"]
    return chat


def ask(base_url: str, count: int) -> None:
    with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        for _ in range(count):
            # the failing canary's 500s are what the guard is for
            with contextlib.suppress(openai.InternalServerError):
                sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)


def test_a_canary_rolled_back_on_one_replica_is_rolled_back_on_all_and_after_a_restart(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    stable = simulators().base_url
    candidate = simulators(faults=Faults(error_rate=0.3, error_status=500)).base_url
    config = configure(tmp_path, stable, candidate)
    with gateway(config) as first, gateway(config) as second:
        assert canary_of(second)["variants"] == {"stable": 70, "candidate": 30}
        ask(first, 400)  # only the first replica sees the canary fail
        assert "error rate" in (canary_of(first)["canary"]["rolled_back"] or "")
        wait_for_version(second, 2, timeout=10)
        on_second = canary_of(second)
        assert on_second["variants"] == {"stable": 70, "candidate": 0}
        assert on_second["canary"]["rolled_back"]
        # the first replica adopted its own rollback's version and still says why
        wait_for_version(first, 2, timeout=10)
        assert "error rate" in canary_of(first)["canary"]["rolled_back"]
        ask(second, 20)
        admin = second.removesuffix("/v1")
        changes = admin_call(admin, "GET", "/admin/config/changes", None)["data"]
        audit = admin_call(admin, "GET", "/admin/audit", None)["data"]
    assert [r.variant for r in fetch_records(config.store.url)[-20:]] == ["stable"] * 20
    [change] = [c for c in changes if c["author"] == "canary-guard"]
    assert change["status"] == "applied" and change["applied_version"] == 2
    assert "error rate" in change["message"]
    assert "-      weight: 30.0\n+      weight: 0.0\n" in change["diff"]
    [entry] = [e for e in audit if e["action"] == "canary.rollback"]
    assert entry["actor"] == "canary-guard" and entry["target"] == "chat/candidate"
    with gateway(config) as restarted:  # the file still says 30: the store decides now
        assert canary_of(restarted)["variants"] == {"stable": 70, "candidate": 0}
        ask(restarted, 10)
    assert [r.variant for r in fetch_records(config.store.url)[-10:]] == ["stable"] * 10


def test_rolling_back_sets_only_that_variants_weight_and_knows_when_it_is_done(
    tmp_path: Path
) -> None:
    config = configure(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9")
    rolled_back = without_canary(config, "chat", "candidate")
    assert rolled_back is not None
    assert [(v.model, v.weight, v.canary) for v in rolled_back.models["chat"].variants] == [
        ("stable", 70, False), ("candidate", 0, True)]
    assert rolled_back.models["stable"] == config.models["stable"]
    assert without_canary(rolled_back, "chat", "candidate") is None  # already at 0
    assert without_canary(config, "chat", "nobody") is None
    assert without_canary(config, "unknown", "candidate") is None


def test_an_experiment_needs_a_variant_with_traffic() -> None:
    with pytest.raises(ConfigError, match="weight above 0"):
        parse_config({"models": {
            "chat": {"variants": [{"model": "a", "weight": 0}, {"model": "b", "weight": 0}]},
            "a": {"deployments": [{"name": "a", "backend": "simulated"}]},
            "b": {"deployments": [{"name": "b", "backend": "simulated"}]}}})
