"""Fixtures for the record store tests: every store test runs on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from store_support import POSTGRES_URL, StoreBench, drop_schema, make_record

from switchgear.store.base import RecordStore
from switchgear.store.records import RequestRecord


@pytest.fixture(params=["sqlite", "postgresql"])
async def bench(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBench]:
    """A fresh test database of each kind: a SQLite file in tmp_path, a PostgreSQL schema."""
    if request.param == "sqlite":
        path = tmp_path / "records.db"
        bench = StoreBench("sqlite", f"sqlite:///{path}", path=path)
    else:
        schema = f"sg_test_{uuid.uuid4().hex}"
        bench = StoreBench("postgresql", f"{POSTGRES_URL}?schema={schema}", schema=schema)
    try:
        yield bench
    finally:
        await bench.close_all()
        if bench.schema is not None:
            await drop_schema(bench.schema)


@pytest.fixture
async def store(bench: StoreBench) -> RecordStore:
    """An opened store on a fresh test database (closed by ``bench``)."""
    return await bench.opened()


@pytest.fixture
def records() -> Callable[[int], list[RequestRecord]]:
    """``records(n)``: n distinct records, received in request-id order."""
    return lambda count: [make_record(number) for number in range(count)]
