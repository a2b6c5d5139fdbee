"""The Route stage's time limits on a stream after its first chunk: each wait for a chunk within
the idle timeout, all of them within the total; time the client spends between chunks does not
count, and a wait cancelled for another reason stays a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
from pipeline_support import chunks, config, make_exchange

from switchgear.backends.simulated import SimulatedBackend
from switchgear.config import TelemetryConfig
from switchgear.errors import UpstreamTimeout
from switchgear.exchange import Operation
from switchgear.pipeline import Body
from switchgear.pipeline.route import Route
from switchgear.routing.budget import RetryBudget
from switchgear.routing.deployment import Deployment
from switchgear.routing.router import Router
from switchgear.telemetry.tracing import Tracer


class Paced(SimulatedBackend):
    """Streams a fixed answer, waiting ``gaps[i]`` seconds before chunk ``i + 1`` (forever
    after the gaps run out, if the answer has more chunks)."""

    gaps: list[float] = []

    async def stream(self, operation: Operation, body: Body, tier: str = "standard"
                     ) -> AsyncGenerator[Body, None]:
        for index, chunk in enumerate(chunks("a", "b", "c", "d")):
            if index:
                if index > len(self.gaps):
                    await asyncio.Event().wait()
                await asyncio.sleep(self.gaps[index - 1])
            yield chunk


async def relay(gaps: list[float], idle: float, total: float) -> AsyncIterator[Body]:
    parsed = config({"chat": {"deployments": [{
        "name": "d", "backend": "simulated",
        "timeouts": {"connect": 1, "ttft": 5, "idle": idle, "total": total}}]}})
    settings = parsed.models["chat"].deployments[0]
    backend = Paced(settings)
    backend.gaps = gaps
    router = Router(parsed.models, {"chat": [Deployment("chat", settings, backend)]})
    retry = parsed.routing.retry
    route = Route(router, retry, RetryBudget(retry), 0.0, Tracer(TelemetryConfig()))
    exchange = make_exchange(stream=True, resolved_alias="chat")
    reply = await route(exchange)
    assert not isinstance(reply, dict)
    return reply


async def test_chunks_each_within_the_idle_timeout_pass_however_long_the_stream() -> None:
    reply = await relay([0.03] * 5, idle=0.05, total=5)
    assert len([chunk async for chunk in reply]) == 6


async def test_a_stream_silent_past_the_idle_timeout_fails() -> None:
    reply = await relay([0.01], idle=0.05, total=5)
    received = []
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.05s"):
        async for chunk in reply:
            received.append(chunk)
    assert len(received) == 2


async def test_the_total_timeout_cuts_a_stream_that_keeps_within_the_idle_one() -> None:
    reply = await relay([0.04] * 5, idle=0.05, total=0.1)
    with pytest.raises(UpstreamTimeout, match="did not answer within"):
        async for _ in reply:
            pass


async def test_time_the_client_takes_between_chunks_is_not_idle_time() -> None:
    reply = await relay([0.0] * 5, idle=0.05, total=5)
    received = 0
    async for _ in reply:
        received += 1
        await asyncio.sleep(0.08)
    assert received == 6


async def test_a_wait_cancelled_by_someone_else_stays_a_cancellation() -> None:
    reply = await relay([], idle=0.05, total=5)

    async def read() -> None:
        async for _ in reply:
            pass

    reading = asyncio.ensure_future(read())
    await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    await asyncio.sleep(0.08)  # past the idle timeout: the stream's timer is gone
    assert reading.cancelled()
