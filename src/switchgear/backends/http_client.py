"""A small keep-alive HTTP/1.1 client for talking to model servers, parsed by httptools.

Measured against aiohttp on one core (benchmarks/http_stack.py), a request round trip costs about a
sixth of the CPU time, and the upstream client is the largest part of the gateway's own overhead.
It does what a gateway needs and no more: one origin per pool, pooled keep-alive connections, a
connect timeout and a deadline per request, bodies read whole or streamed chunk by chunk, TLS.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

#: A streamed body pauses reading from the socket when this many chunks wait unread.
HIGH_WATER_CHUNKS = 64


class ClientError(Exception):
    """Base of the client's errors; the backend maps them to switchgear.errors."""


class ConnectFailed(ClientError):
    """The server could not be reached (refused, unreachable, connect timeout)."""


class ConnectionClosed(ClientError):
    """The connection closed or reset before the response was complete."""

    def __init__(self, message: str, *, before_response: bool) -> None:
        super().__init__(message)
        self.before_response = before_response


class ResponseTimeout(ClientError):
    """The response did not complete before the request's deadline."""


class MalformedResponse(ClientError):
    """The server's bytes are not valid HTTP/1.1."""


def _fresh(error: ClientError) -> ClientError:
    """A new error like ``error`` (its class, message and attributes), never raised yet."""
    fresh = type(error).__new__(type(error))
    fresh.args = error.args
    fresh.__dict__.update(error.__dict__)
    return fresh


