"""Read-side queries over the request log: records by filter and page (keyset, newest first),
one record by its request id, and the WHERE clause of a period and a tenant that the ledger's
rollups and the latency percentile share."""

from __future__ import annotations

from dataclasses import dataclass

from switchgear.store.base import RecordStore
from switchgear.store.migrations import placeholders
from switchgear.store.records import COLUMNS, RequestRecord

#: The most rows one call returns.
MAX_ROWS = 1000
#: Seconds in a (UTC) day.
DAY = 86400
#: The columns a page of records leaves out: the stored prompt and answer (up to a megabyte
#: each); one record by its id has them.
CONTENT_COLUMNS = ("prompt", "completion")
LISTED_COLUMNS = tuple(name for name in COLUMNS if name not in CONTENT_COLUMNS)
#: A status class a filter may name, as the range of codes it covers.
STATUS_CLASSES = {"2xx": (200, 300), "3xx": (300, 400), "4xx": (400, 500), "5xx": (500, 600),
                  "error": (400, 1000)}


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records a page holds: each field None matches any value. ``since`` is inclusive,
    ``until`` exclusive; ``key_ids`` is the set of keys (an empty one matches nothing);
    ``status`` is a code or a range of codes (low inclusive, high exclusive)."""

    since: float | None = None
    until: float | None = None
    tenant: str | None = None
    key_ids: frozenset[str] | None = None
    model: str | None = None
    status: int | tuple[int, int] | None = None
    cache_status: str | None = None
    guard_action: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ends: its last record's arrival time and request id (the next page holds
    the records strictly before it in (received_at, request_id) order)."""

    received_at: float
    request_id: str


@dataclass(frozen=True, slots=True)
class RecordPage:
    """A page of records, newest first (without their content), and the cursor of the next
    page (None when this one is the last)."""

    records: list[RequestRecord]
    next: Cursor | None


class _Conditions:
    """A WHERE clause built one bound parameter at a time, in the store's dialect."""

    def __init__(self, store: RecordStore) -> None:
        self.dialect = store.dialect
        self.tests: list[str] = []
        self.params: list[object] = []

    def mark(self, value: object) -> str:
        """A placeholder bound to ``value``."""
        self.params.append(value)
        return "?" if self.dialect == "sqlite" else f"${len(self.params)}"

    def add(self, test: str) -> None:
        """AND ``test`` to the clause."""
        self.tests.append(test)

    def sql(self) -> str:
        """The clause ("" when nothing is tested)."""
        return f"WHERE {' AND '.join(self.tests)}" if self.tests else ""


async def find_records(store: RecordStore, match: RecordFilter, limit: int,
                       after: Cursor | None = None) -> RecordPage:
    """Up to ``limit`` (at most MAX_ROWS) records that ``match``, newest first, from just
    after ``after``; every value is a bound parameter."""
    limit = max(1, min(limit, MAX_ROWS))
    if match.key_ids is not None and not match.key_ids:
        return RecordPage([], None)
    where = _Conditions(store)
    for column, value in (("tenant", match.tenant), ("model", match.model),
                          ("cache_status", match.cache_status),
                          ("guard_action", match.guard_action)):
        if value is not None:
            where.add(f"{column} = {where.mark(value)}")
    if match.since is not None:
        where.add(f"received_at >= {where.mark(match.since)}")
    if match.until is not None:
        where.add(f"received_at < {where.mark(match.until)}")
    if match.key_ids is not None:
        where.add(f"key_id IN ({', '.join(where.mark(k) for k in sorted(match.key_ids))})")
    if isinstance(match.status, int):
        where.add(f"status = {where.mark(match.status)}")
    elif match.status is not None:
        low, high = match.status
        where.add(f"status >= {where.mark(low)} AND status < {where.mark(high)}")
    if after is not None:
        at = where.mark(after.received_at)
        where.add(f"(received_at < {at} OR (received_at = {where.mark(after.received_at)} "
                  f"AND request_id < {where.mark(after.request_id)}))")
    sql = (f"SELECT {', '.join(LISTED_COLUMNS)} FROM request_log {where.sql()} "
           f"ORDER BY received_at DESC, request_id DESC LIMIT {where.mark(limit + 1)}")
    rows = await store.rows(sql, where.params)
    records = [_listed(row) for row in rows[:limit]]
    last = records[-1] if len(rows) > limit else None
    return RecordPage(records, None if last is None
                      else Cursor(last.received_at, last.request_id))


async def record_of(store: RecordStore, request_id: str, tenant: str | None
                    ) -> RequestRecord | None:
    """The whole record of ``request_id`` (of ``tenant``'s unless None), content included."""
    where = _Conditions(store)
    where.add(f"request_id = {where.mark(request_id)}")
    if tenant is not None:
        where.add(f"tenant = {where.mark(tenant)}")
    rows = await store.rows(f"SELECT {', '.join(COLUMNS)} FROM request_log {where.sql()}",
                            where.params)
    return RequestRecord.of_row(rows[0]) if rows else None


def _listed(row: tuple[object, ...]) -> RequestRecord:
    """A record from a row of LISTED_COLUMNS, its content left out (None)."""
    values = dict(zip(LISTED_COLUMNS, row, strict=True))
    return RequestRecord.of_row(tuple(values.get(name) for name in COLUMNS))


@dataclass(frozen=True, slots=True)
class Period:
    """From ``start`` (inclusive) to ``end`` (exclusive), seconds since the epoch."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not self.end > self.start:
            raise ValueError("the period must end after it starts")

    @property
    def seconds(self) -> float:
        """How long it is."""
        return self.end - self.start

    def days(self) -> list[Period]:
        """The UTC days it touches, each cut to the period."""
        days = []
        day = self.start - self.start % DAY
        while day < self.end:
            days.append(Period(max(day, self.start), min(day + DAY, self.end)))
            day += DAY
        return days


def where(store: RecordStore, period: Period, tenant: str | None, extra: str = "",
          *, time: str = "received_at") -> tuple[str, tuple[object, ...]]:
    """The WHERE clause (and its parameters) of a period of the ``time`` column and, unless
    None, one tenant. The column stands bare beside bound values, so that PostgreSQL reads
    only the partitions of request_log the period covers."""
    marks = placeholders(store.dialect, 3 if tenant is not None else 2).split(", ")
    if store.dialect == "postgresql":  # else a whole-number column makes the bounds whole too
        marks[:2] = [f"{mark}::float8" for mark in marks[:2]]
    sql = f"WHERE {time} >= {marks[0]} AND {time} < {marks[1]}"
    params: tuple[object, ...] = (period.start, period.end)
    if tenant is not None:
        sql += f" AND tenant = {marks[2]}"
        params += (tenant,)
    return sql + extra, params
