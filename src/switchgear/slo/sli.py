"""An SLI as a query over the request log: requests and bad requests per time bucket.

A request belongs to the bucket of the time it finished (``done_at``), so a record arrives at most
the record writer's lag after its bucket, however long the request ran.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchgear.sections.slo import SLI, SLOConfig
from switchgear.store.migrations import Dialect, placeholders

#: Seconds a request is taken to run at most: the SLI also bounds ``received_at`` by this much
#: before its window, so that PostgreSQL reads only the partitions of request_log (by
#: ``received_at``) the window can hold; a request that ran longer is not counted.
LONGEST_REQUEST_S = 86400.0

#: The bucket of ``done_at`` for a bucket width, per dialect (PostgreSQL's cast would round).
_BUCKET: dict[Dialect, str] = {"sqlite": "CAST(done_at / {width!r} AS INTEGER)",
                               "postgresql": "FLOOR(done_at / {width!r})::BIGINT"}


def bad_request(sli: SLI) -> str:
    """The SQL condition of a bad request (the complement of the good ones)."""
    if sli.kind == "availability":
        return "status >= 500"
    if sli.kind == "checks":
        return "NOT output_passed"
    start = "first_token_at" if sli.measure == "ttft" else "done_at"
    return f"{start} - received_at > {sli.threshold!r}"


def counted(sli: SLI) -> str | None:
    """The SQL condition of the requests the SLI counts at all, when not every request."""
    if sli.kind == "checks":
        return "output_passed IS NOT NULL"
    return "first_token_at IS NOT NULL" if sli.measure == "ttft" and sli.kind == "latency" \
        else None


@dataclass(frozen=True, slots=True)
class BucketQuery:
    """``SELECT bucket, requests, bad requests`` of one SLO's scope, from a time on."""

    sql: str
    scope_values: tuple[str, ...]

    def params(self, since: float) -> tuple[object, ...]:
        """The parameters for requests finished at ``since`` or later."""
        return (since, since - LONGEST_REQUEST_S, *self.scope_values)


def bucket_query(objective: SLOConfig, dialect: Dialect, width: float) -> BucketQuery:
    """The query counting ``objective``'s requests per bucket of ``width`` seconds."""
    filters = objective.scope.filters()
    marks = placeholders(dialect, 2 + len(filters)).split(", ")
    conditions = [f"done_at >= {marks[0]}", f"received_at >= {marks[1]}",
                  *(f"{column} = {mark}" for column, mark in zip(filters, marks[2:], strict=True))]
    if (only := counted(objective.sli)) is not None:
        conditions.append(only)
    bucket = _BUCKET[dialect].format(width=float(width))
    sql = (f"SELECT {bucket} AS bucket, COUNT(*), "
           f"SUM(CASE WHEN {bad_request(objective.sli)} THEN 1 ELSE 0 END) "
           f"FROM request_log WHERE {' AND '.join(conditions)} GROUP BY 1")
    return BucketQuery(sql, tuple(filters.values()))