class Response:
    """A response whose status and headers have arrived; its body is read or streamed after."""

    __slots__ = ("_connection", "raw_headers", "status")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.status = 0
        #: The header lines as they came (names and values undecoded).
        self.raw_headers: list[tuple[bytes, bytes]] = []

    @property
    def headers(self) -> dict[str, str]:
        """The headers by lower-case name (the last of a repeated one wins), decoded on demand:
        only an error answer's are ever read."""
        return {name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in self.raw_headers}

    async def read(self) -> bytes:
        """The whole body."""
        connection = self._connection
        body = connection.whole_body()
        if body is not None:  # it has all arrived: nothing to wait for
            return body
        parts = []
        while (part := await connection.next_chunk()) is not None:
            parts.append(part)
        return b"".join(parts)

    async def iter_chunks(self, last: bytes = b"") -> AsyncIterator[bytes]:
        """The body's chunks as they arrive (de-chunked), and ``last`` after them if given."""
        connection = self._connection
        while True:
            item = await connection.next_chunk()
            if item is None:
                break
            yield item
        if last:
            yield last

    def close(self) -> None:
        """Give the connection back (reusable if the body was read whole) or drop it."""
        self._connection.finish()


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, carrying one request at a time."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        #: Made once connected, dropped once closed: the parser holds this protocol for its
        #: callbacks, and that reference cycle would leave every closed connection (and every
        #: failed connect) to the garbage collector.
        self._parser: httptools.HttpResponseParser | None = None
        self._transport: asyncio.Transport | None = None
        self._headers_done: asyncio.Future[None] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._response: Response | None = None
        self._complete = False
        self._keep_alive = False
        self._error: ClientError | None = None
        self._paused = False
        self.reused = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        # Bytes nobody asked for (or after the close): the connection cannot be trusted.
        if self._response is None or self._parser is None:
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(MalformedResponse(f"malformed response: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._parser = None
        if not self._complete:
            started = self._response is not None and self._response.status != 0
            self._fail(ConnectionClosed("connection closed by the server",
                                        before_response=not started))

    def pause_writing(self) -> None:
        """Writes are a request at a time; nothing to pause."""

    # httptools callbacks -----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._response is not None and self._parser is not None  # the parser calls
        self._response.status = self._parser.get_status_code()
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        if len(self._chunks) >= HIGH_WATER_CHUNKS and self._transport and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        assert self._parser is not None  # it is the parser calling
        self._keep_alive = self._parser.should_keep_alive()  # the parser forgets once reset
        self._complete = True
        self._wake()

    # the client side -----------------------------------------------------------------------------
    async def send(self, request: bytes) -> Response:
        """Write one request and wait for the response's status and headers."""
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        self._headers_done = loop.create_future()
        self._response = Response(self)
        self._complete = False
        self._error = None
        self._chunks.clear()
        self._transport.write(request)
        try:
            await self._headers_done
        finally:
            # Its exception, once raised, holds this frame (and so this connection) through
            # its traceback: a reference cycle unless the future goes.
            self._headers_done = None
        return self._response

    async def next_chunk(self) -> bytes | None:
        """The next body chunk, or None at the end of the body."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                if self._paused and len(self._chunks) < HIGH_WATER_CHUNKS // 2 and self._transport:
                    self._paused = False
                    self._transport.resume_reading()
                return chunk
            if self._error is not None:
                # A copy: the raised error's traceback holds this frame (and so this
                # connection), which would make a reference cycle with the one kept here.
                raise _fresh(self._error)
            if self._complete:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def whole_body(self) -> bytes | None:
        """The rest of the body at once when the response is complete and sound (None
        otherwise: ``next_chunk`` waits for it or raises)."""
        if not self._complete or self._error is not None:
            return None
        body = b"".join(self._chunks)
        self._chunks.clear()
        if self._paused and self._transport:
            self._paused = False
            self._transport.resume_reading()
        return body

    def expire(self) -> None:
        """The request's deadline passed: fail it and drop the connection."""
        if not self._complete:
            self._fail(ResponseTimeout("no complete response before the deadline"))

    def finish(self) -> None:
        """The caller is done with the response: pool the connection or close it."""
        self._cancel_timer()
        reusable = self._complete and self._keep_alive and self._error is None and not self.closed
        self._response = None
        if reusable:
            self.reused = True
            self._pool.release(self)
        else:
            self.abort()

    def abort(self) -> None:
        """Close the connection now."""
        self._cancel_timer()
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: ClientError) -> None:
        if self._error is None:
            self._error = error
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.set_exception(error)
        self._wake()
        if not isinstance(error, ConnectionClosed):
            self.abort()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._waiter = None


class ConnectionPool:
    """Keep-alive connections to one origin; ``request`` returns once the headers arrive."""

    def __init__(self, base_url: str, *, connect_timeout: float, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        host_header = parts.netloc
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._head = f"Host: {host_header}\r\n{extra}".encode("latin-1")
        #: Each request line seen, with the headers every request sends after it.
        self._starts: dict[tuple[str, str], bytes] = {}
        self._idle: collections.deque[Connection] = collections.deque()
        self._ssl = ssl.create_default_context() if self.https else None
        self._closed = False

    async def request(self, method: str, path: str, body: bytes, deadline: float,
                      headers: bytes = b"") -> Response:
        """Send ``method path`` with ``body``; ``deadline`` is in the event loop's clock;
        ``headers`` are extra header lines of this request (each ending in CRLF)."""
        message = b"%s%sContent-Length: %d\r\n\r\n%s" % (self._start(method, path), headers,
                                                          len(body), body)
        loop = asyncio.get_running_loop()
        while True:
            connection = self._idle_connection() or await self._connect(deadline)
            connection.timer = loop.call_at(deadline, connection.expire)
            try:
                return await connection.send(message)
            except ConnectionClosed as error:
                connection.abort()
                if connection.reused and error.before_response:
                    continue  # the server closed an idle keep-alive connection: try a fresh one
                raise
            except BaseException:
                connection.abort()
                raise

    def _start(self, method: str, path: str) -> bytes:
        """The request line of ``method path`` and the pool's headers, encoded once per pair
        (a backend asks a handful of paths)."""
        start = self._starts.get((method, path))
        if start is None:
            line = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1")
            start = self._starts[method, path] = line + self._head
        return start

    def _idle_connection(self) -> Connection | None:
        """The most recently used idle connection still open, if any."""
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _connect(self, deadline: float) -> Connection:
        """A new connection, made within the connect timeout and before ``deadline``."""
        loop = asyncio.get_running_loop()
        timeout = min(self.connect_timeout, max(0.0, deadline - loop.time()))
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(self), self.host, self.port, ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None)
        except TimeoutError:
            raise ConnectFailed(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as error:
            raise ConnectFailed(f"connect to {self.host}:{self.port} failed: "
                                f"{error.strerror or error}") from None
        return connection

    def release(self, connection: Connection) -> None:
        """Take a connection back for reuse."""
        if self._closed:
            connection.abort()
        else:
            self._idle.append(connection)

    def close(self) -> None:
        """Close the idle connections; busy ones close when they are released."""
        self._closed = True
        while self._idle:
            self._idle.pop().abort()

