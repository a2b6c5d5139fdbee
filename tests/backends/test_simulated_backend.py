"""SimulatedBackend: the Backend protocol answered in-process by the simulated model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchgear.backends.base import Backend
from switchgear.backends.simulated import SimulatedBackend
from switchgear.config import DeploymentConfig, SimulatedOptions
from switchgear.errors import ContextWindowExceeded, InvalidRequest, UpstreamConnectError
from switchgear.exchange import Operation

HELLO = [{"role": "user", "content": "Hello, backend"}]


def deployment(**simulated: Any) -> DeploymentConfig:
    options = SimulatedOptions(**({"ttft_ms": 1, "tpot_ms": 0.1, "seed": 5} | simulated))
    return DeploymentConfig(name="sim-a", backend="simulated", model="upstream-sim",
                            context_window=64, simulated=options)


@pytest.fixture
async def backend() -> AsyncIterator[SimulatedBackend]:
    started = SimulatedBackend(deployment())
    await started.start()
    yield started
    async with asyncio.timeout(5):
        await started.aclose()


def test_it_is_a_backend() -> None:
    as_protocol: Backend = SimulatedBackend(deployment())
    assert as_protocol.name == "sim-a"
    assert SimulatedBackend(deployment()).model.models()["data"][0]["id"] == "upstream-sim"


async def test_complete_answers_chat_completions_and_embeddings(backend: SimulatedBackend) -> None:
    chat = await backend.complete(Operation.CHAT,
                                  {"model": "upstream-sim", "messages": HELLO, "max_tokens": 3})
    assert chat["object"] == "chat.completion"
    assert chat["usage"]["completion_tokens"] == 3
    text = await backend.complete(Operation.COMPLETIONS,
                                  {"model": "upstream-sim", "prompt": "Once", "max_tokens": 2})
    assert text["choices"][0]["text"] == "The quick"
    vectors = await backend.complete(Operation.EMBEDDINGS,
                                     {"model": "upstream-sim", "input": ["a", "b"]})
    assert len(vectors["data"]) == 2
    assert vectors["usage"]["prompt_tokens"] == 2


async def test_stream_yields_chunks_and_usage_when_asked(backend: SimulatedBackend) -> None:
    body = {"model": "upstream-sim", "messages": HELLO, "max_tokens": 4,
            "stream_options": {"include_usage": True}}
    chunks = [chunk async for chunk in backend.stream(Operation.CHAT, body)]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    unasked = [chunk async for chunk in backend.stream(Operation.CHAT, body | {
        "stream_options": None})]
    assert all("usage" not in chunk for chunk in unasked)


async def test_invalid_requests_raise_the_switchgear_errors(backend: SimulatedBackend) -> None:
    with pytest.raises(InvalidRequest):
        await backend.complete(Operation.CHAT, {"model": "upstream-sim", "messages": []})
    with pytest.raises(ContextWindowExceeded):  # the deployment's context_window is 64
        await backend.complete(Operation.COMPLETIONS,
                               {"model": "upstream-sim", "prompt": "x" * 200, "max_tokens": 32})
    with pytest.raises(InvalidRequest):
        await anext(backend.stream(Operation.EMBEDDINGS, {"model": "upstream-sim", "input": "a"}))


async def test_the_deployment_slots_limit_concurrency() -> None:
    single = SimulatedBackend(deployment(slots=1, ttft_ms=20))
    await single.start()
    body = {"model": "upstream-sim", "messages": HELLO, "max_tokens": 2}
    requests = asyncio.gather(*(single.complete(Operation.CHAT, body) for _ in range(3)))
    most_queued = 0
    async with asyncio.timeout(10):
        while not requests.done():
            assert single.model.busy_slots <= 1
            most_queued = max(most_queued, single.model.queue_depth)
            await asyncio.sleep(0.001)
        assert len(await requests) == 3
        await single.aclose()
    assert most_queued == 2


async def test_aclose_finishes_requests_in_flight_then_refuses_new_ones() -> None:
    closing = SimulatedBackend(deployment(ttft_ms=30))
    await closing.start()
    in_flight = asyncio.create_task(closing.complete(
        Operation.CHAT, {"model": "upstream-sim", "messages": HELLO, "max_tokens": 2}))
    async with asyncio.timeout(5):
        while closing.model.busy_slots == 0:  # noqa: ASYNC110 - polling the counter is the test
            await asyncio.sleep(0.001)
        await closing.aclose()
        assert in_flight.done()
        assert (await in_flight)["usage"]["completion_tokens"] == 2
    with pytest.raises(UpstreamConnectError):
        await closing.check()
    with pytest.raises(UpstreamConnectError):
        await closing.complete(Operation.CHAT, {"model": "upstream-sim", "messages": HELLO})
    await closing.start()
    await closing.check()
