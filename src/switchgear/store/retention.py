"""Retention's SQL, the same in both dialects: folding request rows into the hourly rollups
(``request_log_hourly``), and where the rows kept begin."""

from __future__ import annotations

from switchgear.store.base import RecordStore
from switchgear.store.migrations import Dialect

ROLLUP_TABLE = "request_log_hourly"
HOUR = 3600
DAY = 86400

#: The columns a rollup row is grouped by, besides its hour.
GROUP_COLUMNS = ("tenant", "feature", "model", "served_alias", "deployment", "status",
                 "cache_status", "priority")
#: Of a request that succeeded and has the time, what the latency sums add up.
_SUCCEEDED_WITH = "CASE WHEN status = 200 AND {at} IS NOT NULL THEN {then} ELSE 0 END"
#: Each summed column of a rollup row, from the rows it stands for.
SUMS = {
    "requests": "COUNT(*)",
    "prompt_tokens": "SUM(prompt_tokens)",
    "completion_tokens": "SUM(completion_tokens)",
    "cached_tokens": "SUM(COALESCE(cached_tokens, 0))",
    "cost": "SUM(cost)",
    **{column: f"SUM(COALESCE({column}, 0))"
       for column in ("saved_cost", "input_cost", "cached_cost", "output_cost",
                      "instance_cost", "busy_s")},
    "e2e_s": "SUM(" + _SUCCEEDED_WITH.format(at="done_at", then="done_at - received_at") + ")",
    "e2e_count": "SUM(" + _SUCCEEDED_WITH.format(at="done_at", then="1") + ")",
    "ttft_s": "SUM(" + _SUCCEEDED_WITH.format(at="first_token_at",
                                              then="first_token_at - received_at") + ")",
    "ttft_count": "SUM(" + _SUCCEEDED_WITH.format(at="first_token_at", then="1") + ")",
    "cache_write_tokens": "SUM(COALESCE(cache_write_tokens, 0))",  # migration 17
}

#: The start of a row's UTC hour, in whole seconds since the epoch.
HOUR_OF: dict[Dialect, str] = {
    "sqlite": f"CAST(received_at / {HOUR} AS INTEGER) * {HOUR}",
    "postgresql": f"FLOOR(received_at / {HOUR})::BIGINT * {HOUR}",
}


def fold(dialect: Dialect, rows: str, *, prefix: str = "") -> str:
    """``INSERT`` into the rollups of the rows ``rows`` names (a table, or a table and a
    WHERE clause), grouped by hour and GROUP_COLUMNS; ``prefix`` goes first (a WITH clause).
    Returns each rollup row's ``requests``."""
    columns = ", ".join(("hour", *GROUP_COLUMNS, *SUMS))
    groups = ", ".join(GROUP_COLUMNS)
    return (f"{prefix}INSERT INTO {ROLLUP_TABLE} ({columns}) "
            f"SELECT {HOUR_OF[dialect]} AS rollup_hour, {groups}, {', '.join(SUMS.values())} "
            f"FROM {rows} GROUP BY rollup_hour, {groups} RETURNING requests")


def cutoff(now: float, retention_days: int) -> float:
    """The UTC midnight before which rows are older than ``retention_days`` (whole days
    only: a day's rows go together)."""
    oldest_kept = now - retention_days * DAY
    return oldest_kept - oldest_kept % DAY


async def rows_dropped_before(store: RecordStore) -> float | None:
    """The UTC midnight before which retention has removed the rows (kept only as sums in the
    rollups): the one after the last hour folded, as retention removes whole days (no rows
    were kept between that hour and it either); None when retention has removed nothing."""
    ((last,),) = await store.rows(f"SELECT MAX(hour) FROM {ROLLUP_TABLE}")
    return None if last is None else (float(last) // DAY + 1) * DAY
