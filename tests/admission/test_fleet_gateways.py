"""Fleet-wide limits, end to end: two gateways sharing one Redis send one simulator at most
``max_concurrency`` (or the tier gate's ``capacity``) requests at once *together* when the
limit's scope is ``fleet``, measured at the simulator; with the default scope (per replica)
the same load goes over it. Places are given back however requests end (answers, streams,
clients that leave), and show on /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import pytest
from fleet_support import taken
from openai import APIError, AsyncOpenAI, InternalServerError
from redis.asyncio import Redis

from switchgear.config import Config, ConfigError, parse_config
from switchgear.gateway.state import AppState
from switchgear.routing.deployment import FleetDeployment
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator
from switchgear.store.leases import lease_key

from servers import REDIS_URL, gateway, scrape, total

LIMIT = 4
#: Requests sent to each of the two gateways at once: together four times the limit.
PER_GATEWAY = 8
#: Long enough a first token that the requests overlap at the simulator.
SLOW = ModelOptions(slots=32, ttft_ms=120, tpot_ms=1, mean_output_tokens=4, seed=5)

Limit = Literal["max_concurrency", "tiers_capacity"]
Scope = Literal["replica", "fleet"]


def fleet_config(tmp_path: Path, name: str, sim_url: str, prefix: str, limit: Limit,
                 scope: Scope, state_url: str = REDIS_URL) -> Config:
    """One gateway's config: one simulated deployment behind ``limit`` at ``scope``."""
    deployment: dict[str, Any] = {"name": "sim", "backend": "openai_http", "url": sim_url,
                                  "model": "sim"}
    data: dict[str, Any] = {
        "models": {"sim": {"deployments": [deployment]}},
        "store": {"url": f"sqlite:///{tmp_path}/{name}.db", "flush_interval_ms": 20},
        "routing": {"queue_timeout_ms": 30_000, "health_check_interval_s": None},
        "limits": {"state_url": state_url, "state_prefix": prefix},
    }
    if limit == "max_concurrency":
        deployment.update(max_concurrency=LIMIT, max_concurrency_scope=scope)
    else:
        data["tiers"] = {"capacity": LIMIT, "capacity_scope": scope,
                         "standard": {"max_queue": 100, "wait_target_ms": 30_000}}
    return parse_config(data)


@pytest.fixture
def two_gateways(tmp_path: Path, prefix: str, simulators: Callable[..., RunningSimulator]
                 ) -> Iterator[Callable[[Limit, Scope], tuple[RunningSimulator, list[str]]]]:
    """Starts one simulator and two gateways in front of it, sharing the test's Redis prefix."""
    with ExitStack() as running:
        def start(limit: Limit, scope: Scope) -> tuple[RunningSimulator, list[str]]:
            sim = simulators(SLOW)
            urls = [running.enter_context(gateway(fleet_config(
                tmp_path, name, sim.base_url, prefix, limit, scope))) for name in ("a", "b")]
            return sim, urls

        yield start


async def send_together(urls: list[str]) -> list[str]:
    """``PER_GATEWAY`` requests to each gateway at once, half of them streamed; their texts."""
    clients = [AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
               for url in urls]

    async def one(client: AsyncOpenAI, number: int) -> str:
        messages: Any = [{"role": "user", "content": f"hello {number}"}]
        if number % 2:
            stream = await client.chat.completions.create(model="sim", messages=messages,
                                                          max_tokens=4, stream=True)
            return "".join([chunk.choices[0].delta.content or "" async for chunk in stream
                            if chunk.choices])
        answer = await client.chat.completions.create(model="sim", messages=messages,
                                                      max_tokens=4)
        return answer.choices[0].message.content or ""

    try:
        return await asyncio.gather(*(one(client, number) for client in clients
                                      for number in range(PER_GATEWAY)))
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize("limit", ["max_concurrency", "tiers_capacity"])
async def test_a_fleet_limit_holds_across_two_gateways(
        two_gateways: Callable[[Limit, Scope], tuple[RunningSimulator, list[str]]],
        prefix: str, redis_client: Redis, limit: Limit) -> None:
    sim, urls = two_gateways(limit, "fleet")
    texts = await send_together(urls)
    assert len(texts) == 2 * PER_GATEWAY and all(texts)  # every request waited its turn
    assert sim.state.model.peak_in_flight <= LIMIT  # never more at once at the upstream
    assert sim.state.model.requests_served == 2 * PER_GATEWAY

    name = ("sim", "sim") if limit == "max_concurrency" else ()
    assert await taken(redis_client, lease_key(prefix, limit, *name), 0) == 0  # every place went back
    model, deployment = name or ("", "")
    labels = f'{{deployment="{deployment}",limit="{limit}",model="{model}"}}'
    samples = scrape(urls[0])
    assert samples["switchgear_fleet_places_held" + labels] == 0
    assert "switchgear_fleet_places_in_use" + labels in samples


@pytest.mark.parametrize("limit", ["max_concurrency", "tiers_capacity"])
async def test_a_replica_limit_lets_the_fleet_go_over_it(
        two_gateways: Callable[[Limit, Scope], tuple[RunningSimulator, list[str]]],
        limit: Limit) -> None:
    sim, urls = two_gateways(limit, "replica")
    texts = await send_together(urls)
    assert all(texts)
    assert sim.state.model.peak_in_flight > LIMIT  # each gateway sent up to the limit


