"""Connection-level limits, enforced before any request reaches the app (slowloris and floods).

uvicorn's httptools protocol, with a guard shared by every connection of one server: at most
``max_connections`` open, at most ``max_connections_per_client`` from one address (a new one
beyond either is closed at once, with a reset); a request's headers must arrive within
``header_timeout_s`` (else 408 and closed) and its body within ``body_timeout_s`` of them (else
closed); bytes its HTTP parser refuses (a control character in a header) get a 400, both in
OpenAI's shape, and a close. When the server is full, a new connection evicts the oldest one
still sending its headers, so idle half-requests cannot keep /healthz and honest callers out.

The hot path costs a dict update per connection and a timer per connection. Each response's head
is held until its body's first write and leaves with it (OneWriteCycle): one system call and
one TCP segment for a whole answer instead of two.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from switchgear.config import ServerConfig
from switchgear.errors import InvalidRequest, SwitchgearError
from switchgear.gateway.http import CLIENT_WATCH, ClientWatch

log = logging.getLogger("switchgear.gateway")

#: A body longer than this is written after the held head rather than copied behind it.
MOST_COPIED = 64 * 1024
#: Seconds a connection with no request running stays open once the server stops, for a request
#: a balancer may have sent on it just then.
LINGER_S = 1.0


def closing_answer(status_line: bytes, error: SwitchgearError) -> bytes:
    """A whole answer that closes its connection, ``error`` in OpenAI's shape: for what the
    protocol refuses before there is a request to answer."""
    body = orjson.dumps(error.body())
    return b"".join((status_line, b"content-type: application/json\r\ncontent-length: ",
                     str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body))


REQUEST_TIMEOUT = closing_answer(b"HTTP/1.1 408 Request Timeout\r\n", InvalidRequest(
    "The request's headers did not arrive in time.", code="request_timeout"))
NOT_HTTP = closing_answer(b"HTTP/1.1 400 Bad Request\r\n", InvalidRequest(
    "The request is not valid HTTP/1.1: a malformed request line or header (a control "
    "character in a header, say).", code="invalid_http"))


class ConnectionGuard:
    """The open connections of one server: how many in all and per client address, and which
    are still sending their headers (oldest first)."""

    def __init__(self, config: ServerConfig, max_connections: int | None = None) -> None:
        self.max_connections = max_connections or config.max_connections
        self.per_client = config.max_connections_per_client
        self.header_timeout = config.header_timeout_s
        self.body_timeout = config.body_timeout_s
        self.open = 0
        self.by_client: dict[str, int] = {}
        #: Connections waiting for a request's headers, in arrival order (a dict keeps order).
        self.waiting: dict[GuardedProtocol, None] = {}
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0

    def admit(self, client: str) -> bool:
        """Count a new connection from ``client``; False (nothing counted) when it must be
        closed: its address holds its share, or the server is full and none can be evicted."""
        held = self.by_client.get(client, 0)
        if held >= self.per_client:
            self.refused += 1
            return False
        if self.open >= self.max_connections:
            if not self.waiting:
                self.refused += 1
                return False
            self.evicted += 1
            next(iter(self.waiting)).cut_off(answer=False)
        self.open += 1
        self.by_client[client] = held + 1
        return True

    def release(self, client: str) -> None:
        """Uncount a connection from ``client`` that was admitted."""
        self.open -= 1
        held = self.by_client[client] - 1
        if held:
            self.by_client[client] = held
        else:
            del self.by_client[client]


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under a ConnectionGuard (set by ``guarded_protocol``), which
    also tells its requests when the client leaves (a ClientWatch in each request's scope)."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer = ""
        self.admitted = False
        self.deadline: asyncio.TimerHandle | None = None
        #: A request has begun and its headers are not all here yet.
        self.reading_headers = False
        self.reading_body = False
        #: Tells the requests on this connection when it is lost (gateway/http.py Departure).
        self.client_watch = ClientWatch()
        #: Set once the server stops: no request after the running one keeps it open.
        self.stopping = False
        self.linger: asyncio.TimerHandle | None = None

    @property
    def between_requests(self) -> bool:
        """No request is running on this connection (none yet, or its answer is sent)."""
        return self.cycle is None or self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.peer = self.client[0] if self.client else ""
        if not self.guard.admit(self.peer):
            transport.abort()
            return
        self.admitted = True
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        if self.linger is not None:
            self.linger.cancel()
        if self.admitted:
            self.admitted = False
            self.guard.release(self.peer)
        super().connection_lost(exc)
        self.client_watch.lose()

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            super().data_received(data)
            # A clock starts only for what is still missing after this read: most requests
            # arrive whole, and then run on no timer (a new connection's first on the one
            # started when it was made).
            if self.deadline is None and self.admitted:
                if self.reading_headers:  # a later request on a kept-alive connection
                    self._await_headers()
                elif self.reading_body:
                    self.deadline = self.loop.call_later(self.guard.body_timeout,
                                                         self._body_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[CLIENT_WATCH] = self.client_watch  # type: ignore[literal-required]
        self.reading_headers = True

    def on_headers_complete(self) -> None:
        self._stop_clock()
        self.reading_headers = False
        self.reading_body = True
        super().on_headers_complete()
        if self.stopping and self.cycle is not None:
            self.cycle.keep_alive = False

    def shutdown(self) -> None:
        """The server stops. uvicorn closes a connection with no request running at once, but a
        balancer may just have sent one on it, unread yet; closed with unread data the socket
        is reset, and the request fails unanswered (a balancer does not send a POST again).
        So such a connection stays open ``LINGER_S`` for it: a request that comes is served
        and the connection closed after its answer, and one still idle then is closed."""
        self.stopping = True
        if self.between_requests:
            self.linger = self.loop.call_later(LINGER_S, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        self.linger = None
        if self.between_requests and not self.reading_headers:
            self.transport.close()

    def on_message_complete(self) -> None:
        self._stop_clock()
        self.reading_body = False
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # uvicorn builds every cycle in on_headers_complete; each starts here, before it runs.
        if cycle.scope["method"] != "HEAD":  # a HEAD answer's body is never written
            cycle.__class__ = OneWriteCycle
        super()._start_asgi_task(cycle, app)

    def _await_headers(self) -> None:
        self.guard.waiting[self] = None
        self.deadline = self.loop.call_later(self.guard.header_timeout, self._headers_too_slow)

    def _stop_clock(self) -> None:
        self.guard.waiting.pop(self, None)
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _headers_too_slow(self) -> None:
        self.guard.timed_out += 1
        self.cut_off(answer=True)

    def _body_too_slow(self) -> None:
        self.guard.timed_out += 1
        self.cut_off(answer=False)

    def send_400_response(self, msg: str) -> None:
        """Bytes the HTTP parser refused: a 400 in OpenAI's shape (uvicorn's is plain text),
        then close."""
        self._stop_clock()
        self.transport.write(NOT_HTTP)
        self.transport.close()

    def cut_off(self, answer: bool) -> None:
        """Close this connection now; with a 408 when ``answer`` and no response is under way."""
        self._stop_clock()
        if answer and self.between_requests:
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()
        else:
            self.transport.abort()


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request-response cycle, holding the response's head (its status line and
    headers) until the first body message, whose write takes the head along."""

    held = b""

    async def send(self, message: ASGISendEvent) -> None:
        transport = self.transport
        if not self.response_started and message["type"] == "http.response.start":
            self.transport = holder = _Holder(transport)  # type: ignore[assignment]
        elif self.held:
            holder = _Holder(transport, self.held)
            self.transport, self.held = holder, b""  # type: ignore[assignment]
        else:
            await super().send(message)
            return
        try:
            await super().send(message)
        finally:
            self.transport = transport
        self.held = holder.held


class _Holder:
    """The transport as OneWriteCycle.send shows it to uvicorn's: the first write is held when
    nothing is, else it goes out after what is held, in one write when not too long."""

    __slots__ = ("held", "transport")

    def __init__(self, transport: asyncio.Transport, held: bytes = b"") -> None:
        self.transport = transport
        self.held = held

    def write(self, data: bytes) -> None:
        held, self.held = self.held, b""
        if not held:
            self.held = data
        elif len(data) <= MOST_COPIED:
            self.transport.write(held + data)
        else:
            self.transport.write(held)
            self.transport.write(data)

    def close(self) -> None:
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """The protocol class uvicorn is to use (``http=``) for the connections ``guard`` counts."""
    class Bound(GuardedProtocol):
        pass

    Bound.guard = guard
    return Bound
