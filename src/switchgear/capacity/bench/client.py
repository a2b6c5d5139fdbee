"""A lean HTTP/1.1 client for load generation: keep-alive connections on asyncio Protocols,
responses parsed by httptools, requests sent as pre-encoded bytes.

It is callback-driven on purpose: no coroutine or task per request, so one core sends thousands of
requests a second. ``ConnectionPool.submit`` hands a request to an idle connection, opens a new one
while under the cap, or queues it; every request ends in exactly one ``Outcome`` passed to the
pool's ``on_outcome`` callback, with an error kind when it failed (``http_<status>``, ``timeout``,
``connection``, ``malformed``); an HTTP error keeps its status and the start of its body, for
the message a person reads (``error_message``). Nothing is allocated per request beyond its
``Outcome``: a connection holds the state of the request in flight, and one sweep per pool checks
timeouts instead of a timer per request (16 -> 12 us of CPU per request, benchmarks/bench).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson

#: How much of an error answer's body an outcome keeps (its message is near the start).
ERROR_BODY_BYTES = 2048
TIMEOUT = "timeout"
#: Requests in flight are checked for their timeout this many times per timeout (at most once
#: a second): one sweep instead of a timer per request, so one times out at most an eighth
#: of its timeout late.
TIMEOUT_CHECKS = 8
CONNECTION = "connection"
MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where requests go: scheme, host, port and the path of the API operation."""

    host: str
    port: int
    path: str
    tls: bool = False

    @classmethod
    def of(cls, base_url: str, operation_path: str) -> Endpoint:
        """The endpoint of ``operation_path`` (e.g. ``/chat/completions``) under an
        OpenAI-style base URL such as ``http://127.0.0.1:8080/v1``."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80),
                   parts.path.rstrip("/") + operation_path, tls)

    def request_bytes(self, body: bytes, headers: dict[str, str]) -> bytes:
        """A whole ``POST`` request with ``body``, encoded once and sent as it is."""
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "Content-Type: application/json", f"Content-Length: {len(body)}",
                 *(f"{name}: {value}" for name, value in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True, slots=True)
class Request:
    """One request ready to send: its bytes, whether it streams, and its prompt's tokens."""

    data: bytes
    stream: bool
    input_tokens: int


@dataclass(slots=True)
class Outcome:
    """What happened to one request. Times are ``time.perf_counter()`` seconds; ``token_times`` are the
    arrivals of streamed chunks that carried text."""

    scheduled_at: float
    input_tokens: int
    sent_at: float = 0.0
    done_at: float = 0.0
    token_times: list[float] = field(default_factory=list)
    output_tokens: int = 0
    error: str | None = None
    status: int = 0
    error_body: bytes = b""

    @property
    def first_token_at(self) -> float | None:
        """When the first text arrived (streams only)."""
        return self.token_times[0] if self.token_times else None