@pytest.mark.parametrize("stream", [False, True])
async def test_clients_that_leave_give_their_fleet_places_back(
        tmp_path: Path, prefix: str, simulators: Callable[..., RunningSimulator],
        redis_client: Redis, stream: bool) -> None:
    sim = simulators(ModelOptions(slots=8, ttft_ms=60_000, seed=5))  # no answer in this test
    config = fleet_config(tmp_path, "a", sim.base_url, prefix, "max_concurrency", "fleet")
    key = lease_key(prefix, "max_concurrency", "sim", "sim")
    with gateway(config) as url:
        client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        try:
            leaving = [asyncio.ensure_future(client.chat.completions.create(
                model="sim", messages=[{"role": "user", "content": "bye"}], max_tokens=4,
                stream=stream)) for _ in range(LIMIT)]
            assert await taken(redis_client, key, LIMIT) == LIMIT  # every one holds a place
            for request in leaving:
                request.cancel()
            await asyncio.gather(*leaving, return_exceptions=True)
            assert await taken(redis_client, key, 0) == 0  # given back, long before an answer
            assert sim.state.model.requests_served == 0
        finally:
            await client.close()


@pytest.mark.parametrize("faults", [Faults(error_rate=1.0), Faults(disconnect_rate=1.0)],
                         ids=["error", "stream cut"])
async def test_failed_attempts_give_their_fleet_places_back(
        tmp_path: Path, prefix: str, simulators: Callable[..., RunningSimulator],
        redis_client: Redis, faults: Faults) -> None:
    sim = simulators(SLOW, faults)
    config = fleet_config(tmp_path, "a", sim.base_url, prefix, "max_concurrency", "fleet")
    with gateway(config) as url:
        with pytest.raises(APIError):
            await send_together([url])
        assert await taken(redis_client, lease_key(prefix, "max_concurrency", "sim", "sim"),
                           0) == 0


async def test_a_hedge_and_the_attempt_it_beats_give_their_places_back(
        tmp_path: Path, prefix: str, simulators: Callable[..., RunningSimulator],
        redis_client: Redis) -> None:
    slow = simulators(ModelOptions(slots=8, ttft_ms=60_000, seed=5))
    fast = simulators(SLOW)
    deployments = [{"name": name, "backend": "openai_http", "url": sim.base_url, "model": "sim",
                    "max_concurrency": limit, "max_concurrency_scope": "fleet"}
                   for name, sim, limit in (("slow", slow, LIMIT), ("fast", fast, PER_GATEWAY))]
    config = parse_config({
        "models": {"sim": {"deployments": deployments, "policy": "priority",
                           "hedge": {"after_ms": 50}}},
        "store": {"url": f"sqlite:///{tmp_path}/hedge.db", "flush_interval_ms": 20},
        "routing": {"queue_timeout_ms": 30_000, "health_check_interval_s": None,
                    "retry": {"max_attempts": 2, "budget_ratio": 1.0}},
        "limits": {"state_url": REDIS_URL, "state_prefix": prefix},
    })
    with gateway(config) as url:
        assert all(await send_together([url]))  # each from the fast one, first or hedged
        for name in ("slow", "fast"):
            assert await taken(redis_client, lease_key(prefix, "max_concurrency", "sim", name),
                               0) == 0
    assert (slow.state.model.requests_served, fast.state.model.requests_served) == (
        0, PER_GATEWAY)


async def test_a_stopping_gateway_gives_its_places_back_at_once(
        tmp_path: Path, prefix: str, redis_client: Redis) -> None:
    config = fleet_config(tmp_path, "a", "http://127.0.0.1:9", prefix, "max_concurrency",
                          "fleet")
    config = config.model_copy(update={"limits": config.limits.model_copy(
        update={"fleet_lease_s": 600})})
    state = AppState.build(config)
    await state.start()
    try:
        deployment = next(iter(state.router.deployments()))
        assert isinstance(deployment, FleetDeployment)
        for _ in range(LIMIT):  # requests in flight as the replica stops
            assert await deployment.take_place(0)
            deployment.acquire()
        assert not await deployment.take_place(0)
    finally:
        await state.stop()
    key = lease_key(prefix, "max_concurrency", "sim", "sim")
    assert await redis_client.zcard(key) == 0  # not after the 600 s lease: now


def test_fleet_settings_that_cannot_work_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"fleet scope needs limits\.state_url"):
        parse_config({"models": {"sim": {"deployments": [{
            "name": "sim", "backend": "simulated", "max_concurrency_scope": "fleet"}]}}})
    with pytest.raises(ConfigError, match=r"tiers\.capacity_scope: fleet scope needs"):
        parse_config({"tiers": {"capacity": 2, "capacity_scope": "fleet"}})
    with pytest.raises(ConfigError, match=r"limits\.fleet_lease_s"):
        parse_config({"limits": {"state_url": REDIS_URL, "fleet_lease_s": 0}})
    with pytest.raises(ConfigError, match="max_concurrency_scope"):
        parse_config({"models": {"sim": {"deployments": [{
            "name": "sim", "backend": "simulated", "max_concurrency_scope": "cluster"}]}}})


@pytest.mark.parametrize("limit", ["max_concurrency", "capacity"])
async def test_an_unreachable_state_is_a_503_not_a_shed(
        tmp_path: Path, prefix: str, simulators: Callable[..., RunningSimulator],
        refused_url: Callable[..., str], limit: Limit) -> None:
    sim = simulators(SLOW)
    config = fleet_config(tmp_path, "down", sim.base_url, prefix, limit, "fleet",
                          state_url=refused_url("redis") + "/0")
    with gateway(config) as url:
        client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
        try:
            with pytest.raises(InternalServerError) as caught:
                await client.chat.completions.create(
                    model="sim", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        finally:
            await client.close()
        shed = total(scrape(url.removesuffix("/v1")), "switchgear_shed_requests_total")
    assert caught.value.status_code == 503
    assert caught.value.code == "state_unavailable"
    assert sim.state.model.requests_served == 0
    assert shed == 0  # the shared state was away: nothing was shed for want of capacity
