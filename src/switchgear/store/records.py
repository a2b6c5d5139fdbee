"""The request-log row: a flat projection of a finished Exchange."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from operator import attrgetter
from typing import Any

import orjson

from switchgear.exchange import Charges, Exchange
from switchgear.store.text import UNSAFE_IN_LINE, safe_line, safe_text

#: The charges of a request nothing charged for.
NO_CHARGES = Charges()


@dataclass(slots=True)
class RequestRecord:
    """One row of ``request_log``; times are seconds since the epoch. Never changed once made
    (``replace`` makes another); not frozen, as a frozen one costs a call per field to build,
    which is once per request."""

    request_id: str
    tenant: str
    model: str
    deployment: str | None
    operation: str
    stream: bool
    received_at: float
    first_token_at: float | None
    done_at: float | None
    prompt_tokens: int
    completion_tokens: int
    status: int
    error_type: str | None
    truncated: bool
    attempts: int
    cost: float
    variant: str | None = None
    key_id: str | None = None
    user_id: str | None = None
    feature: str | None = None
    priority: str | None = None
    prompt: str | None = None
    completion: str | None = None
    cache_status: str | None = None
    saved_cost: float | None = None
    finish_reason: str | None = None
    refused: bool | None = None
    schema_valid: bool | None = None
    output_passed: bool | None = None
    guard_action: str | None = None
    #: The guard checks that ran, as a JSON array.
    checks: str | None = None
    trace_id: str | None = None
    served_alias: str | None = None
    cached_tokens: int | None = None
    input_cost: float | None = None
    cached_cost: float | None = None
    output_cost: float | None = None
    instance_cost: float | None = None
    busy_s: float | None = None
    config_version: int | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    api: str | None = None
    cache_write_tokens: int | None = None

    @classmethod
    def of(cls, exchange: Exchange) -> RequestRecord:
        """Project a finished Exchange onto a row."""
        charges = exchange.charges or NO_CHARGES
        return cls(
            request_id=exchange.request_id,
            tenant=exchange.principal.tenant,
            model=exchange.model,
            deployment=exchange.deployment,
            operation=exchange.operation.value,
            stream=exchange.stream,
            received_at=exchange.received,
            first_token_at=exchange.first_token,
            done_at=exchange.done,
            prompt_tokens=exchange.usage.prompt_tokens,
            completion_tokens=exchange.usage.completion_tokens,
            status=exchange.status,
            error_type=exchange.error_type,
            truncated=exchange.truncated,
            attempts=len(exchange.attempts),
            cost=exchange.cost,
            variant=exchange.variant,
            key_id=exchange.principal.key_id,
            user_id=exchange.principal.user,
            feature=exchange.principal.feature,
            priority=exchange.priority,
            prompt=exchange.stored_prompt,
            completion=exchange.stored_completion,
            cache_status=exchange.cache_status,
            saved_cost=exchange.saved_cost,
            finish_reason=exchange.finish_reason,
            refused=exchange.refused,
            schema_valid=exchange.schema_valid,
            output_passed=exchange.output_passed,
            guard_action=exchange.guard_action,
            checks=orjson.dumps(exchange.checks).decode() if exchange.checks else None,
            trace_id=exchange.trace_id or None,
            served_alias=exchange.served_alias,
            cached_tokens=exchange.usage.cached_tokens,
            input_cost=charges.input,
            cached_cost=charges.cached,
            output_cost=charges.output,
            instance_cost=charges.instance,
            busy_s=charges.busy_s,
            config_version=exchange.config_version,
            prompt_name=exchange.prompt_name,
            prompt_version=exchange.prompt_version,
            api=exchange.api,
            cache_write_tokens=exchange.usage.cache_write_tokens,
        )

    @classmethod
    def of_row(cls, row: tuple[object, ...]) -> RequestRecord:
        """A record from a row in COLUMNS order (SQLite's 0/1 booleans become bools)."""
        values = dict(zip(COLUMNS, row, strict=True))
        values["stream"] = bool(values["stream"])
        values["truncated"] = bool(values["truncated"])
        for name in ("refused", "schema_valid", "output_passed"):
            if values[name] is not None:
                values[name] = bool(values[name])
        return cls(**values)  # type: ignore[arg-type]

    def values(self) -> tuple[object, ...]:
        """The row's values in column order."""
        values: tuple[object, ...] = _COLUMN_VALUES(self)
        return values


#: Column names of ``request_log`` in the order ``RequestRecord.values`` gives them.
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
_COLUMN_VALUES = attrgetter(*COLUMNS)

#: Characters kept of a one-line string column (a model name, a user, a reason).
FIELD_LIMIT = 256
#: Characters kept of a text column (the logged prompt and answer, the checks' JSON).
TEXT_LIMIT = 1_048_576
#: The text columns; every other string column is one line.
TEXT_COLUMNS = ("prompt", "completion", "checks")
LINE_COLUMNS = tuple(f.name for f in fields(RequestRecord)
                     if "str" in str(f.type) and f.name not in TEXT_COLUMNS)
_LINE_VALUES = attrgetter(*LINE_COLUMNS)
_TEXT_VALUES = attrgetter(*TEXT_COLUMNS)


def storable(record: RequestRecord) -> RequestRecord:
    """``record`` with every string safe to store (see ``store.text``): the record itself when
    it already is, which one join and one search over its short strings, and a search of each
    text, tell in about a microsecond."""
    lines: tuple[str | None, ...] = _LINE_VALUES(record)
    joined = "".join(filter(None, lines))
    texts: tuple[str | None, ...] = _TEXT_VALUES(record)
    if (len(joined) <= FIELD_LIMIT and UNSAFE_IN_LINE.search(joined) is None
            and all(text is None or safe_text(text, TEXT_LIMIT) is text for text in texts)):
        return record
    changes: dict[str, Any] = {}
    for name, value in zip(LINE_COLUMNS, lines, strict=True):
        if value is not None and (safe := safe_line(value, FIELD_LIMIT)) is not value:
            changes[name] = safe
    for name, value in zip(TEXT_COLUMNS, texts, strict=True):
        if value is not None and (safe := safe_text(value, TEXT_LIMIT)) is not value:
            changes[name] = safe
    return replace(record, **changes) if changes else record


def stripped(record: RequestRecord) -> RequestRecord:
    """The last form of a row a store refused even once made storable: its one-line strings
    in printable ASCII (escapes for the rest), its text columns dropped."""
    changes: dict[str, Any] = dict.fromkeys(TEXT_COLUMNS)
    for name, value in zip(LINE_COLUMNS, _LINE_VALUES(record), strict=True):
        if value is not None:
            ascii_only = value.encode("ascii", "backslashreplace").decode("ascii")
            changes[name] = safe_line(ascii_only, FIELD_LIMIT)
    return replace(record, **changes)
