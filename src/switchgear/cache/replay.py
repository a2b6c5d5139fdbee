"""Streams and whole answers, one from the other: a streamed miss is cached as a whole answer,
and a cached answer is replayed to a streaming client as a proper SSE stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from switchgear.exchange import Operation

Body = dict[str, Any]


def assemble(operation: Operation, chunks: Sequence[Body]) -> Body | None:
    """The whole answer a complete stream amounts to (None if it carried no choice)."""
    texts: list[str] = []
    finish, usage, first = None, None, None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            first = first or chunk
            delta = choice.get("delta") or {}
            text = delta.get("content") if operation is Operation.CHAT else choice.get("text")
            if isinstance(text, str):
                texts.append(text)
            finish = choice.get("finish_reason") or finish
    if first is None:
        return None
    text = "".join(texts)
    answer: Body = ({"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish} if operation is Operation.CHAT
                    else {"index": 0, "text": text, "finish_reason": finish})
    return {"id": first.get("id"), "object": "chat.completion" if operation is Operation.CHAT
            else "text_completion", "created": first.get("created", int(time.time())),
            "model": first.get("model"), "choices": [answer], "usage": usage}


async def replay(operation: Operation, body: Body) -> AsyncIterator[Body]:
    """A cached whole answer as stream chunks: the text, the finish, then the usage."""
    chat = operation is Operation.CHAT
    base = {"id": body.get("id"), "object": "chat.completion.chunk" if chat else "text_completion",
            "created": body.get("created"), "model": body.get("model")}
    for choice in body.get("choices") or ():
        index = choice.get("index", 0)
        if chat:
            content = (choice.get("message") or {}).get("content") or ""
            yield {**base, "choices": [{"index": index, "finish_reason": None,
                                        "delta": {"role": "assistant", "content": content}}]}
            yield {**base, "choices": [{"index": index, "delta": {},
                                        "finish_reason": choice.get("finish_reason")}]}
        else:
            yield {**base, "choices": [{"index": index, "text": choice.get("text") or "",
                                        "finish_reason": None}]}
            yield {**base, "choices": [{"index": index, "text": "",
                                        "finish_reason": choice.get("finish_reason")}]}
    yield {**base, "choices": [], "usage": body.get("usage")}
