"""Shared fixtures: configs for tests and a background loop for in-process servers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from switchgear.config import Config, parse_config

from servers import POSTGRES_URL, BackgroundLoop, drop_schema


@pytest.fixture
def background() -> Iterator[BackgroundLoop]:
    """A background event loop for the test's in-process servers."""
    loop = BackgroundLoop()
    yield loop
    loop.close()


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

