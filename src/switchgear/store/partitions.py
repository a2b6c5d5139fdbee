"""PostgreSQL's daily partitions of ``request_log`` (migration 15): made ahead of the days they
hold, and dropped whole, after their rows are folded into the hourly rollups, once retention
is past them. Each function takes an asyncpg connection of the store's pool."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from switchgear.store.migrations import PARTITION_SECONDS
from switchgear.store.retention import fold

#: A daily partition's name: this and the day as YYYYMMDD (``request_log_p20261206``).
PREFIX = "request_log_p"
#: The partition that takes rows of days without one of their own.
DEFAULT = "request_log_default"
#: UTC days after today whose partitions exist before their first row arrives.
DAYS_AHEAD = 3
#: How long maintenance waits for a table lock before giving up until its next round: it must
#: not queue the writer's inserts behind it for long (a long report holds its locks meanwhile).
LOCK_TIMEOUT = "2s"

#: The daily partitions there are (the DEFAULT one too; its name has no date).
LIST_PARTITIONS = ("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                   "WHERE i.inhparent = 'request_log'::regclass")


async def partitioned(connection: Any) -> bool:
    """Whether request_log is partitioned (migration 15 applied)."""
    return bool(await connection.fetchval(
        "SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('request_log')"))


def partition_name(day_start: float) -> str:
    """The name of the partition of the UTC day starting at ``day_start``."""
    return PREFIX + datetime.fromtimestamp(day_start, UTC).strftime("%Y%m%d")


def day_start(name: str) -> float | None:
    """The start of the UTC day the partition ``name`` holds; None for another table."""
    if not name.startswith(PREFIX):
        return None
    try:
        day = datetime.strptime(name.removeprefix(PREFIX), "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return day.timestamp()


async def partition_days(connection: Any) -> dict[float, str]:
    """Each daily partition's day start → its name."""
    days = {}
    for (name,) in await connection.fetch(LIST_PARTITIONS):
        start = day_start(name)
        if start is not None:
            days[start] = name
    return days


async def create_ahead(connection: Any, now: float, lock: str) -> list[str]:
    """Make the partitions of today and the DAYS_AHEAD days after it that are missing, under
    the advisory lock ``lock`` (replicas take turns); the names made (none before migration
    15)."""
    if not await partitioned(connection):
        return []
    today = now - now % PARTITION_SECONDS
    wanted = [today + number * PARTITION_SECONDS for number in range(DAYS_AHEAD + 1)]
    existing = await partition_days(connection)
    made = []
    for start in wanted:
        if start not in existing and await create_partition(connection, start, lock):
            made.append(partition_name(start))
    return made


async def create_partition(connection: Any, start: float, lock: str) -> bool:
    """Make the partition of the UTC day starting at ``start``, moving into it the rows of that
    day the DEFAULT partition holds (a row that came before its day's partition, which
    attaching the partition would otherwise refuse); False when it was there already."""
    name = partition_name(start)
    end = start + PARTITION_SECONDS
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock)
        if await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
            return False
        await connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await connection.execute(f"CREATE TABLE {name} (LIKE request_log INCLUDING DEFAULTS)")
        await connection.execute(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
        await connection.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE received_at >= $1 AND received_at < $2 "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved", start, end)
        await connection.execute(f"ALTER TABLE request_log ATTACH PARTITION {name} "
                                 f"FOR VALUES FROM ({start!r}) TO ({end!r})")
    return True


async def expire_partitions(connection: Any, before: float, lock: str, bound_s: float) -> int:
    """Fold into the rollups, then drop, each daily partition whose day ended by ``before``,
    and fold and delete the DEFAULT partition's rows received before it; only while this
    connection holds the advisory lock ``lock``, which one replica at a time gets (0 at once
    when another has it); ``bound_s`` bounds each fold (a day's rows). How many records were
    folded."""
    if not await partitioned(connection) or not await connection.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1))", lock):
        return 0
    try:
        folded = 0
        for start, name in sorted((await partition_days(connection)).items()):
            if start + PARTITION_SECONDS <= before:
                folded += await _fold_partition(connection, name, bound_s)
        async with connection.transaction():
            await connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            prefix = (f"WITH gone AS (DELETE FROM {DEFAULT} WHERE received_at < $1 "
                      "RETURNING *) ")
            folded += _total(await connection.fetch(fold("postgresql", "gone", prefix=prefix),
                                                    before, timeout=bound_s))
        return folded
    finally:
        await connection.execute("SELECT pg_advisory_unlock(hashtext($1))", lock)


async def _fold_partition(connection: Any, name: str, bound_s: float) -> int:
    """Fold one partition into the rollups and drop it, in one transaction: its rows are
    counted either in it or in the rollups, never both, whoever reads meanwhile."""
    async with connection.transaction():
        if not await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
            return 0
        await connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # No row may arrive between the rollup and the drop: writes wait (reads go on).
        await connection.execute(f"LOCK TABLE {name} IN EXCLUSIVE MODE")
        folded = _total(await connection.fetch(fold("postgresql", name), timeout=bound_s))
        await connection.execute(f"DROP TABLE {name}")
    return folded


def _total(rows: list[Any]) -> int:
    return sum(int(row[0]) for row in rows)
