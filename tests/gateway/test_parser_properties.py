"""Property tests of the request parsers: whatever JSON a client sends, in whatever field, the
parsers answer with a valid Exchange or a SwitchgearError in the 4xx range, never another exception.
A fixed budget (derandomized, 200 examples a property) keeps them in the test command."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import hypothesis
from hypothesis import given
from hypothesis import strategies as st

from switchgear.errors import SwitchgearError
from switchgear.exchange import Exchange, Operation
from switchgear.gateway.http import read_json
from switchgear.gateway.requests import attribute, make_exchange

BUDGET = hypothesis.settings(derandomize=True, max_examples=200, deadline=None,
                             suppress_health_check=[hypothesis.HealthCheck.too_slow])

#: Any JSON value: NUL and control characters in strings, huge integers, deep-ish nesting.
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-(1 << 70), 1 << 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text()
           | st.sampled_from(["", "\x00", "sim\x00", "\u202e", "\ud7ff", "m" * 10_000]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)

#: Every field the parsers look at, and a few they pass through.
FIELDS = ["model", "messages", "prompt", "input", "max_tokens", "max_completion_tokens",
          "temperature", "top_p", "n", "presence_penalty", "frequency_penalty", "seed", "stop",
          "stream", "stream_options", "user", "logprobs", "top_logprobs", "echo", "suffix",
          "best_of", "encoding_format", "dimensions", "tools", "response_format", "x-unknown"]
VALID: dict[Operation, dict[str, Any]] = {
    Operation.CHAT: {"model": "sim", "messages": [{"role": "user", "content": "hi"}]},
    Operation.COMPLETIONS: {"model": "sim", "prompt": "hi"},
    Operation.EMBEDDINGS: {"model": "sim", "input": "hi"},
}
OPERATIONS = st.sampled_from(list(VALID))


def dumps(value: Any) -> bytes:
    """``value`` as JSON text (the stdlib: integers beyond 64 bits too, which orjson refuses)."""
    return json.dumps(value).encode()


def parsed_or_refused(operation: Operation, body: Any) -> Exchange | SwitchgearError:
    """make_exchange's Exchange, or its refusal, which must be a 4xx SwitchgearError."""
    try:
        exchange = make_exchange(operation, body, "req_test")
    except SwitchgearError as error:
        assert 400 <= error.status < 500, (error.status, error)
        assert error.body()["error"]["message"]
        return error
    assert isinstance(exchange.model, str) and exchange.model
    assert exchange.body is body
    return exchange


@BUDGET
@given(operation=OPERATIONS, body=JSON)
def test_any_json_body_is_an_exchange_or_a_4xx(operation: Operation, body: Any) -> None:
    parsed_or_refused(operation, body)


@BUDGET
@given(operation=OPERATIONS, name=st.sampled_from(FIELDS), value=JSON)
def test_any_value_in_any_field_is_an_exchange_or_a_4xx(operation: Operation, name: str,
                                                       value: Any) -> None:
    body = {**VALID[operation], name: value}
    parsed_or_refused(operation, body)


@BUDGET
@given(operation=OPERATIONS, fields=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6))
def test_any_values_in_several_fields_are_an_exchange_or_a_4xx(operation: Operation,
                                                              fields: dict[str, Any]) -> None:
    parsed_or_refused(operation, {**VALID[operation], **fields})


MESSAGE_FIELDS = st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id"])


@BUDGET
@given(messages=st.lists(st.dictionaries(MESSAGE_FIELDS, JSON, max_size=4) | JSON, max_size=4),
       parts=st.lists(st.dictionaries(st.sampled_from(["type", "text", "image_url"]),
                                      JSON | st.just("text"), max_size=3) | JSON, max_size=3))
def test_any_messages_and_content_parts_are_an_exchange_or_a_4xx(messages: list[Any],
                                                                 parts: list[Any]) -> None:
    parsed_or_refused(Operation.CHAT, {"model": "sim", "messages": messages})
    parsed_or_refused(Operation.CHAT, {"model": "sim",
                                       "messages": [{"role": "user", "content": parts}]})


@BUDGET
@given(operation=OPERATIONS, fields=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4),
       feature=st.none() | st.binary(max_size=100), priority=st.none() | st.binary(max_size=100),
       no_cache=st.booleans())
def test_attribution_takes_any_user_and_any_header_bytes(
        operation: Operation, fields: dict[str, Any], feature: bytes | None,
        priority: bytes | None, no_cache: bool) -> None:
    exchange = parsed_or_refused(operation, {**VALID[operation], **fields})
    if isinstance(exchange, Exchange):
        attribute(exchange, feature, priority, no_cache)
        assert exchange.principal.user is None or len(exchange.principal.user) <= 64
        assert exchange.principal.feature is None or len(exchange.principal.feature) <= 64


def read(raw: bytes, content_type: bytes = b"application/json", chunks: int = 1) -> Any:
    """read_json over ``raw`` sent in ``chunks`` pieces."""
    size = max(1, -(-len(raw) // chunks))
    pieces = [raw[start:start + size] for start in range(0, len(raw), size)] or [b""]
    messages = [{"type": "http.request", "body": piece, "more_body": index < len(pieces) - 1}
                for index, piece in enumerate(pieces)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    scope = {"type": "http", "headers": [(b"content-type", content_type)]}
    return asyncio.run(read_json(scope, receive, 64 * 1024))


@BUDGET
@given(raw=st.binary(max_size=300) | JSON.map(dumps)
       | st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth)
       | st.integers(1, 3000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
       chunks=st.integers(1, 4))
def test_any_bytes_are_a_json_value_or_a_4xx(raw: bytes, chunks: int) -> None:
    try:
        read(raw, chunks=chunks)
    except SwitchgearError as error:
        assert 400 <= error.status < 500, (error.status, error)


@BUDGET
@given(operation=OPERATIONS, raw=st.binary(max_size=200) | JSON.map(dumps))
def test_any_bytes_through_both_parsers_are_an_exchange_or_a_4xx(operation: Operation,
                                                                 raw: bytes) -> None:
    try:
        body = read(raw)
    except SwitchgearError as error:
        assert 400 <= error.status < 500, (error.status, error)
        return
    parsed_or_refused(operation, body)
