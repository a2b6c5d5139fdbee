"""A featureless OpenAI-compatible proxy: the Python limit the gateway is measured against.

uvicorn (httptools, uvloop) serves ``POST /v1/chat/completions``; each body is parsed (orjson
when installed, else json), its model swapped for the upstream's and serialized again, then
POSTed over an aiohttp keep-alive session to ``--upstream``; the answer goes back as it came:
whole (not parsed), or chunk by chunk when the request asked for a stream. No auth, limits,
records, metrics or checks: what any Python gateway must at least do for a request.

    python proxy.py --port 8081 --upstream http://127.0.0.1:8080/v1 --model bench-upstream

``--server aiohttp`` or ``--server granian`` serves it with aiohttp's web server or granian
(Rust, ASGI; installed by setup.sh apart from the lock) instead of uvicorn, and ``--client
switchgear`` or ``--client httpx`` forwards with Switchgear's own HTTP/1.1 client
(backends/http_client.py) or httpx2 (httpx's successor, the openai SDK's client) instead of
aiohttp's: the ``proxy-*-server`` and ``proxy-*-client`` rows measure the HTTP server and client
the gateway is built on against the alternatives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import uvicorn
import uvloop
from aiohttp import web

from switchgear.backends.http_client import ConnectionPool

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

Loads = Callable[[bytes], Any]
Dumps = Callable[[Any], bytes]

CHAT_PATH = "/v1/chat/completions"
#: Connections kept to the upstream at most (the gateway's deployment allows as many).
UPSTREAM_CONNECTIONS = 1024
#: How long an upstream answer may take with Switchgear's client or httpx2 (they need one).
UPSTREAM_DEADLINE_S = 60.0
#: The environment variable that hands granian's worker the proxy's arguments.
GRANIAN_ARGUMENTS = "BENCH_PROXY_ARGUMENTS"


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

    def __init__(self, upstream: str, model: str, client: str = "aiohttp") -> None:
        self.upstream = upstream.rstrip("/")
        self.url = self.upstream + "/chat/completions"
        self.model = model
        self.client = client
        self.loads, self.dumps = json_codec()
        self.session: aiohttp.ClientSession | None = None
        self.pool: ConnectionPool | None = None
        self.httpx: httpx2.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["method"] != "POST" or scope["path"] != CHAT_PATH:
                await _answer(send, 404, b'{"error":{"message":"not found"}}')
                return
            await self.forward(await _body(receive), send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        """Open the upstream client."""
        if self.client == "switchgear":
            self.pool = ConnectionPool(self.upstream, connect_timeout=5,
                                       headers={"Content-Type": "application/json"})
        elif self.client == "httpx":
            limits = httpx2.Limits(max_connections=UPSTREAM_CONNECTIONS,
                                   max_keepalive_connections=UPSTREAM_CONNECTIONS)
            self.httpx = httpx2.AsyncClient(limits=limits, timeout=UPSTREAM_DEADLINE_S)
        else:
            connector = aiohttp.TCPConnector(limit=UPSTREAM_CONNECTIONS, keepalive_timeout=300)
            self.session = aiohttp.ClientSession(connector=connector)

    async def stop(self) -> None:
        """Close the upstream client."""
        if self.session is not None:
            await self.session.close()
        if self.pool is not None:
            self.pool.close()
        if self.httpx is not None:
            await self.httpx.aclose()

    async def forward(self, body: bytes, send: Send) -> None:
        """Forward one chat request's ``body``; the answer goes out through ``send``."""
        try:
            request = self.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            await _answer(send, 400, b'{"error":{"message":"the body must be a JSON object"}}')
            return
        request["model"] = self.model
        if self.pool is not None:
            await self._forward_own(request, send)
            return
        if self.httpx is not None:
            await self._forward_httpx(request, send)
            return
        assert self.session is not None, "lifespan not started"
        async with self.session.post(self.url, data=self.dumps(request),
                                     headers={"Content-Type": "application/json"}) as answer:
            await _relay(send, answer.status, answer.headers.get("Content-Type"),
                         bool(request.get("stream")), answer.read, answer.content.iter_any)


    async def _forward_own(self, request: dict[str, Any], send: Send) -> None:
        """Forward with Switchgear's own client (``--client switchgear``)."""
        assert self.pool is not None
        deadline = asyncio.get_running_loop().time() + UPSTREAM_DEADLINE_S
        answer = await self.pool.request("POST", "/chat/completions", self.dumps(request),
                                         deadline)
        try:
            await _relay(send, answer.status, answer.headers.get("content-type"),
                         bool(request.get("stream")), answer.read, answer.iter_chunks)
        finally:
            answer.close()


    async def _forward_httpx(self, request: dict[str, Any], send: Send) -> None:
        """Forward with httpx2 (``--client httpx``)."""
        assert self.httpx is not None
        async with self.httpx.stream("POST", self.url, content=self.dumps(request),
                                     headers={"Content-Type": "application/json"}) as answer:
            await _relay(send, answer.status_code, answer.headers.get("content-type"),
                         bool(request.get("stream")), answer.aread, answer.aiter_raw)


