"""The record store's schema as an ordered list of migrations, one SQL text per dialect.

A migration, once released, never changes: a new column or index is a new migration appended to
``MIGRATIONS``. Stores apply the ``pending`` ones at open, in one transaction, and note each in
``schema_migrations`` (version, description, applied_at in seconds since the epoch).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

Dialect = Literal["sqlite", "postgresql"]
#: A row to insert, whatever its shape.
Row = TypeVar("Row")

#: Logical column types and how each dialect spells them (SQLite keeps booleans as integer 0/1).
TYPE_NAMES: Mapping[Dialect, Mapping[str, str]] = {
    "sqlite": {"text": "TEXT", "bigint": "INTEGER", "double": "REAL", "boolean": "INTEGER"},
    "postgresql": {
        "text": "TEXT",
        "bigint": "BIGINT",
        "double": "DOUBLE PRECISION",
        "boolean": "BOOLEAN",
    },
}


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a table created by a migration: name, logical type, whether it may be NULL."""

    name: str
    type: str
    nullable: bool = False

    def ddl(self, dialect: Dialect) -> str:
        """The column's definition in ``dialect``."""
        null = "" if self.nullable else " NOT NULL"
        return f"{self.name} {TYPE_NAMES[dialect][self.type]}{null}"


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: its version, what it does, and its statements per dialect."""

    version: int
    description: str
    sql: Mapping[Dialect, tuple[str, ...]]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        """The statements that apply this migration in ``dialect``."""
        return self.sql[dialect]


def create_table(
    table: str,
    columns: Iterable[Column],
    primary_key: str | None,
    dialect: Dialect,
    *,
    if_not_exists: bool = False,
) -> str:
    """``CREATE TABLE`` for ``columns`` in ``dialect`` (without a primary key when None)."""
    key = [] if primary_key is None else [f"PRIMARY KEY ({primary_key})"]
    body = ",\n    ".join([*(column.ddl(dialect) for column in columns), *key])
    guard = "IF NOT EXISTS " if if_not_exists else ""
    return f"CREATE TABLE {guard}{table} (\n    {body}\n)"


def placeholders(dialect: Dialect, count: int) -> str:
    """``count`` bind parameters as ``dialect`` writes them: ``?, ?`` or ``$1, $2``."""
    if dialect == "sqlite":
        return ", ".join("?" * count)
    return ", ".join(f"${number}" for number in range(1, count + 1))


def numbered(dialect: Dialect, sql: str) -> str:
    """``sql`` with its ``?`` marks as ``dialect`` writes bind parameters."""
    if dialect == "sqlite":
        return sql
    parts = sql.split("?")
    return parts[0] + "".join(f"${number}{part}" for number, part in enumerate(parts[1:], 1))


def values_rows(dialect: Dialect, width: int, count: int) -> str:
    """``(?, ?), (?, ?)``: ``count`` rows of ``width`` bind parameters for one INSERT."""
    marks = placeholders(dialect, width * count).split(", ")
    return ", ".join(f"({', '.join(marks[at:at + width])})" for at in range(0, len(marks), width))


def statement_slices(rows: Sequence[Row], largest: int) -> Iterator[Sequence[Row]]:
    """``rows`` in slices for multi-row INSERTs: ``largest`` at a time, the rest in power-of-two
    slices. A table is then written by a handful of distinct statements whatever the batch
    sizes: each distinct text is a statement the driver prepares and keeps (SQLite's compiled
    program of a 500-row INSERT is hundreds of kB), so one per batch size grew the gateway's
    memory for as long as new sizes turned up."""
    start = 0
    while start < len(rows):
        size = min(largest, 1 << ((len(rows) - start).bit_length() - 1))
        yield rows[start:start + size]
        start += size


def create_index(table: str, columns: tuple[str, ...]) -> str:
    """``CREATE INDEX`` named ``<table>_<columns>_idx`` (the same text in both dialects)."""
    name = "_".join((table, *columns, "idx"))
    return f"CREATE INDEX {name} ON {table} ({', '.join(columns)})"


#: request_log as migration 1 created it; frozen here even if RequestRecord changes later.
REQUEST_LOG_V1: tuple[Column, ...] = (
    Column("request_id", "text"),
    Column("tenant", "text"),
    Column("model", "text"),
    Column("deployment", "text", nullable=True),
    Column("operation", "text"),
    Column("stream", "boolean"),
    Column("received_at", "double"),
    Column("first_token_at", "double", nullable=True),
    Column("done_at", "double", nullable=True),
    Column("prompt_tokens", "bigint"),
    Column("completion_tokens", "bigint"),
    Column("status", "bigint"),
    Column("error_type", "text", nullable=True),
    Column("truncated", "boolean"),
    Column("attempts", "bigint"),
    Column("cost", "double"),
)

REQUEST_LOG_V1_INDEXES: tuple[tuple[str, ...], ...] = (
    ("received_at",),
    ("tenant", "received_at"),
    ("model", "received_at"),
)


def _request_log_v1(dialect: Dialect) -> tuple[str, ...]:
    return (
        create_table("request_log", REQUEST_LOG_V1, "request_id", dialect),
        *(create_index("request_log", columns) for columns in REQUEST_LOG_V1_INDEXES),
    )


#: Every migration, in the order it is applied; versions are 1, 2, 3, ... without gaps.
def add_column(table: str, column: Column, dialect: Dialect) -> str:
    """``ALTER TABLE ... ADD COLUMN`` (the same shape in both dialects)."""
    return f"ALTER TABLE {table} ADD COLUMN {column.ddl(dialect)}"


#: The experiment variant that served a request (NULL outside experiments).
VARIANT = Column("variant", "text", nullable=True)

#: Who asked, and for what: the key, the OpenAI ``user`` field, the feature tag, the tier.
ATTRIBUTION: tuple[Column, ...] = (
    Column("key_id", "text", nullable=True),
    Column("user_id", "text", nullable=True),
    Column("feature", "text", nullable=True),
    Column("priority", "text", nullable=True),
)

#: Prompt and completion text, stored only when ``store.log_content`` is on, and redacted.
CONTENT: tuple[Column, ...] = (Column("prompt", "text", nullable=True),
                               Column("completion", "text", nullable=True))

#: How the cache answered (hit, miss, coalesced, bypass) and the cost a hit saved.
CACHE: tuple[Column, ...] = (Column("cache_status", "text", nullable=True),
                             Column("saved_cost", "double", nullable=True))

#: How the answer ended and what the guards made of it (quality signals read these).
QUALITY: tuple[Column, ...] = (
    Column("finish_reason", "text", nullable=True),
    Column("refused", "boolean", nullable=True),
    Column("schema_valid", "boolean", nullable=True),
    Column("output_passed", "boolean", nullable=True),
    Column("guard_action", "text", nullable=True),
    Column("checks", "text", nullable=True),
)

#: The W3C trace id of the request (32 hex digits), to find its spans.
TRACE_ID = Column("trace_id", "text", nullable=True)

#: The ledger: the alias that served, cached input tokens, the cost by what it paid for, and the
#: seconds of self-hosted instance time it took (migration 10).
LEDGER: tuple[Column, ...] = (
    Column("served_alias", "text", nullable=True),
    Column("cached_tokens", "bigint", nullable=True),
    Column("input_cost", "double", nullable=True),
    Column("cached_cost", "double", nullable=True),
    Column("output_cost", "double", nullable=True),
    Column("instance_cost", "double", nullable=True),
    Column("busy_s", "double", nullable=True),
)

#: API keys: only a digest of the secret is kept; the prefix identifies a key to people.
API_KEYS: tuple[Column, ...] = (
    Column("key_id", "text"),
    Column("prefix", "text"),
    Column("digest", "text"),
    Column("tenant", "text"),
    Column("role", "text"),
    Column("name", "text"),
    Column("scopes", "text"),
    Column("feature", "text", nullable=True),
    Column("tier", "text"),
    Column("created_at", "double"),
    Column("expires_at", "double", nullable=True),
    Column("revoked_at", "double", nullable=True),
)

#: The state of each SLO alert (one row per SLO and severity), shared by replicas: a replica
#: notifies a change only if its conditional update of the row wins, so each change is sent once.
SLO_ALERTS: tuple[Column, ...] = (
    Column("slo", "text"),
    Column("severity", "text"),
    Column("state", "text"),
    Column("since", "double"),
)

#: The audit trail (governance/audit.py): one row per audited action, each holding the previous
#: row's hash and its own, an HMAC keyed with a server secret; ``seq`` orders the chain.
AUDIT_LOG: tuple[Column, ...] = (
    Column("seq", "bigint"),
    Column("at", "double"),
    Column("actor", "text"),
    Column("role", "text", nullable=True),
    Column("tenant", "text", nullable=True),
    Column("source", "text", nullable=True),
    Column("action", "text"),
    Column("target", "text", nullable=True),
    Column("details", "text"),
    Column("prev_hash", "text"),
    Column("hash", "text"),
)

#: Refuse UPDATE and DELETE on audit_log: a slip of the hand cannot rewrite the trail (someone
#: who drops the triggers can, and the hash chain then names what they changed).
APPEND_ONLY: Mapping[Dialect, tuple[str, ...]] = {
    "sqlite": tuple(
        f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
        for verb in ("UPDATE", "DELETE")),
    "postgresql": (
        "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
    ),
}

#: The config version that served a request (migration 12).
CONFIG_VERSION = Column("config_version", "bigint", nullable=True)

#: Applied config versions: the whole config as YAML, the change that made it, who applied it
#: and whether it went in by break-glass, without review.
CONFIG_VERSIONS: tuple[Column, ...] = (
    Column("version", "bigint"),
    Column("config", "text"),
    Column("change_id", "text", nullable=True),
    Column("applied_by", "text"),
    Column("applied_at", "double"),
    Column("break_glass", "boolean"),
)

#: Change requests: the proposed config, its diff against the version it was based on, the
#: review and, once applied, the version it became.
CONFIG_CHANGES: tuple[Column, ...] = (
    Column("change_id", "text"),
    Column("status", "text"),
    Column("author", "text"),
    Column("message", "text"),
    Column("created_at", "double"),
    Column("base_version", "bigint"),
    Column("config", "text"),
    Column("diff", "text"),
    Column("sections", "text"),
    Column("needs_approval", "boolean"),
    Column("rollback_of", "bigint", nullable=True),
    Column("reviewer", "text", nullable=True),
    Column("review", "text", nullable=True),
    Column("review_comment", "text", nullable=True),
    Column("reviewed_at", "double", nullable=True),
    Column("applied_version", "bigint", nullable=True),
    Column("break_glass", "boolean"),
)

#: The prompt template a request named and the version of it that served (migration 13).
PROMPT: tuple[Column, ...] = (Column("prompt_name", "text", nullable=True),
                              Column("prompt_version", "bigint", nullable=True))

#: Each config version's template version numbers, as a JSON object (migration 13).
PROMPT_VERSIONS = Column("prompt_versions", "text", nullable=True)

#: A key's own rate limits and budget, each replacing the config's per-key value (migration 14).
API_KEY_LIMITS: tuple[Column, ...] = (
    Column("rpm", "bigint", nullable=True),
    Column("tpm", "bigint", nullable=True),
    Column("daily_budget", "double", nullable=True),
    Column("monthly_budget", "double", nullable=True),
)

#: The API a request came in through, and the prompt tokens it wrote to the upstream's prompt
#: cache (migration 17).
API_AND_CACHE_WRITES: tuple[Column, ...] = (Column("api", "text", nullable=True),
                                            Column("cache_write_tokens", "bigint", nullable=True))

#: request_log's indexes as migrations 1 to 13 left them, made again on the partitioned table.
REQUEST_LOG_V14_INDEXES: tuple[tuple[str, ...], ...] = (
    *REQUEST_LOG_V1_INDEXES,
    ("variant", "received_at"),
    ("feature", "received_at"),
    ("done_at",),
    ("trace_id",),
    ("deployment", "received_at"),
    ("prompt_name", "received_at"),
)

#: Seconds in a UTC day: one partition of request_log each.
PARTITION_SECONDS = 86400

#: A daily partition for every UTC day the rows of the unpartitioned table fall on (rows too
#: far from now to name a day, if any, go to the DEFAULT partition).
_PARTITIONS_FOR_OLD_ROWS = f"""DO $$
DECLARE day bigint;
BEGIN
  FOR day IN SELECT DISTINCT floor(received_at / {PARTITION_SECONDS})::bigint FROM request_log
             WHERE received_at >= 0 AND received_at < 253402300800 LOOP
    EXECUTE format('CREATE TABLE %I PARTITION OF request_log_partitioned '
                   'FOR VALUES FROM (%s) TO (%s)',
                   'request_log_p' || to_char(to_timestamp(day * {PARTITION_SECONDS})
                                              AT TIME ZONE 'UTC', 'YYYYMMDD'),
                   day * {PARTITION_SECONDS}, (day + 1) * {PARTITION_SECONDS});
  END LOOP;
