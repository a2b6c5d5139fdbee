"""A scripted OpenAI-compatible upstream for tests that need exact answers (the simulator makes
up filler words): every chat completion answers with the pieces it is given, one stream chunk
each, and every request body it received is kept."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from servers import BackgroundLoop, aiohttp_server


@dataclass
class Script:
    """What the upstream answers, and what it was asked."""

    pieces: list[str] = field(default_factory=lambda: ["Hello", " there."])
    finish_reason: str = "stop"
    received: list[dict[str, Any]] = field(default_factory=list)

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": "scripted",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body)}\n\n".encode()

    async def answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        usage = {"prompt_tokens": 5, "completion_tokens": len(self.pieces), "total_tokens":
                 5 + len(self.pieces)}
        if not body.get("stream"):
            return web.json_response({
                "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
                "model": "scripted", "usage": usage,
                "choices": [{"index": 0, "finish_reason": self.finish_reason,
                             "message": {"role": "assistant", "content": "".join(self.pieces)}}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(self.chunk({"role": "assistant", "content": ""}))
        for piece in self.pieces:
            await response.write(self.chunk({"content": piece}))
        await response.write(self.chunk({}, self.finish_reason))
        usage_chunk = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                       "created": int(time.time()), "model": "scripted", "choices": [],
                       "usage": usage}
        await response.write(f"data: {json.dumps(usage_chunk)}\n\ndata: [DONE]\n\n".encode())
        return response


@contextmanager
def scripted_upstream(script: Script, loop: BackgroundLoop) -> Iterator[str]:
    """Serve ``script`` on a free loopback port; yield the base URL (ending in /v1)."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", script.answer)
    with aiohttp_server(app, loop) as url:
        yield url + "/v1"
