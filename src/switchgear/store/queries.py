"""Read-side queries over the request log: the newest records, and the WHERE clause of a period
and a tenant that the ledger's rollups and the latency percentile share."""

from __future__ import annotations

from dataclasses import dataclass

from switchgear.store.base import RecordStore
from switchgear.store.migrations import placeholders
from switchgear.store.records import COLUMNS, RequestRecord

#: The most rows one call returns.
MAX_ROWS = 1000
#: Seconds in a (UTC) day.
DAY = 86400


async def recent_records(store: RecordStore, tenant: str | None, limit: int) -> list[RequestRecord]:
    """The newest records, of one tenant or of all (``tenant`` None), newest first."""
    limit = max(1, min(limit, MAX_ROWS))
    columns = ", ".join(COLUMNS)
    if tenant is None:
        mark = placeholders(store.dialect, 1)
        sql = f"SELECT {columns} FROM request_log ORDER BY received_at DESC LIMIT {mark}"
        params: tuple[object, ...] = (limit,)
    else:
        tenant_mark, limit_mark = placeholders(store.dialect, 2).split(", ")
        sql = (f"SELECT {columns} FROM request_log WHERE tenant = {tenant_mark} "
               f"ORDER BY received_at DESC LIMIT {limit_mark}")
        params = (tenant, limit)
    return [RequestRecord.of_row(row) for row in await store.rows(sql, params)]


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


def where(store: RecordStore, period: Period, tenant: str | None, extra: str = ""
          ) -> tuple[str, tuple[object, ...]]:
    """The WHERE clause (and its parameters) of a period and, unless None, one tenant."""
    marks = placeholders(store.dialect, 3 if tenant is not None else 2).split(", ")
    sql = f"WHERE received_at >= {marks[0]} AND received_at < {marks[1]}"
    params: tuple[object, ...] = (period.start, period.end)
    if tenant is not None:
        sql += f" AND tenant = {marks[2]}"
        params += (tenant,)
    return sql + extra, params
