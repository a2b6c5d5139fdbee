"""Fixtures for the admission tests: a client of the real test Redis and a key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from switchgear.admission.state import connect_redis

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    """A client of the shared test Redis."""
    client = connect_redis(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are removed afterwards."""
    value = f"sgtest:{uuid.uuid4().hex}:"
    yield value
    keys = [key async for key in redis_client.scan_iter(match=f"{value}*")]
    if keys:
        await redis_client.delete(*keys)
