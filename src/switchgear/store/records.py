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
        """Project a finished Exchange onto a row. Arguments by position, in field order (by
        name they cost twice as much: the call matches each keyword); tests/store checks the
        order against the fields' names."""
        charges = exchange.charges or NO_CHARGES
        principal = exchange.principal
        usage = exchange.usage
        return cls(
            exchange.request_id, principal.tenant, exchange.model, exchange.deployment,
            exchange.operation.value, exchange.stream, exchange.received, exchange.first_token,
            exchange.done, usage.prompt_tokens, usage.completion_tokens, exchange.status,
            exchange.error_type, exchange.truncated, len(exchange.attempts), exchange.cost,
            exchange.variant, principal.key_id, principal.user, principal.feature,
            exchange.priority, exchange.stored_prompt, exchange.stored_completion,
            exchange.cache_status, exchange.saved_cost, exchange.finish_reason, exchange.refused,
            exchange.schema_valid, exchange.output_passed, exchange.guard_action,
            orjson.dumps(exchange.checks).decode() if exchange.checks else None,
            exchange.trace_id or None, exchange.served_alias, usage.cached_tokens, charges.input,
            charges.cached, charges.output, charges.instance, charges.busy_s,
            exchange.config_version, exchange.prompt_name, exchange.prompt_version, exchange.api,
            usage.cache_write_tokens,
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
#: The text columns of a record that logs no content.
NO_TEXTS = (None,) * len(TEXT_COLUMNS)


def storable(record: RequestRecord) -> RequestRecord:
    """``record`` with every string safe to store (see ``store.text``): the record itself when
    it already is, which one join and one test of its short strings, and a search of each text
    (when there are any), tell in about a microsecond. ``isprintable`` is the test: every
    character UNSAFE_IN_LINE matches is unprintable, and it is faster than the search, which
    it leaves to strings holding other unprintable characters (a no-break space)."""
    lines: tuple[str | None, ...] = _LINE_VALUES(record)
    joined = "".join(filter(None, lines))
    texts: tuple[str | None, ...] = _TEXT_VALUES(record)
    if (len(joined) <= FIELD_LIMIT
            and (joined.isprintable() or UNSAFE_IN_LINE.search(joined) is None)
            and (texts == NO_TEXTS
                 or all(text is None or safe_text(text, TEXT_LIMIT) is text for text in texts))):
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
