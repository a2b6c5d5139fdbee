"""An answer's usage is read once, where it arrives (the Route stage from a deployment, the Cache
stage from the cache), and priced once: the cache keeps what the request that made the answer
was charged, and a hit saves exactly that."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import aclosing
from typing import Any

import pytest
from pipeline_support import NextStage, chunks, config, drain, make_exchange, turns

from switchgear.backends.simulated import SimulatedBackend
from switchgear.cache.exact import MemoryCache
from switchgear.config import Config, DeploymentConfig, TelemetryConfig
from switchgear.exchange import Exchange, Operation
from switchgear.ledger.cost import PriceBook, Rates
from switchgear.pipeline import Body, Handler, chain
from switchgear.pipeline.cache import Cache
from switchgear.pipeline.record import Record, Recorder
from switchgear.pipeline.route import Route
from switchgear.routing.budget import RetryBudget
from switchgear.routing.deployment import Deployment
from switchgear.routing.router import Router
from switchgear.telemetry.tracing import Tracer


class CountedUsage(Mapping[str, Any]):
    """A ``usage`` object that counts how often its prompt tokens are read (``reads``)."""

    def __init__(self, usage: dict[str, Any]) -> None:
        self.usage = usage
        self.reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += key == "prompt_tokens"
        return self.usage[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.usage)

    def __len__(self) -> int:
        return len(self.usage)


class CountedBackend(SimulatedBackend):
    """The simulated backend, the usage of its answers handed out as ``CountedUsage``."""

    def __init__(self, settings: DeploymentConfig) -> None:
        super().__init__(settings)
        self.usages: list[CountedUsage] = []

    def counted(self, body: Body) -> Body:
        if body.get("usage"):
            usage = body["usage"] = CountedUsage(body["usage"])
            self.usages.append(usage)
        return body

    async def complete(self, operation: Operation, body: Body, tier: str = "standard") -> Body:
        return self.counted(await super().complete(operation, body, tier))

    async def stream(self, operation: Operation, body: Body, tier: str = "standard"
                     ) -> AsyncGenerator[Body, None]:
        async with aclosing(super().stream(operation, body, tier)) as chunks:
            async for chunk in chunks:
                yield self.counted(chunk)


def instant() -> Config:
    """One alias ``chat``, one simulated deployment ``d`` that answers at once, 1 per token."""
    return config({"chat": {"deployments": [{
        "name": "d", "backend": "simulated", "price": {
            "input_per_million": 1_000_000, "output_per_million": 1_000_000},
        "simulated": {"ttft_ms": 0, "tpot_ms": 0, "mean_output_tokens": 4}}]}})


def gateway(parsed: Config, recorded: list[Exchange]) -> tuple[Handler, CountedBackend]:
    """Record → Cache → Route over the deployment's counted backend, as the gateway chains them
    (the stages between do not touch usage), with its price step first; and that backend."""
    settings = parsed.models["chat"].deployments[0]
    backend = CountedBackend(settings)
    router = Router(parsed.models, {"chat": [Deployment("chat", settings, backend)]})
    retry = parsed.routing.retry
    prices = PriceBook.of(parsed)
    route = Route(router, retry, RetryBudget(retry), 0.0, Tracer(TelemetryConfig()))
    cache = Cache(parsed.cache, prices, store=MemoryCache(60, 100))
    return chain(Record(Recorder([prices.price, recorded.append])), cache, route), backend


@pytest.fixture
def charged(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The totals of every charge worked out from here on."""
    totals: list[float] = []
    charge = Rates.charge

    def counted(rates: Rates, *args: Any) -> Any:
        charges = charge(rates, *args)
        totals.append(charges.total)
        return charges

    monkeypatch.setattr(Rates, "charge", counted)
    return totals


@pytest.mark.parametrize("stream", [False, True])
async def test_a_miss_reads_and_prices_its_usage_once_and_a_hit_saves_that_charge(
        stream: bool, charged: list[float]) -> None:
    recorded: list[Exchange] = []
    pipeline, backend = gateway(instant(), recorded)
    miss = make_exchange(stream=stream, resolved_alias="chat")
    await drain(await pipeline(miss))
    await asyncio.sleep(0)  # its record runs in the loop's next turn
    [usage] = backend.usages
    assert usage.reads == 1  # by the Route stage; neither the cache nor the record read it again
    assert miss.usage.prompt_tokens == usage.usage["prompt_tokens"] > 0
    assert miss.usage.completion_tokens == usage.usage["completion_tokens"] > 0
    assert charged == [miss.cost] and miss.cost > 0  # priced once, for the record and the cache
    hit = make_exchange(stream=stream, resolved_alias="chat")
    await drain(await pipeline(hit))
    await asyncio.sleep(0)
    assert recorded == [miss, hit] and hit.cache_status == "hit"
    assert hit.usage == miss.usage and usage.reads == 2  # once more, for the hit's own record
    assert hit.saved_cost == miss.cost and hit.cost == 0 and charged == [miss.cost]


async def test_a_leader_that_hangs_up_mid_stream_keeps_what_the_whole_answer_cost() -> None:
    after = NextStage(stream=chunks("Hel", "lo"), deployment="d", pause_after=1)
    parsed = config()
    prices = PriceBook.of(parsed)
    recorded: list[Exchange] = []
    cache = Cache(parsed.cache, prices, store=MemoryCache(60, 100))
    pipeline = chain(Record(Recorder([prices.price, recorded.append])), cache, after)
    leader = make_exchange(stream=True)
    reply = await pipeline(leader)
    assert isinstance(reply, AsyncGenerator)
    await anext(reply)
    await reply.aclose()  # recorded now, before the usage came: charged for no tokens
    assert recorded == [leader] and leader.cost == 0
    after.resume()  # the call goes on, for followers and the cache
    await turns()
    hit = make_exchange()
    await pipeline(hit)
    assert hit.cache_status == "hit" and hit.saved_cost == pytest.approx(5 + 2)
