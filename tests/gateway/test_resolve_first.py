"""Resolve first, over real HTTP: the alias and the experiment variant are known before the
limits, the cache and the priority gate look at a request; what no stage reached says so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3

from switchgear.config import Config, parse_config
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import fetch_records, gateway, scrape, total

HELLO = [{"role": "user", "content": "Say hello"}]


def sim_deployment(sim: RunningSimulator) -> dict[str, Any]:
    return {"name": "d", "backend": "openai_http", "url": sim.base_url, "model": "sim"}


def configure(tmp_path: Path, models: dict[str, Any], **sections: Any) -> Config:
    return parse_config({"models": models, "routing": {"health_check_interval_s": None},
                         "store": {"url": f"sqlite:///{tmp_path}/records.db",
                                   "flush_interval_ms": 20}, **sections})


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


def split(base: RunningSimulator, canary: RunningSimulator) -> dict[str, Any]:
    """An alias ``chat`` split 50/50 between ``base`` and ``canary``, sticky per user."""
    return {"chat": {"variants": [{"model": "base", "weight": 50},
                                  {"model": "canary", "weight": 50}]},
            "base": {"deployments": [sim_deployment(base)]},
            "canary": {"deployments": [sim_deployment(canary)]}}


def test_the_cache_keeps_experiment_variants_apart(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    base = simulators(ModelOptions(ttft_ms=1, tpot_ms=0.1, mean_output_tokens=12, seed=1))
    canary = simulators(ModelOptions(ttft_ms=1, tpot_ms=0.1, mean_output_tokens=30, seed=2))
    config = configure(tmp_path, split(base, canary), cache={"cacheable": "deterministic"})
    users = [f"user-{n}" for n in range(40)]
    with gateway(config) as base_url, client(base_url) as sdk:
        direct = {name: sdk.chat.completions.create(
            model=name, messages=HELLO, max_tokens=64, temperature=0).choices[0].message.content
            for name in ("base", "canary")}
        assert direct["base"] != direct["canary"]  # the two variants answer differently
        answers = {user: sdk.chat.completions.create(
            model="chat", messages=HELLO, max_tokens=64, temperature=0,
            user=user).choices[0].message.content for user in users}
    records = {r.user_id: r for r in fetch_records(f"sqlite:///{tmp_path}/records.db")
               if r.model == "chat"}
    assert set(records) == set(users)
    assert {r.variant for r in records.values()} == {"base", "canary"}
    for user, record in records.items():  # each user got its own variant's answer
        assert record.variant is not None
        assert answers[user] == direct[record.variant], user
    assert sum(r.cache_status == "hit" for r in records.values()) == len(users)


def test_an_unknown_model_is_a_fast_404_that_costs_no_quota_or_queue_place(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    sim = simulators(ModelOptions(ttft_ms=5, tpot_ms=20, mean_output_tokens=20, seed=1))
    config = configure(tmp_path, {"chat": {"deployments": [sim_deployment(sim)]}},
                       tiers={"capacity": 1}, limits={"tenants": {"default": {"rpm": 3}}})
    with gateway(config) as base_url, client(base_url) as sdk:
        for _ in range(3):
            with pytest.raises(openai.NotFoundError) as unknown:
                sdk.chat.completions.create(model="nope", messages=HELLO, max_tokens=2)
            assert unknown.value.code == "model_not_found"
        stream = sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=20,
                                             stream=True)
        with stream:
            next(iter(stream))  # the only running place is taken until the stream ends
            with pytest.raises(openai.NotFoundError):  # not queued behind it, not shed
                sdk.chat.completions.create(model="nope", messages=HELLO, max_tokens=2)
            list(stream)
        # the tenant's three requests a minute were not spent on models that do not exist
        sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
        samples = scrape(base_url)
    assert total(samples, "switchgear_queue_wait_seconds_count") == 2
    assert total(samples, "switchgear_cache_requests_total", model="unknown") == 0


def test_what_no_stage_reached_is_recorded_as_not_reached(
    simulators: Callable[..., RunningSimulator], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", "sg-resolve-admin-0123456789abcdef01234")
    sim = simulators()
    config = configure(tmp_path, {"chat": {"deployments": [sim_deployment(sim)]}})
    with gateway(config) as base_url, client(base_url) as sdk:
        with pytest.raises(openai.AuthenticationError):
            sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
        samples = scrape(base_url)
    (refused,) = fetch_records(f"sqlite:///{tmp_path}/records.db")
    assert refused.status == 401
    assert refused.cache_status is None and refused.priority is None
    assert total(samples, "switchgear_cache_requests_total") == 0


def readyz(base_url: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request("GET", base_url.removesuffix("/v1") + "/readyz", timeout=10)


def test_readyz_is_ready_for_an_experiment_once_its_variants_can_serve(
    simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    base, canary = simulators(), simulators()
    with gateway(configure(tmp_path, split(base, canary))) as base_url:
        ready = readyz(base_url)
        assert ready.status == 200, ready.data
        assert ready.json()["unservable"] == []


def test_readyz_is_unready_while_a_variant_that_gets_traffic_cannot_serve(
    simulators: Callable[..., RunningSimulator], tmp_path: Path,
    refused_url: Callable[..., str]
) -> None:
    models = split(simulators(), simulators())
    models["canary"]["deployments"][0]["url"] = refused_url() + "/v1"
    with gateway(configure(tmp_path, models)) as base_url:
        unready = readyz(base_url)
        assert unready.status == 503
        assert unready.json()["unservable"] == ["canary", "chat"]
