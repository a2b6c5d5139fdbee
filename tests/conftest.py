"""Shared fixtures: configs for tests and a background loop for in-process servers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from switchgear.config import Config, parse_config
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator, start_simulator
from switchgear.store import open_store
from switchgear.store.base import RecordStore
from switchgear.store.redis import connect_redis

from servers import POSTGRES_URL, REDIS_URL, BackgroundLoop, OwnRedis, drop_schema, refused_port


@pytest.fixture
def background() -> Iterator[BackgroundLoop]:
    """A background event loop for the test's in-process servers."""
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture
def refused_url() -> Iterator[Callable[..., str]]:
    """Makes ``http://127.0.0.1:<port>`` URLs (``scheme`` to change it) that refuse connections
    for the whole test."""
    with ExitStack() as held:
        yield lambda scheme="http": f"{scheme}://127.0.0.1:{held.enter_context(refused_port())}"


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """Build a Config from a dict; the store defaults to a SQLite file in the test's tmp dir."""

    def make(models: dict[str, Any], store_url: str | None = None, **server: Any) -> Config:
        data = {
            "models": models,
            "store": {"url": store_url or f"sqlite:///{tmp_path}/records.db",
                      "flush_interval_ms": 20},
            "server": server,
        }
        return parse_config(data)

    return make


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh record store of each kind: a SQLite file, and a PostgreSQL schema dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/records.db"
        return
    schema = f"sg_test_{uuid.uuid4().hex}"
    yield f"{POSTGRES_URL}?schema={schema}"
    asyncio.run(drop_schema(schema))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[RecordStore]:
    """An opened store of each kind (``store_url``), closed after the test."""
    opened = open_store(store_url)
    await opened.open()
    yield opened
    await opened.close()


#: Quick simulated timings for tests that do not study timing.
FAST_SIMULATOR = ModelOptions(ttft_ms=2, tpot_ms=0.2, mean_output_tokens=6, seed=3)


@pytest.fixture
def simulators(background: BackgroundLoop) -> Iterator[Callable[..., RunningSimulator]]:
    """Start simulators (``simulators(options, faults, **kwargs)``) on the background loop;
    every one is stopped at the end of the test."""
    running: list[RunningSimulator] = []

    def start(options: ModelOptions = FAST_SIMULATOR, faults: Faults | None = None,
              **kwargs: Any) -> RunningSimulator:
        sim: RunningSimulator = background.run(start_simulator(options, faults, **kwargs))
        running.append(sim)
        return sim

    yield start
    for sim in running:
        background.run(sim.stop())



@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    """A client of the shared test Redis."""
    client = connect_redis(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are removed afterwards."""
    value = f"sgtest:{uuid.uuid4().hex}:"
    yield value
    asyncio.run(delete_keys(value))


async def delete_keys(prefix: str) -> None:
    """Remove every key under ``prefix`` from the test Redis."""
    client = connect_redis(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    """A running redis-server of this test's own, stopped afterwards."""
    async with OwnRedis(tmp_path) as server:
        yield server
