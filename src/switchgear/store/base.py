"""The record store's contract, the error a store raises, and the SQL both stores share."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

from switchgear.store.migrations import Dialect, placeholders
from switchgear.store.records import COLUMNS, RequestRecord

REQUEST_LOG = "request_log"
#: One statement of a store's dialect and its parameters.
Statement = tuple[str, Sequence[object]]

#: ``scheme://user:password@`` and ``?password=...`` / ``&password=...`` in a URL.
USER_PASSWORD = re.compile(r"^([A-Za-z][\w+.-]*://[^:/?#@]*):[^/?#]*@")
QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")


class StoreUnavailable(Exception):
    """The store cannot be reached or written now. Its message never holds a password."""


class RecordRejected(StoreUnavailable):
    """The store refused records for what they hold (a value it cannot take), not because it
    is down: writing them again as they are would fail again."""


@runtime_checkable
class RecordStore(Protocol):
    """Where request records are kept: a SQL database with the ``request_log`` table (and the
    other tables the migrations create, reached through ``execute`` and ``rows``)."""

    dialect: Dialect

    async def open(self) -> None:
        """Connect and apply pending migrations; raise StoreUnavailable when that fails."""
        ...

    async def write(self, records: Sequence[RequestRecord], *, backlog: int = 0) -> None:
        """Write a batch in one transaction; a record already stored is skipped (the same
        request id; on PostgreSQL, whose key holds the partition key, and received_at).
        ``backlog``: records waiting behind this batch (a store that writes on a thread of this
        process hurries while it grows)."""
        ...

    async def ping(self) -> None:
        """Return if the store accepts writes now, else raise StoreUnavailable."""
        ...

    async def fetch(self, limit: int | None = None) -> list[RequestRecord]:
        """Stored records, oldest ``received_at`` first, at most ``limit`` of them."""
        ...

    async def count(self) -> int:
        """How many records are stored."""
        ...

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement of this store's dialect in its own transaction; rows affected."""
        ...

    async def execute_all(self, statements: Sequence[Statement]) -> int:
        """Run ``statements`` (SQL and parameters each) in one transaction: all take effect or
        none does; the rows they affected."""
        ...

    async def rows(self, sql: str, params: Sequence[object] = (), *,
                   report: bool = False) -> list[tuple[Any, ...]]:
        """The rows a query of this store's dialect returns; a ``report`` query (one that scans
        a whole window) gets the store's longer bound where the database applies one."""
        ...

    async def prepare(self, now: float) -> None:
        """Make ready for the records of the coming UTC days (PostgreSQL: their partitions)."""
        ...

    async def expire(self, before: float) -> int:
        """Fold the records received before ``before`` into the hourly rollups and remove
        them, each batch's rollups written in the transaction that removes it (PostgreSQL: whole
        daily partitions, by one replica at a time; SQLite: in chunks); how many were folded."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the store may be opened again."""
        ...


@dataclass(frozen=True, slots=True)
class RequestLogSQL:
    """The statements a store runs against ``request_log``, spelled for one dialect."""

    insert: str
    select: str
    select_limited: str
    count: str
    #: A write that changes nothing but is refused when the database is read-only or locked.
    write_probe: str

    @classmethod
    def of(cls, dialect: Dialect) -> RequestLogSQL:
        """The statements for ``dialect``."""
        columns = ", ".join(COLUMNS)
        select = f"SELECT {columns} FROM {REQUEST_LOG} ORDER BY received_at, request_id"
        return cls(
            insert=(f"INSERT INTO {REQUEST_LOG} ({columns}) "
                    f"VALUES ({placeholders(dialect, len(COLUMNS))}) "
                    "ON CONFLICT DO NOTHING"),
            select=select,
            select_limited=f"{select} LIMIT {placeholders(dialect, 1)}",
            count=f"SELECT count(*) FROM {REQUEST_LOG}",
            write_probe="DELETE FROM schema_migrations WHERE 1 = 0",
        )


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) as ``***``."""
    return QUERY_PASSWORD.sub(r"\1***", USER_PASSWORD.sub(r"\1:***@", url, count=1))


def url_secrets(url: str) -> tuple[str, ...]:
    """The password in ``url`` as written and as decoded, so that messages can blot it out."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    written = [userinfo.split(":", 1)[1]] if at and ":" in userinfo else []
    written += [value for name, value in parse_qsl(parts.query) if name == "password"]
    return tuple({form for secret in written for form in (secret, unquote(secret)) if form})


def describe_failure(what: str, error: BaseException, secrets: Sequence[str] = ()) -> str:
    """``what`` plus the error's type and text, with each of ``secrets`` blotted out."""
    text = f"{what}: {type(error).__name__}: {error}"
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