OutcomeCallback = Callable[[Outcome], None]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it runs one request at a time and holds what that request's
    response has shown so far (reset by each ``send``: nothing is allocated per request)."""

    __slots__ = ("_body", "_done", "_lines", "_outcome", "_parser", "_pool", "_request",
                 "_status", "_transport", "deadline")

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._status = 0
        self._request: Request | None = None
        self._outcome: Outcome | None = None
        self._body = bytearray()
        self._lines = b""
        self._done = False
        #: When the request in flight times out (``time.perf_counter()`` seconds).
        self.deadline = 0.0

    @property
    def busy(self) -> bool:
        """Whether a request is in flight."""
        return self._outcome is not None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - servers do not upgrade a POST
            self.fail(MALFORMED)
        except httptools.HttpParserError:
            self.fail(MALFORMED)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._outcome is not None:
            self._finish(CONNECTION, time.perf_counter(), reuse=False)
        self._pool.forget(self)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self._outcome is None:
            return
        assert self._request is not None
        if self._request.stream and self._status == 200:
            self._read_events(self._outcome, body)
        else:
            self._body += body

    def on_message_complete(self) -> None:
        # Stamped before the answer is read: its latency ends when its last byte was seen.
        now = time.perf_counter()
        outcome, request = self._outcome, self._request
        if outcome is None or request is None:
            return
        if self._status != 200:
            error: str | None = f"http_{self._status}"
            outcome.status = self._status
            outcome.error_body = bytes(self._body[:ERROR_BODY_BYTES])
        elif request.stream:
            error = None if self._done else MALFORMED
        else:
            error = self._read_whole(outcome)
        self._finish(error, now, reuse=self._parser.should_keep_alive())

    # the pool's side
    def send(self, request: Request, outcome: Outcome, timeout: float) -> None:
        """Send ``request`` now; its outcome goes to the pool when the response has ended."""
        assert self._transport is not None
        self._request = request
        self._outcome = outcome
        if self._body:
            self._body.clear()
        self._lines = b""
        self._done = False
        now = time.perf_counter()
        outcome.sent_at = now
        self.deadline = now + timeout
        self._transport.write(request.data)

    def fail(self, error: str) -> None:
        """End the request in flight (if any) with ``error`` and drop the connection."""
        if self._outcome is not None:
            self._finish(error, time.perf_counter(), reuse=False)

    def close(self) -> None:
        """Close the connection (it is idle)."""
        if self._transport is not None:
            self._transport.close()

    # internals
    def _read_events(self, outcome: Outcome, data: bytes) -> None:
        now = time.perf_counter()
        lines = (self._lines + data).split(b"\n")
        self._lines = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self._done = True
                continue
            try:
                event = orjson.loads(payload)
                if _text_of(event):
                    outcome.token_times.append(now)
                usage = event.get("usage")
                if usage:
                    _read_usage(outcome, usage)
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
                self.fail(MALFORMED)
                return

    def _read_whole(self, outcome: Outcome) -> str | None:
        try:
            answer = orjson.loads(self._body)
            usage = answer.get("usage")
            if usage:
                _read_usage(outcome, usage)
            else:
                outcome.output_tokens = max(1, len(_text_of(answer)) // 4)
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            return MALFORMED
        return None

    def _finish(self, error: str | None, now: float, reuse: bool) -> None:
        outcome, request = self._outcome, self._request
        assert outcome is not None and request is not None
        self._outcome = self._request = None
        outcome.done_at = now
        outcome.error = error
        if error is None and request.stream and not outcome.output_tokens:
            outcome.output_tokens = len(outcome.token_times)
        if not reuse and self._transport is not None:
            self._transport.abort()
            self._transport = None
        self._pool.finished(self if reuse else None, outcome)


def error_message(body: bytes) -> str:
    """The message an error answer carries: OpenAI's ``error.message`` (or a ``detail`` or
    ``message``), else the start of the body as text."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("error", "detail", "message"):
            if isinstance(answer.get(key), str) and answer[key]:
                return str(answer[key])
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:200] or "(no message)"


def _read_usage(outcome: Outcome, usage: dict[str, Any]) -> None:
    """Token counts from an answer's ``usage``: the server's own count beats our estimate."""
    outcome.output_tokens = int(usage["completion_tokens"])
    outcome.input_tokens = int(usage.get("prompt_tokens") or outcome.input_tokens)


def _text_of(answer: Any) -> str:
    """The text a chat or completions answer (or stream chunk) carries, '' when none."""
    choices = answer.get("choices")
    if not choices:
        return ""
    choice = choices[0]
    if "delta" in choice:
        return choice["delta"].get("content") or ""
    if "message" in choice:
        return choice["message"].get("content") or ""
    return choice.get("text") or ""


