"""Streams and whole answers, one from the other: a cached answer replays as a proper stream,
and a stream assembles into the answer it amounts to."""

from __future__ import annotations

from typing import Any

import pytest

from switchgear.cache.replay import assemble, replay
from switchgear.exchange import Operation

USAGE = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
CHAT = {"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "sim",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                     "finish_reason": "length"}], "usage": USAGE}
COMPLETION = {"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "sim",
              "choices": [{"index": 0, "text": "Hello", "finish_reason": "stop"}],
              "usage": USAGE}


async def replayed(operation: Operation, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in replay(operation, body)]


async def test_a_chat_answer_replays_as_text_then_finish_then_usage() -> None:
    chunks = await replayed(Operation.CHAT, CHAT)
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 3
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {("chatcmpl-1", 7, "sim")}
    text, finish, usage = chunks
    assert text["choices"] == [{"index": 0, "finish_reason": None,
                                "delta": {"role": "assistant", "content": "Hello"}}]
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length"}]
    assert usage["choices"] == [] and usage["usage"] == USAGE


@pytest.mark.parametrize(("operation", "body"), [(Operation.CHAT, CHAT),
                                                 (Operation.COMPLETIONS, COMPLETION)])
async def test_a_replayed_answer_assembles_back_into_itself(
        operation: Operation, body: dict[str, Any]) -> None:
    assert assemble(operation, await replayed(operation, body)) == body


def test_a_stream_assembles_into_its_text_finish_and_usage() -> None:
    base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 3, "model": "m"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
              *({**base, "choices": [{"index": 0, "delta": {"content": piece}}]}
                for piece in ("Hel", "lo", "!")),
              {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
              {**base, "choices": [], "usage": USAGE}]
    assert assemble(Operation.CHAT, chunks) == {
        "id": "chatcmpl-9", "object": "chat.completion", "created": 3, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                     "finish_reason": "stop"}], "usage": USAGE}


def test_a_stream_without_a_choice_amounts_to_no_answer() -> None:
    assert assemble(Operation.CHAT, [{"id": "x", "choices": [], "usage": USAGE}]) is None
    assert assemble(Operation.CHAT, []) is None
