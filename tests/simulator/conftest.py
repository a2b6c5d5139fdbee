"""Fixtures for the simulator tests: a fast simulator on a free loopback port and clients for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import openai
import pytest

from switchgear.simulator import ModelOptions, RunningSimulator, start_simulator

#: Every client call in these tests gives up after this many seconds.
CLIENT_TIMEOUT = 10.0

WaitUntil = Callable[[Callable[[], bool]], Awaitable[None]]


@pytest.fixture
def wait_until() -> WaitUntil:
    """Wait until a condition holds, yielding to the event loop; fail after 5 seconds."""

    async def wait(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            # Polling is the point: the condition reads counters that signal no event.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.001)

    return wait


@pytest.fixture
def fast_options() -> ModelOptions:
    """A simulated model quick enough for tests, with a fixed seed."""
    return ModelOptions(seed=7, ttft_ms=2, tpot_ms=0.5, mean_output_tokens=8)


@pytest.fixture
async def simulator(fast_options: ModelOptions) -> AsyncIterator[RunningSimulator]:
    """A simulator serving ``fast_options`` in this event loop."""
    running = await start_simulator(fast_options)
    yield running
    await running.stop()


@pytest.fixture
async def client(simulator: RunningSimulator) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official async client pointed at the simulator, without retries."""
    async with openai.AsyncOpenAI(
        base_url=simulator.base_url, api_key="test", max_retries=0, timeout=CLIENT_TIMEOUT
    ) as async_client:
        yield async_client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP session for what the OpenAI client does not cover (admin, metrics, raw SSE)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)) as session:
        yield session
