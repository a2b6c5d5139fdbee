"""GET /admin/records and /admin/records/{request_id}: the request log by filter, a page at a time
(keyset, newest first), and one request's whole record.

Every filter is checked before it reaches the store (a bounded length, a known value or a
number; anything else is a 400 naming the parameter) and goes there as a bound parameter.
Operators and viewers see their own tenant's records only; another tenant's record is a 404, as
one that does not exist.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, get_args

import orjson

from switchgear.config import GuardAction
from switchgear.errors import InvalidRequest, NotFound
from switchgear.gateway.admin import READERS, AdminAPI, _query
from switchgear.gateway.http import Receive, Scope, Send, send_json, whole_number
from switchgear.ledger.report import parse_instant
from switchgear.pipeline.cache import OUTCOMES
from switchgear.store.queries import (
    MAX_ROWS,
    STATUS_CLASSES,
    Cursor,
    RecordFilter,
    find_records,
    record_of,
)
from switchgear.store.records import FIELD_LIMIT, RequestRecord

#: The query parameters GET /admin/records takes; any other is refused.
RECORD_FILTERS = ("since", "until", "tenant", "key", "model", "status", "cache", "guard",
                  "limit", "after")
#: The longest value a filter may have (a model name or request id is at most FIELD_LIMIT).
MAX_FILTER = FIELD_LIMIT
#: A page's size when none is asked for.
DEFAULT_PAGE = 100
GUARD_ACTIONS: tuple[str, ...] = get_args(GuardAction)


class RecordsAdmin:
    """The /admin/records endpoints."""

    def __init__(self, admin: AdminAPI) -> None:
        self.admin = admin

    async def records(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/records[?since&until&tenant&key&model&status&cache&guard&limit&after]:
        a page of records, newest first, without their stored content; ``next`` is the
        ``after`` of the page that follows (null on the last)."""
        key = await self.admin.caller(scope, READERS)
        query = _query(scope)
        unknown = sorted(set(query) - set(RECORD_FILTERS))
        if unknown:
            raise InvalidRequest(f"unknown parameter {unknown[0]!r}; /admin/records takes "
                                 f"{', '.join(RECORD_FILTERS)}", param=unknown[0])
        for name, value in query.items():
            if len(value) > MAX_FILTER:
                raise InvalidRequest(f"{name} is longer than {MAX_FILTER} characters",
                                     param=name)
        limit = query.get("limit", str(DEFAULT_PAGE))
        if not whole_number(limit):
            raise InvalidRequest("limit must be a positive integer", param="limit")
        since, until = _instant(query, "since"), _instant(query, "until")
        if since is not None and until is not None and not since < until:
            raise InvalidRequest("until must be later than since", param="until")
        match = RecordFilter(
            since=since, until=until,
            tenant=self.admin.tenant_scope(key, query.get("tenant") or None),
            key_ids=self._key_ids(query.get("key") or None), model=query.get("model") or None,
            status=_status(query.get("status") or None),
            cache_status=_choice(query, "cache", OUTCOMES),
            guard_action=_choice(query, "guard", GUARD_ACTIONS))
        after = query.get("after") or None
        page = await find_records(self.admin.state.store, match, int(limit),
                                  None if after is None else decode_cursor(after))
        await send_json(send, 200, {
            "object": "list", "data": [_listed(record) for record in page.records],
            "next": None if page.next is None else encode_cursor(page.next),
            "limit": max(1, min(int(limit), MAX_ROWS))}, request_id)

    async def record(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/records/{request_id}: one request's whole record: its trace id, config
        and prompt versions, attempts, cost, the guard checks that ran (parsed), and its
        prompt and answer where the content log stored them (null otherwise)."""
        key = await self.admin.caller(scope, READERS)
        wanted = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        if not wanted or len(wanted) > MAX_FILTER:
            raise InvalidRequest("not a request id", param="request_id")
        tenant = self.admin.tenant_scope(key, None)
        record = await record_of(self.admin.state.store, wanted, tenant)
        if record is None:
            raise NotFound(f"No record of request {wanted!r}"
                           + ("" if tenant is None else " in your tenant") + ".",
                           param="request_id")
        await send_json(send, 200, _detailed(record), request_id)

    def _key_ids(self, key: str | None) -> frozenset[str] | None:
        """The key ids a ``key`` filter names: the value itself (a key id) and the id of the
        key whose prefix it is, if any."""
        if key is None:
            return None
        return frozenset({key, *(k.key_id for k in self.admin.state.keys.all()
                                 if k.prefix == key)})


def _listed(record: RequestRecord) -> dict[str, Any]:
    """A record as a page lists it: every column but the stored content, and its latency."""
    shown = {name: getattr(record, name) for name in record.__dataclass_fields__
             if name not in ("prompt", "completion")}
    return {**shown, **_latency(record)}


def _detailed(record: RequestRecord) -> dict[str, Any]:
    """A whole record: every column, its checks as a list, its latency, whether content was
    stored."""
    shown = {name: getattr(record, name) for name in record.__dataclass_fields__}
    shown["checks"] = [] if record.checks is None else _checks(record.checks)
    shown["content_stored"] = record.prompt is not None or record.completion is not None
    return {**shown, **_latency(record)}


def _checks(text: str) -> list[Any]:
    """The checks column's JSON array (a row whose text was cut short shows it as one string)."""
    try:
        checks = orjson.loads(text)
    except orjson.JSONDecodeError:
        return [text]
    return checks if isinstance(checks, list) else [checks]


def _latency(record: RequestRecord) -> dict[str, float | None]:
    """End-to-end and time-to-first-token seconds (None where the request never got there)."""
    start = record.received_at
    return {"e2e_s": None if record.done_at is None else round(record.done_at - start, 6),
            "ttft_s": (None if record.first_token_at is None
                       else round(record.first_token_at - start, 6))}


def _instant(query: dict[str, str], name: str) -> float | None:
    """A time filter: seconds since the epoch or an ISO 8601 time; None when absent."""
    text = query.get(name)
    if not text:
        return None
    try:
        value = parse_instant(text)
    except (ValueError, OverflowError, OSError):
        value = math.nan
    if not math.isfinite(value):
        raise InvalidRequest(f"{name} must be seconds since the epoch or an ISO 8601 time",
                             param=name)
    return value


def _status(text: str | None) -> int | tuple[int, int] | None:
    """A status filter: a code (100-599) or a class (2xx, 3xx, 4xx, 5xx, error)."""
    if text is None:
        return None
    if text in STATUS_CLASSES:
        return STATUS_CLASSES[text]
    if whole_number(text) and 100 <= int(text) <= 599:
        return int(text)
    raise InvalidRequest(f"status must be a code from 100 to 599 or one of "
                         f"{', '.join(STATUS_CLASSES)}", param="status")


def _choice(query: dict[str, str], name: str, values: tuple[str, ...]) -> str | None:
    value = query.get(name) or None
    if value is not None and value not in values:
        raise InvalidRequest(f"{name} must be one of {', '.join(values)}", param=name)
    return value


def encode_cursor(cursor: Cursor) -> str:
    """The opaque ``after`` token of a cursor."""
    text = f"{cursor.received_at!r} {cursor.request_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """The cursor an ``after`` token holds; a 400 for anything ``encode_cursor`` did not make."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        at, request_id = text.split(" ", 1)
        received_at = float(at)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        received_at, request_id = math.nan, ""
    if not math.isfinite(received_at) or not request_id:
        raise InvalidRequest("after must be the next token of an earlier page", param="after")
    return Cursor(received_at, request_id)
