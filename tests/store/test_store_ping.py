"""Readiness: ping says whether the store can be written now, and never leaks a password."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from store_support import WAIT

from switchgear.store import open_store
from switchgear.store.base import RecordStore, StoreUnavailable
from switchgear.store.postgres import PostgresStore
from switchgear.store.sqlite import SQLiteStore

PASSWORD = "hunter2-Secret"


def closed_port() -> int:
    """A loopback port nothing listens on (bound once to learn a free number, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def assert_unavailable(store: RecordStore) -> None:
    """Opening and pinging both raise StoreUnavailable, without the password in the message."""
    async with asyncio.timeout(WAIT):
        with pytest.raises(StoreUnavailable) as opening:
            await store.open()
        with pytest.raises(StoreUnavailable) as pinging:
            await store.ping()
    for failure in (opening, pinging):
        assert PASSWORD not in str(failure.value)
        assert PASSWORD not in repr(failure.value)


async def test_ping_passes_on_an_open_store(store: RecordStore) -> None:
    await store.ping()


async def test_ping_fails_once_the_store_is_closed(store: RecordStore) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_sqlite_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    await assert_unavailable(SQLiteStore(tmp_path / "no-such-directory" / "records.db"))


async def test_sqlite_path_that_is_a_directory_is_unavailable(tmp_path: Path) -> None:
    await assert_unavailable(open_store(f"sqlite:///{tmp_path}"))


async def test_postgres_on_a_wrong_port_is_unavailable_and_hides_the_password() -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{closed_port()}/test"
    await assert_unavailable(PostgresStore(url, timeout=5.0))


async def test_postgres_with_a_wrong_password_hides_it() -> None:
    # Refused at login (scram-sha-256) or, where the server trusts local logins, for the missing
    # database: either way the message names neither the password nor its URL-encoded form.
    url = f"postgresql://postgres:{PASSWORD}%2F@127.0.0.1:5432/no_such_database_sg"
    await assert_unavailable(open_store(url))


def test_postgres_store_repr_hides_the_password() -> None:
    store = PostgresStore(f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test")
    assert PASSWORD not in repr(store)
