"""Where request records are kept: SQLite (default) or PostgreSQL, written in batches."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from switchgear.store.base import RecordStore, StoreUnavailable, redact_url
from switchgear.store.postgres import PostgresStore
from switchgear.store.sqlite import SQLiteStore

__all__ = ["RecordStore", "StoreUnavailable", "open_store"]

SQLITE_PREFIX = "sqlite:///"


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