END $$"""

#: PostgreSQL: request_log becomes a table partitioned by RANGE (received_at), a partition per
#: UTC day and a DEFAULT one, its rows copied into them. Every report bounds received_at, so a
#: day's report reads a day's partition, and retention drops whole partitions. A key of a
#: partitioned table must hold the partition key: (request_id, received_at).
PARTITION_REQUEST_LOG: tuple[str, ...] = (
    "CREATE TABLE request_log_partitioned (LIKE request_log INCLUDING DEFAULTS) "
    "PARTITION BY RANGE (received_at)",
    "CREATE TABLE request_log_default PARTITION OF request_log_partitioned DEFAULT",
    _PARTITIONS_FOR_OLD_ROWS,
    "INSERT INTO request_log_partitioned SELECT * FROM request_log",
    "DROP TABLE request_log",
    "ALTER TABLE request_log_partitioned RENAME TO request_log",
    "ALTER TABLE request_log ADD PRIMARY KEY (request_id, received_at)",
    *(create_index("request_log", columns) for columns in REQUEST_LOG_V14_INDEXES),
)

#: Hourly rollups of request_log rows that retention removed: one row per hour (its start, in
#: seconds since the epoch) and group, with the sums the cost report reads. A batch of rows
#: adds its rows here in the transaction that removes it, so each request is counted in
#: exactly one of the two tables, and an hour may have several rows per group (readers sum).
REQUEST_LOG_HOURLY: tuple[Column, ...] = (
    Column("hour", "bigint"),
    Column("tenant", "text"),
    Column("feature", "text", nullable=True),
    Column("model", "text"),
    Column("served_alias", "text", nullable=True),
    Column("deployment", "text", nullable=True),
    Column("status", "bigint"),
    Column("cache_status", "text", nullable=True),
    Column("priority", "text", nullable=True),
    Column("requests", "bigint"),
    Column("prompt_tokens", "bigint"),
    Column("completion_tokens", "bigint"),
    Column("cached_tokens", "bigint"),
    Column("cost", "double"),
    Column("saved_cost", "double"),
    Column("input_cost", "double"),
    Column("cached_cost", "double"),
    Column("output_cost", "double"),
    Column("instance_cost", "double"),
    Column("busy_s", "double"),
    #: Sums and counts of end-to-end seconds and seconds to the first token of the requests
    #: that succeeded (means survive a rollup; percentiles do not).
    Column("e2e_s", "double"),
    Column("e2e_count", "bigint"),
    Column("ttft_s", "double"),
    Column("ttft_count", "bigint"),
)
#: The hourly sum of cache_write_tokens (migration 17; 0 for rows folded before it).
HOURLY_CACHE_WRITES = Column("cache_write_tokens", "bigint", nullable=True)

#: Stored Responses (``store: true`` on /v1/responses): each response, its tenant and time, and
#: the conversation before it as Responses input items (JSON) (migration 18).
STORED_RESPONSES: tuple[Column, ...] = (
    Column("response_id", "text"),
    Column("tenant", "text"),
    Column("created_at", "double"),
    Column("model", "text"),
    Column("items", "text"),
    Column("response", "text"),
)

#: The Batch API's files: the uploaded JSONL inputs and the output/error files a batch writes.
BATCH_FILES: tuple[Column, ...] = (
    Column("file_id", "text"),
    Column("tenant", "text"),
    Column("purpose", "text"),
    Column("filename", "text"),
    Column("bytes", "bigint"),
    Column("created_at", "double"),
    Column("content", "text"),
)

#: The Batch API's batches: one row each, with its state, its times and its request counts.
BATCHES: tuple[Column, ...] = (
    Column("batch_id", "text"),
    Column("tenant", "text"),
    Column("key_id", "text"),
    Column("endpoint", "text"),
    Column("input_file_id", "text"),
    Column("completion_window", "text"),
    Column("status", "text"),
    Column("created_at", "double"),
    *(Column(name, "double", nullable=True)
      for name in ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
                   "cancelling_at", "cancelled_at", "expires_at")),
    Column("output_file_id", "text", nullable=True),
    Column("error_file_id", "text", nullable=True),
    Column("total", "bigint"),
    Column("completed", "bigint"),
    Column("failed", "bigint"),
    Column("metadata", "text", nullable=True),
    Column("errors", "text", nullable=True),
)

#: One row per line of a batch's input: its request, its state and lease, and its result.
BATCH_LINES: tuple[Column, ...] = (
    Column("batch_id", "text"),
    Column("line_no", "bigint"),
    Column("custom_id", "text"),
    Column("body", "text"),
    Column("state", "text"),
    Column("lease_owner", "text", nullable=True),
    Column("lease_until", "double", nullable=True),
    Column("attempts", "bigint"),
    Column("status_code", "bigint", nullable=True),
    Column("response", "text", nullable=True),
    Column("error", "text", nullable=True),
    Column("request_id", "text", nullable=True),
    Column("done_at", "double", nullable=True),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="request_log: one row per finished request",
        sql={"sqlite": _request_log_v1("sqlite"), "postgresql": _request_log_v1("postgresql")},
    ),
    Migration(
        version=2,
        description="request_log.variant: the experiment arm that served the request",
        sql={dialect: (add_column("request_log", VARIANT, dialect),
                       create_index("request_log", ("variant", "received_at")))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=3,
        description="api_keys: hashed API keys with tenant, role, scopes and expiry",
        sql={dialect: (create_table("api_keys", API_KEYS, "key_id", dialect),
                       create_index("api_keys", ("prefix",)))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=4,
        description="request_log attribution: key, user, feature tag and priority tier",
        sql={dialect: (*(add_column("request_log", column, dialect) for column in ATTRIBUTION),
                       create_index("request_log", ("feature", "received_at")))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=5,
        description="request_log content: redacted prompt and completion, when configured",
        sql={dialect: tuple(add_column("request_log", column, dialect) for column in CONTENT)
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=6,
        description="request_log cache outcome: hit, miss, coalesced or bypass, and cost saved",
        sql={dialect: tuple(add_column("request_log", column, dialect) for column in CACHE)
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=7,
        description="request_log quality: finish reason, refusal, schema validity, guard checks",
        sql={dialect: tuple(add_column("request_log", column, dialect) for column in QUALITY)
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=8,
        description="slo: request_log by done_at for SLO windows, and the slo_alerts states",
        sql={dialect: (create_index("request_log", ("done_at",)),
                       create_table("slo_alerts", SLO_ALERTS, "slo, severity", dialect))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=9,
        description="request_log.trace_id: the request's W3C trace id",
        sql={dialect: (add_column("request_log", TRACE_ID, dialect),
                       create_index("request_log", ("trace_id",)))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=10,
        description="request_log ledger: served alias, cached tokens, cost parts, busy seconds",
        sql={dialect: (*(add_column("request_log", column, dialect) for column in LEDGER),
                       create_index("request_log", ("deployment", "received_at")))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=11,
        description="audit_log: the append-only, hash-chained audit trail",
        sql={dialect: (create_table("audit_log", AUDIT_LOG, "seq", dialect),
                       create_index("audit_log", ("action", "seq")),
                       *APPEND_ONLY[dialect])
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=12,
        description="config versions and change requests; request_log.config_version",
        sql={dialect: (create_table("config_versions", CONFIG_VERSIONS, "version", dialect),
                       create_table("config_changes", CONFIG_CHANGES, "change_id", dialect),
                       create_index("config_changes", ("created_at",)),
                       add_column("request_log", CONFIG_VERSION, dialect))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=13,
        description="managed prompts: request_log.prompt_name/prompt_version, "
                    "config_versions.prompt_versions",
        sql={dialect: (*(add_column("request_log", column, dialect) for column in PROMPT),
                       create_index("request_log", ("prompt_name", "received_at")),
                       add_column("config_versions", PROMPT_VERSIONS, dialect))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=14,
        description="api_keys: each key's own rpm, tpm and daily/monthly budget",
        sql={dialect: tuple(add_column("api_keys", column, dialect) for column in API_KEY_LIMITS)
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=15,
        description="request_log partitioned by UTC day on received_at (PostgreSQL only)",
        sql={"sqlite": (), "postgresql": PARTITION_REQUEST_LOG},
    ),
    Migration(
        version=16,
        description="request_log_hourly: hourly rollups of the rows retention removes",
        sql={dialect: (create_table("request_log_hourly", REQUEST_LOG_HOURLY, None, dialect),
                       create_index("request_log_hourly", ("hour",)),
                       create_index("request_log_hourly", ("tenant", "hour")))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=17,
        description="request_log.api (the API a request came in through), "
                    "request_log.cache_write_tokens and its hourly sum",
        sql={dialect: (*(add_column("request_log", column, dialect)
                         for column in API_AND_CACHE_WRITES),
                       add_column("request_log_hourly", HOURLY_CACHE_WRITES, dialect))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=18,
        description="stored_responses: the responses /v1/responses stored (store: true)",
        sql={dialect: (create_table("stored_responses", STORED_RESPONSES, "response_id", dialect),
                       create_index("stored_responses", ("created_at",)))
             for dialect in ("sqlite", "postgresql")},
    ),
    Migration(
        version=19,
        description="batch_files, batches and batch_lines: the Batch API's files, "
                    "batches and each batch's lines",
        sql={dialect: (create_table("batch_files", BATCH_FILES, "file_id", dialect),
                       create_index("batch_files", ("tenant", "created_at")),
                       create_table("batches", BATCHES, "batch_id", dialect),
                       create_index("batches", ("tenant", "created_at")),
                       create_index("batches", ("status",)),
                       create_table("batch_lines", BATCH_LINES, "batch_id, line_no", dialect),
                       create_index("batch_lines", ("state", "batch_id")))
             for dialect in ("sqlite", "postgresql")},
    ),
)

#: The table that remembers which migrations ran (created before any migration is applied).
CREATE_SCHEMA_MIGRATIONS: Mapping[Dialect, str] = {
    dialect: create_table(
        "schema_migrations",
        (Column("version", "bigint"), Column("description", "text"),
         Column("applied_at", "double")),
        "version",
        dialect,
        if_not_exists=True,
    )
    for dialect in ("sqlite", "postgresql")
}

SELECT_APPLIED_VERSIONS = "SELECT version FROM schema_migrations ORDER BY version"


def record_applied(dialect: Dialect) -> str:
    """The statement noting one applied migration (version, description, applied_at)."""
    return ("INSERT INTO schema_migrations (version, description, applied_at) "
            f"VALUES ({placeholders(dialect, 3)})")


def pending(applied: Iterable[int]) -> list[Migration]:
    """The migrations not yet in ``applied``, in order."""
    done = set(applied)
    return [migration for migration in MIGRATIONS if migration.version not in done]