async def _relay(send: Send, status: int, content_type: str | None, streamed: bool,
                 read: Callable[[], Awaitable[bytes]],
                 chunks: Callable[[], AsyncIterator[bytes]]) -> None:
    """Send the upstream's answer on: whole (``read``), or chunk by chunk when ``streamed``."""
    kind = (content_type or "application/json").encode()
    if not streamed:
        await _answer(send, status, await read(), kind)
        return
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind)]})
    async for chunk in chunks():
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
    parser.add_argument("--server", choices=("uvicorn", "aiohttp", "granian"), default="uvicorn")
    parser.add_argument("--client", choices=("aiohttp", "switchgear", "httpx"), default="aiohttp")
    arguments = parser.parse_args(argv)
    if arguments.server == "granian":
        serve_with_granian(arguments)
        return
    proxy = ChatProxy(arguments.upstream, arguments.model, arguments.client)
    if arguments.server == "aiohttp":
        uvloop.install()
        web.run_app(aiohttp_app(proxy), host=arguments.host, port=arguments.port,
                    access_log=None, print=None)
        return
    uvicorn.run(proxy, host=arguments.host, port=arguments.port, loop="uvloop",
                http="httptools", lifespan="on", access_log=False, log_level="warning")


def serve_with_granian(arguments: argparse.Namespace) -> None:
    """Serve with granian (``--server granian``): one worker process, one Rust runtime thread,
    uvloop, the ASGI interface; the worker builds the proxy with ``granian_app``."""
    from granian.constants import Interfaces, Loops  # not in the lock: setup.sh installs it
    from granian.server import Server

    os.environ[GRANIAN_ARGUMENTS] = json.dumps(
        [arguments.upstream, arguments.model, arguments.client])
    Server("proxy:granian_app", address=arguments.host, port=arguments.port,
           interface=Interfaces.ASGI, workers=1, runtime_threads=1, loop=Loops.uvloop,
           log_enabled=False, factory=True, working_dir=Path(__file__).resolve().parent).serve()


def granian_app() -> ChatProxy:
    """The app granian's worker loads: the proxy its main process was asked for."""
    upstream, model, client = json.loads(os.environ[GRANIAN_ARGUMENTS])
    return ChatProxy(upstream, model, client)


def aiohttp_app(proxy: ChatProxy) -> web.Application:
    """``proxy`` served by aiohttp's web server (``--server aiohttp``): the same forwarding,
    each request handed over as ASGI messages."""

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.set_status(message["status"])
                for name, value in message["headers"]:
                    response.headers[name.decode()] = value.decode()
                await response.prepare(request)
            else:
                await response.write(message.get("body", b""))

        await proxy.forward(await request.read(), send)
        await response.write_eof()
        return response

    async def opened(app: web.Application) -> None:
        await proxy.start()

    async def closed(app: web.Application) -> None:
        await proxy.stop()

    app = web.Application()
    app.router.add_post(CHAT_PATH, chat)
    app.on_startup.append(opened)
    app.on_cleanup.append(closed)
    return app


if __name__ == "__main__":
    main()