class ConnectionPool:
    """Up to ``max_connections`` keep-alive connections to one endpoint, and the requests
    waiting for one. A request's latency counts from its ``scheduled_at``, so time spent waiting
    here (all connections busy, or a late client) is part of it. ``close`` it when done."""

    def __init__(self, endpoint: Endpoint, max_connections: int, timeout: float,
                 on_outcome: OutcomeCallback) -> None:
        self.loop = asyncio.get_running_loop()
        self._endpoint = endpoint
        self._max = max_connections
        self._timeout = timeout
        self._on_outcome = on_outcome
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiting: deque[tuple[Request, Outcome]] = deque()
        self._ssl = ssl.create_default_context() if endpoint.tls else None
        self._opening: set[asyncio.Task[None]] = set()
        self._connections: set[_Connection] = set()
        #: Requests that had to wait for a free connection, all told.
        self.queued = 0
        self._check_every = min(1.0, timeout / TIMEOUT_CHECKS)
        self._expiry = self.loop.call_later(self._check_every, self._expire)

    @property
    def waiting(self) -> int:
        """Requests queued for a free connection."""
        return len(self._waiting)

    def submit(self, request: Request, scheduled_at: float) -> None:
        """Send ``request`` as soon as a connection is free."""
        self._dispatch(request, Outcome(scheduled_at, request.input_tokens), front=False)

    def finished(self, connection: _Connection | None, outcome: Outcome) -> None:
        """A request has ended; its connection (None: it was closed) goes to the next request
        waiting, else back to the idle ones, before the outcome is told: a closed loop's next
        request then finds it idle instead of queueing for it."""
        if connection is None:
            self._open -= 1
            if self._waiting:
                request, queued = self._waiting.popleft()
                self._dispatch(request, queued, front=True)
        elif self._waiting:
            request, queued = self._waiting.popleft()
            connection.send(request, queued, self._timeout)
        else:
            self._idle.append(connection)
        self._on_outcome(outcome)

    def _dispatch(self, request: Request, outcome: Outcome, front: bool) -> None:
        if self._idle:
            self._idle.pop().send(request, outcome, self._timeout)
        elif self._open < self._max:
            self._open += 1
            task = self.loop.create_task(self._connect_and_send(request, outcome))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)
        elif front:
            self._waiting.appendleft((request, outcome))
        else:
            self.queued += 1
            self._waiting.append((request, outcome))

    def forget(self, connection: _Connection) -> None:
        """A connection has closed: drop it (and count it closed when it was idle; a busy one
        was counted when its request ended)."""
        self._connections.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
            self._open -= 1

    def _expire(self) -> None:
        now = time.perf_counter()
        for connection in [c for c in self._connections if c.busy and c.deadline <= now]:
            connection.fail(TIMEOUT)
        self._expiry = self.loop.call_later(self._check_every, self._expire)

    def close(self) -> None:
        """Close every idle connection and fail what still waits."""
        self._expiry.cancel()
        for task in self._opening:
            task.cancel()
        while self._waiting:
            _, outcome = self._waiting.popleft()
            outcome.done_at = time.perf_counter()
            outcome.error = CONNECTION
            self._on_outcome(outcome)
        for connection in list(self._idle):
            connection.close()
        self._idle.clear()

    def drop_waiting(self) -> int:
        """Forget the requests still waiting for a connection (they were never sent); how many."""
        dropped = len(self._waiting)
        self._waiting.clear()
        return dropped

    async def _connect_and_send(self, request: Request, outcome: Outcome) -> None:
        try:
            _, connection = await asyncio.wait_for(self.loop.create_connection(
                lambda: _Connection(self), self._endpoint.host, self._endpoint.port,
                ssl=self._ssl), self._timeout)
        except (TimeoutError, OSError):
            outcome.sent_at = outcome.done_at = time.perf_counter()
            outcome.error = CONNECTION
            self.finished(None, outcome)
            return
        self._connections.add(connection)
        connection.send(request, outcome, self._timeout)


async def send_one(endpoint: Endpoint, request: Request, timeout_s: float) -> Outcome:
    """Send ``request`` alone on a new connection and wait for its outcome."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Outcome] = loop.create_future()

    def on_outcome(outcome: Outcome) -> None:
        if not done.done():
            done.set_result(outcome)

    pool = ConnectionPool(endpoint, 1, timeout_s, on_outcome)
    pool.submit(request, time.perf_counter())
    try:
        return await done
    finally:
        pool.close()
