"""The exact cache's key: what shapes an answer is in it (alias, operation, tenant scope, the
answer-shaping fields), how it is delivered and who sent it are not; and which bodies are
deterministic enough to cache by default."""

from __future__ import annotations

from typing import Any

import pytest

from switchgear.cache.exact import cache_key, deterministic
from switchgear.exchange import Exchange, Operation, Principal

BODY = {"messages": [{"role": "user", "content": "Say hello"}], "temperature": 0,
        "max_tokens": 16}


def key(body: dict[str, Any] = BODY, *, alias: str = "chat", scope: str = "acme",
        operation: Operation = Operation.CHAT, key_id: str | None = None) -> str:
    exchange = Exchange(request_id="req", operation=operation, body=body, model="chat",
                        principal=Principal(key_id=key_id))
    return cache_key(exchange, alias, scope)


def test_how_an_answer_is_delivered_and_who_asked_are_not_in_the_key() -> None:
    assert key() == key({**BODY, "stream": True, "stream_options": {"include_usage": True},
                         "user": "ada", "model": "other-name"})
    assert key(key_id="k1") == key(key_id="k2")  # never the API key


def test_field_order_is_not_in_the_key() -> None:
    reordered = {"max_tokens": 16, "temperature": 0,
                 "messages": [{"content": "Say hello", "role": "user"}]}
    assert key(reordered) == key()


@pytest.mark.parametrize("changed", [
    {"max_tokens": 17},
    {"temperature": 0.5},
    {"messages": [{"role": "user", "content": "Say goodbye"}]},
    {"seed": 1},
    {"response_format": {"type": "json_object"}},
])
def test_every_answer_shaping_field_is_in_the_key(changed: dict[str, Any]) -> None:
    assert key({**BODY, **changed}) != key()


def test_alias_scope_and_operation_are_in_the_key() -> None:
    keys = {key(), key(alias="canary"), key(scope="globex"), key(scope="*"),
            key(operation=Operation.COMPLETIONS)}
    assert len(keys) == 5
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in keys)  # a sha256 in hex


@pytest.mark.parametrize(("body", "expected"), [
    ({"temperature": 0}, True),
    ({"temperature": 0.0}, True),
    ({"temperature": 1, "seed": 7}, True),
    ({"seed": 0}, True),
    ({}, False),
    ({"temperature": 0.2}, False),
    ({"temperature": 1, "seed": None}, False),
])
def test_deterministic_means_temperature_zero_or_a_seed(
        body: dict[str, Any], expected: bool) -> None:
    assert deterministic(body) is expected
