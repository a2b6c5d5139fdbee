"""A featureless OpenAI-compatible proxy: the Python limit the gateway is measured against.

uvicorn (httptools, uvloop) serves ``POST /v1/chat/completions``; each body is parsed (orjson
when installed, else json), its model swapped for the upstream's and serialized again, then
POSTed over an aiohttp keep-alive session to ``--upstream``; the answer goes back as it came:
whole (not parsed), or chunk by chunk when the request asked for a stream. No auth, limits,
records, metrics or checks: what any Python gateway must at least do for a request.

    python proxy.py --port 8081 --upstream http://127.0.0.1:8080/v1 --model bench-upstream
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import aiohttp
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

Loads = Callable[[bytes], Any]
Dumps = Callable[[Any], bytes]

CHAT_PATH = "/v1/chat/completions"
#: Connections kept to the upstream at most (the gateway's deployment allows as many).
UPSTREAM_CONNECTIONS = 1024


def json_codec() -> tuple[Loads, Dumps]:
    """orjson's loads and dumps when it is installed, else json's (slower)."""
    try:
        import orjson
    except ImportError:
        return json.loads, lambda value: json.dumps(value, separators=(",", ":")).encode()
    return orjson.loads, orjson.dumps


class ChatProxy:
    """The ASGI app: forwards chat completions to ``upstream`` (a base URL ending in /v1) as
    ``model``; its client session lives from the lifespan's start to its end."""

    def __init__(self, upstream: str, model: str) -> None:
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.model = model
        self.loads, self.dumps = json_codec()
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["method"] != "POST" or scope["path"] != CHAT_PATH:
                await _answer(send, 404, b'{"error":{"message":"not found"}}')
                return
            await self._forward(await _body(receive), send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=UPSTREAM_CONNECTIONS,
                                                 keepalive_timeout=300)
                self.session = aiohttp.ClientSession(connector=connector)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, body: bytes, send: Send) -> None:
        try:
            request = self.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            await _answer(send, 400, b'{"error":{"message":"the body must be a JSON object"}}')
            return
        request["model"] = self.model
        assert self.session is not None, "lifespan not started"
        async with self.session.post(self.url, data=self.dumps(request),
                                     headers={"Content-Type": "application/json"}) as answer:
            content_type = answer.headers.get("Content-Type", "application/json").encode()
            if not request.get("stream"):
                await _answer(send, answer.status, await answer.read(), content_type)
                return
            await send({"type": "http.response.start", "status": answer.status,
                        "headers": [(b"content-type", content_type)]})
            async for chunk in answer.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


async def _body(receive: Receive) -> bytes:
    """The whole request body."""
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _answer(send: Send, status: int, body: bytes,
                  content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the proxy until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL ending in /v1")
    parser.add_argument("--model", required=True, help="the model name the upstream is asked")
    arguments = parser.parse_args(argv)
    uvicorn.run(ChatProxy(arguments.upstream, arguments.model), host=arguments.host,
                port=arguments.port, loop="uvloop", http="httptools", lifespan="on",
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
