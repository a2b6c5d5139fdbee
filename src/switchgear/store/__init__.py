"""Where request records are kept: SQLite (default) or PostgreSQL, written in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from switchgear.store.base import RecordStore, StoreUnavailable, redact_url
from switchgear.store.postgres import PostgresStore
from switchgear.store.sqlite import SQLiteStore

__all__ = ["RecordStore", "StoreUnavailable", "missing_sqlite_file", "open_store", "read_store"]

SQLITE_PREFIX = "sqlite:///"

T = TypeVar("T")


def open_store(url: str) -> RecordStore:
    """The store ``url`` names, not yet connected (``await store.open()`` does that).

    ``sqlite:///relative.db`` and ``sqlite:////absolute.db`` name a SQLite file;
    ``postgresql://...`` or ``postgres://...`` a PostgreSQL database, where ``?schema=NAME``
    picks the schema (and is not passed on to the server).
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url.removeprefix(SQLITE_PREFIX)
        if path == url or not path:
            raise ValueError(f"a SQLite URL is sqlite:///path, got {url!r}")
        return SQLiteStore(path)
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for name, value in query if name == "schema"]
        rest = urlencode([(name, value) for name, value in query if name != "schema"])
        return PostgresStore(
            urlunsplit(parts._replace(query=rest)), schema=schemas[-1] if schemas else None
        )
    raise ValueError(f"no record store for {redact_url(url)!r}: use sqlite:/// or postgresql://")


def missing_sqlite_file(url: str) -> str | None:
    """The path of the SQLite file ``url`` names when there is none (a command that only reads
    must not create it); None for an existing file or another kind of store."""
    if url.startswith(SQLITE_PREFIX) and not Path(path := url.removeprefix(SQLITE_PREFIX)).exists():
        return path
    return None


def read_store(url: str, read: Callable[[RecordStore], Awaitable[T]]) -> T:
    """Open the store ``url`` names, ``await read(store)``, close it: in an event loop of its own,
    for commands. StoreUnavailable when the store cannot be reached."""

    async def run() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await read(store)
        finally:
            await store.close()

    return asyncio.run(run())
