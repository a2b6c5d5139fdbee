"""The exact cache and in-flight coalescing, with the official client against a simulator that
counts the calls it really answered."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from switchgear.cache.exact import AnswerStore, Entry, MemoryCache
from switchgear.cache.shared import RedisCache
from switchgear.config import Config
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import (
    REDIS_URL,
    break_glass,
    create_key,
    fetch_records,
    gateway,
    gateway_process,
)

HELLO = [{"role": "user", "content": "Say hello"}]
SLOW = ModelOptions(ttft_ms=150, tpot_ms=1, mean_output_tokens=8, seed=4)


def configure(make_config: Callable[..., Config], sim: RunningSimulator,
              cache: dict[str, Any] | None = None) -> Config:
    config = make_config({"chat": {"deployments": [
        {"name": "s", "backend": "openai_http", "url": sim.base_url, "model": "sim",
         "price": {"input_per_million": 1000, "output_per_million": 1000}}]}})
    return config.model_validate({**config.model_dump(), "cache": cache or {}})


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> str:
    """The bootstrap admin key the gateways of a test start with (so keys are required)."""
    key = "sg-cache-admin-0123456789abcdef0123456"
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", key)
    return key


def served(sim: RunningSimulator) -> int:
    return sim.state.model.requests_served


def test_the_size_bound_evicts_and_the_metrics_count_it(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator]
) -> None:
    sim = simulators()
    with gateway(configure(make_config, sim, {"max_entries": 1})) as base_url, \
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        for seed in (1, 2, 1):
            sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=3, seed=seed)
        metrics = urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics").read()
    assert served(sim) == 3  # seed 1 was pushed out by seed 2
    assert b"switchgear_cache_evictions_total 2.0" in metrics


def test_a_repeated_deterministic_request_is_answered_once(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    sim = simulators()
    with gateway(configure(make_config, sim)) as base_url, \
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        first = sdk.chat.completions.with_raw_response.create(
            model="chat", messages=HELLO, max_tokens=5, temperature=0)
        second = sdk.chat.completions.with_raw_response.create(
            model="chat", messages=HELLO, max_tokens=5, temperature=0)
        streamed = list(sdk.chat.completions.create(
            model="chat", messages=HELLO, max_tokens=5, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        assert served(sim) == 1
        assert first.headers["x-switchgear-cache"] == "miss"
        assert second.headers["x-switchgear-cache"] == "hit"
        text = first.parse().choices[0].message.content
        assert second.parse().choices[0].message.content == text
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text
        assert streamed[-1].usage is not None and streamed[-2].choices[0].finish_reason
        # a streamed miss is cached too, and replayed to a plain request
        list(sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=6,
                                         temperature=0, stream=True))
        again = sdk.chat.completions.with_raw_response.create(
            model="chat", messages=HELLO, max_tokens=6, temperature=0)
        assert again.headers["x-switchgear-cache"] == "hit" and served(sim) == 2
    records = fetch_records(f"sqlite:///{tmp_path}/records.db")
    statuses = [r.cache_status for r in records]
    assert statuses == ["miss", "hit", "hit", "miss", "hit"]
    hits = [r for r in records if r.cache_status == "hit"]
    assert all(r.cost == 0 and r.saved_cost and r.saved_cost > 0 for r in hits)


def test_non_deterministic_and_opted_out_requests_go_to_the_model(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator]
) -> None:
    sim = simulators()
    with gateway(configure(make_config, sim)) as base_url, \
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        for _ in range(2):
            raw = sdk.chat.completions.with_raw_response.create(model="chat", messages=HELLO,
                                                                max_tokens=3)
            assert raw.headers["x-switchgear-cache"] == "bypass"
        for headers in ({"Cache-Control": "no-cache"}, {"x-switchgear-cache": "bypass"}):
            raw = sdk.chat.completions.with_raw_response.create(
                model="chat", messages=HELLO, max_tokens=3, seed=1, extra_headers=headers)
            assert raw.headers["x-switchgear-cache"] == "bypass"
        assert served(sim) == 4


def test_tenants_do_not_share_entries(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator], admin: str
) -> None:
    sim = simulators()
    with gateway(configure(make_config, sim)) as base_url:
        keys = [create_key(base_url, admin, tenant=tenant)["secret"]
                for tenant in ("acme", "globex")]
        for key in keys + keys:
            with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0) as sdk:
                sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=3, seed=7)
        assert served(sim) == 2  # one miss per tenant, then one hit each


async def _burst(base_url: str, count: int, stream: bool) -> list[tuple[int, str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def one() -> tuple[int, str]:
            async with session.post(base_url + "/chat/completions", json={
                    "model": "chat", "messages": HELLO, "max_tokens": 8, "temperature": 0,
                    "stream": stream}) as response:
                return response.status, (await response.read()).decode()

        return await asyncio.gather(*(one() for _ in range(count)))


@pytest.mark.parametrize("stream", [False, True])
def test_fifty_identical_requests_reach_the_model_once(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
    tmp_path: Path, stream: bool
) -> None:
    sim = simulators(SLOW)
    with gateway(configure(make_config, sim)) as base_url:
        answers = asyncio.run(_burst(base_url, 50, stream))
    assert served(sim) == 1
    assert all(status == 200 for status, _ in answers)
    bodies = {body for _, body in answers}
    if stream:
        assert all(body.rstrip().endswith("data: [DONE]") for body in bodies)
    else:
        assert len(bodies) == 1  # every client got the same full answer
    outcomes = [r.cache_status for r in fetch_records(f"sqlite:///{tmp_path}/records.db")]
    assert outcomes.count("miss") == 1 and outcomes.count("coalesced") == 49


def test_when_the_leader_fails_followers_get_an_answer_or_an_error(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator]
) -> None:
    sim = simulators(SLOW, Faults(error_rate=0.5, error_status=500))
    with gateway(configure(make_config, sim)) as base_url:
        answers = asyncio.run(_burst(base_url, 20, False))
    assert {status for status, _ in answers} <= {200, 500, 503}  # 503: failures ejected it
    assert all('"error"' in body for status, body in answers if status != 200)


def answer_stores(prefix: str, ttl: float, max_entries: int) -> list[AnswerStore]:
    return [MemoryCache(ttl, max_entries), RedisCache(REDIS_URL, prefix, ttl, max_entries)]


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_ttl_and_size_bound(prefix: str, kind: str) -> None:
    store = answer_stores(prefix, ttl=0.2, max_entries=2)[kind == "redis"]
    try:
        evicted = [await store.put(key, Entry({"k": key}, 0.0, "chat", "t")) for key in "abc"]
        assert evicted == [0, 0, 1]
        assert await store.get("a", "chat", "t") is None  # least recently used went first
        hit = await store.get("b", "chat", "t")
        assert hit is not None and hit.body == {"k": "b"}
        assert (await store.stats())["entries"] == 2 and (await store.stats())["evictions"] == 1
        await store.get("b", "chat", "t")  # b is now the most recently used ...
        await store.put("d", Entry({"k": "d"}, 0.0, "chat", "t"))
        assert await store.get("c", "chat", "t") is None  # ... so c went
        await asyncio.sleep(0.25)
        assert await store.get("b", "chat", "t") is None and await store.get("d", "chat", "t") is None
    finally:
        await store.aclose()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_purge_by_alias_and_scope(prefix: str, kind: str) -> None:
    store = answer_stores(prefix, ttl=60, max_entries=10)[kind == "redis"]
    try:
        for key, alias, scope in [("1", "chat", "acme"), ("2", "chat", "globex"),
                                  ("3", "embed", "acme")]:
            await store.put(key, Entry({}, 0.0, alias, scope))
        assert await store.purge(alias="chat", scope="acme") == 1
        assert await store.purge(scope="acme") == 1
        assert await store.get("2", "chat", "globex") is not None
        assert await store.purge() == 1 and (await store.stats())["entries"] == 0
    finally:
        await store.aclose()


async def test_an_unreachable_redis_is_a_miss_not_a_failure(
        refused_url: Callable[..., str]) -> None:
    store = RedisCache(refused_url("redis") + "/0", "x:", 60, 10)
    try:
        assert await store.get("k", "chat", "t") is None
        assert await store.put("k", Entry({}, 0.0, "chat", "t")) == 0
        assert store.errors == 2
    finally:
        await store.aclose()


def test_stats_and_purge_by_model_over_the_admin_api_and_cli(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator]
) -> None:
    from click.testing import CliRunner

    from switchgear.cli.main import main

    sim = simulators()
    with gateway(configure(make_config, sim)) as base_url, \
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        root = base_url.removesuffix("/v1")
        for seed in (1, 2, 1):
            sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=3, seed=seed)
        stats = CliRunner().invoke(main, ["cache", "stats", "--url", root])
        assert stats.exit_code == 0 and '"entries": 2' in stats.output and '"hit": 1' in stats.output
        other = CliRunner().invoke(main, ["cache", "purge", "--url", root, "--model", "nope"])
        assert "purged 0 entries" in other.output
        metrics = urllib.request.urlopen(root + "/metrics").read().decode()
        assert 'switchgear_cache_requests_total{model="chat",outcome="hit"} 1.0' in metrics
        assert "switchgear_cache_evictions_total 0.0" in metrics
        purged = CliRunner().invoke(main, ["cache", "purge", "--url", root, "--model", "chat"])
        assert "purged 2 entries" in purged.output
        sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=3, seed=1)
        assert served(sim) == 3  # the purged answer had to be made again


#: A stream slow enough (about 2.4 s) that a follower can join while it is being generated.
TRICKLE = ModelOptions(ttft_ms=50, tpot_ms=300, mean_output_tokens=8, seed=4)


async def _trickle(sdk: openai.AsyncOpenAI) -> openai.AsyncStream[Any]:
    return await sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=8,
                                             temperature=0, stream=True)


def test_a_streamed_follower_gets_the_chunks_as_they_come_even_if_the_leader_hangs_up(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
    tmp_path: Path
) -> None:
    sim = simulators(TRICKLE)

    async def scenario(base_url: str) -> tuple[list[str], int]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
            leader = await _trickle(sdk)
            await anext(aiter(leader))  # the model is generating now
            follower = await _trickle(sdk)
            texts: list[str] = []
            served_midway = -1
            async for chunk in follower:
                texts.extend(c.delta.content or "" for c in chunk.choices)
                if len(texts) == 3:
                    await leader.close()  # the leader's client hangs up mid-stream
                    served_midway = served(sim)
            return texts, served_midway

    with gateway(configure(make_config, sim)) as base_url, \
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        texts, served_midway = asyncio.run(scenario(base_url))
        whole = sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=8,
                                            temperature=0).choices[0].message.content
    assert served_midway == 0  # chunks arrived while the model was still generating
    assert served(sim) == 1 and "".join(texts) == whole  # the whole answer came, and was kept
    records = fetch_records(f"sqlite:///{tmp_path}/records.db")
    assert sorted(r.cache_status for r in records) == ["coalesced", "hit", "miss"]


def test_cacheability_is_widened_per_route_and_narrowed_per_key(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator], admin: str
) -> None:
    sim = simulators()
    with gateway(configure(make_config, sim)) as base_url:
        created = create_key(base_url, admin, tenant="acme")
        # sampled requests are cached on this route, but not for this key (a config change)
        rules = {"routes": {"chat": "all"}, "keys": {created["key"]["id"]: "off"}}
        break_glass(base_url, admin, {"cache": rules})
        outcomes = {}
        for who, key in (("route", admin), ("key", created["secret"])):
            with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0) as sdk:
                outcomes[who] = [sdk.chat.completions.with_raw_response.create(
                    model="chat", messages=HELLO, max_tokens=3, temperature=0.9
                ).headers["x-switchgear-cache"] for _ in range(2)]
    assert outcomes == {"route": ["miss", "hit"], "key": ["bypass", "bypass"]}
    assert served(sim) == 3


def test_a_config_naming_an_unknown_route_is_refused(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator]
) -> None:
    with pytest.raises(ValueError, match=r"cache\.routes names 'nope'"):
        configure(make_config, simulators(), {"routes": {"nope": "all"}})


def test_two_gateway_processes_share_answers_through_redis(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
    tmp_path: Path, prefix: str
) -> None:
    sim = simulators()
    config = configure(make_config, sim, {"url": REDIS_URL, "prefix": prefix})
    with gateway_process(config, tmp_path) as one, gateway_process(config, tmp_path) as two:
        outcomes = []
        for base_url in (one, two, two):
            with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
                raw = sdk.chat.completions.with_raw_response.create(
                    model="chat", messages=HELLO, max_tokens=4, temperature=0)
                outcomes.append((raw.headers["x-switchgear-cache"],
                                 raw.parse().choices[0].message.content))
    assert [status for status, _ in outcomes] == ["miss", "hit", "hit"]
    assert len({text for _, text in outcomes}) == 1 and served(sim) == 1


def test_with_redis_away_requests_are_answered_by_the_model(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
    refused_url: Callable[..., str]
) -> None:
    sim = simulators()
    config = configure(make_config, sim, {"url": refused_url("redis") + "/0"})
    with gateway(config) as base_url, \
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as sdk:
        for _ in range(2):
            raw = sdk.chat.completions.with_raw_response.create(
                model="chat", messages=HELLO, max_tokens=4, temperature=0)
            assert raw.status_code == 200 and raw.headers["x-switchgear-cache"] == "miss"
    assert served(sim) == 2
