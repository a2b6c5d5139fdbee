"""Raw ASGI plumbing: read a bounded body, send JSON, send a server-sent-event stream."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, MutableMapping
from typing import Any, TypeVar

import orjson

from switchgear.errors import BodyTooLarge, InvalidRequest, SwitchgearError, UnsupportedMediaType

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")

JSON = b"application/json"
EVENT_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
DONE_EVENT = b"data: [DONE]\n\n"
#: The scope key under which the server's connection offers to tell a request that its client
#: left (a ClientWatch; gateway/connections.py sets it).
CLIENT_WATCH = "switchgear.client_watch"
#: The scope key under which ``header`` keeps a request's headers as a dict.
HEADERS = "switchgear.headers"
#: How deep arrays and objects may nest in a request body. JSON deeper than this is refused
#: (400): it is no real request, and past 254 levels it can no longer be encoded again (for a
#: model server, the cache key, the content log) nor be walked by recursive code.
MAX_JSON_DEPTH = 128


def header(scope: Scope, name: bytes) -> bytes | None:
    """The value of the request header ``name`` (lower case; the first one, if repeated), if
    present. The headers become a dict on the first lookup, kept in the scope for the rest."""
    headers: dict[bytes, bytes] | None = scope.get(HEADERS)
    if headers is None:
        headers = scope[HEADERS] = dict(reversed(scope["headers"]))
    return headers.get(name)


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    value = header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def wants_no_cache(scope: Scope) -> bool:
    """``Cache-Control: no-cache`` / ``no-store``, or ``x-switchgear-cache: bypass``."""
    control = (header(scope, b"cache-control") or b"").lower()
    return (b"no-cache" in control or b"no-store" in control
            or header(scope, b"x-switchgear-cache") == b"bypass")


def whole_number(text: str) -> bool:
    """``text`` is a whole number in ASCII digits, which ``int`` reads (``str.isdigit`` also
    accepts digits such as '²' that ``int`` refuses)."""
    return text.isascii() and text.isdigit()


async def read_json(scope: Scope, receive: Receive, limit: int) -> Any:
    """The request body parsed as JSON; refuses wrong content types, oversize and broken bodies."""
    content_type = header(scope, b"content-type")
    if content_type is None or JSON not in content_type.lower():
        raise UnsupportedMediaType("Content-Type must be application/json.")
    raw = await read_body(scope, receive, limit)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {error}") from None
    # Only a body with that many brackets can nest that deep: most are never walked.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and too_deep(body, MAX_JSON_DEPTH):
        raise InvalidRequest(f"The JSON body of your request is nested more than "
                             f"{MAX_JSON_DEPTH} levels deep.")
    return body


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | bytearray:
    """The request body, refused (413) once past ``limit`` bytes (or declared so); a body in
    one message is returned as it came, a longer one gathered in one buffer."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    body: bytes | bytearray = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        if not body and not more:
            body = chunk  # the usual case: the whole body in one message, no copy
        else:
            body = body if isinstance(body, bytearray) else bytearray(body)
            body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    return body


def too_deep(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` levels deep."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _headers(request_id: str, content_type: bytes, extra: list[tuple[bytes, bytes]]
             ) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type), (b"x-request-id", request_id.encode()), *extra]


async def send_body(send: Send, status: int, body: bytes, request_id: str,
                    content_type: bytes = JSON,
                    extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a complete response."""
    headers = _headers(request_id, content_type, extra or [])
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, body: Any, request_id: str,
                    extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send ``body`` as a JSON response (bytes: its JSON, encoded already)."""
    encoded = body if isinstance(body, bytes) else orjson.dumps(body)
    await send_body(send, status, encoded, request_id, extra=extra)


async def send_error(send: Send, error: SwitchgearError, request_id: str,
                     extra_headers: list[tuple[bytes, bytes]] | None = None,
                     shape: Callable[[SwitchgearError, str], tuple[int, Any]] | None = None
                     ) -> None:
    """Send ``error`` in OpenAI's shape, or as ``shape`` gives its status and body (another
    API's); 429 and 503 carry Retry-After."""
    extra = [*error.headers, *(extra_headers or ())]
    if error.retry_after is not None or error.status in (429, 503):
        extra.append((b"retry-after", str(max(1, round(error.retry_after or 1))).encode()))
    status, body = (error.status, error.body()) if shape is None else shape(error, request_id)
    await send_body(send, status, orjson.dumps(body), request_id, extra=extra)


def event(payload: Any) -> bytes:
    """One server-sent event carrying ``payload`` as JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def send_events(send: Send, departure: Departure, events: AsyncGenerator[bytes, None],
                      request_id: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Stream already-encoded events, stopping early when the client goes away (``departure``).

    The first event is taken before the headers go out, so the chain producing ``events`` has
    started and its clean-up runs however the stream ends: ``events`` is closed in every case.
    Events that are ready together (what one upstream read produced) go out in one write, sent
    as soon as the next event has to be waited for; the last write ends the response.
    """
    try:
        first = await anext(events, None)
        await send({"type": "http.response.start", "status": 200,
                    "headers": _headers(request_id, EVENT_STREAM_HEADERS[0][1],
                                        [*EVENT_STREAM_HEADERS[1:], *(extra or [])])})
        ready = [] if first is None else [first]
        while first is not None:
            if departure.left:
                return
            step = events.__anext__().__await__()
            try:
                waits_on = step.send(None)
            except StopIteration as got:  # ready at once: it goes out with the others
                ready.append(got.value)
                continue
            except StopAsyncIteration:
                break
            try:
                await send({"type": "http.response.body", "body": b"".join(ready),
                            "more_body": True})
            except BaseException as error:  # cancelled: the producers learn it where they wait
                await _finish(step, None, error)
                raise
            ready = [await _finish(step, waits_on)]
        await send({"type": "http.response.body", "body": b"".join(ready), "more_body": False})
    finally:
        await events.aclose()


@types.coroutine
def _finish(step: Generator[Any, None, T], waits_on: Any, error: BaseException | None = None
            ) -> Generator[Any, None, T]:
    """Go on awaiting ``step``, which has run until it had to wait on ``waits_on`` (a future,
    or None to be resumed soon). ``error``, and any error thrown into the awaiting task (its
    cancellation), is thrown into ``step`` where it waits."""
    while True:
        if error is None:
            try:
                yield waits_on
            except GeneratorExit:
                step.close()
                raise
            except BaseException as thrown:
                error = thrown
        try:
            waits_on = step.send(None) if error is None else step.throw(error)
        except StopIteration as done:
            value: T = done.value
            return value
        error = None


class Departure:
    """Tells the task answering a request that its client disconnected: while the answer is
    being made, by cancelling the task, so a model stops working for nobody (the embedded engine
    frees the slot at once); once it is ``settled``, only by ``left``, which the sending of a
    stream checks between writes.

    Made by the answering task, ``closed`` once the answer is sent. The connection the request
    came on tells it (``scope[CLIENT_WATCH]``, set by gateway/connections.py: no task per
    request); under another ASGI server a watcher task listens with ``receive`` instead.
    """

    __slots__ = ("_connection", "_task", "_waiting", "_watcher", "left")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._task = asyncio.current_task()
        self._waiting = True
        self.left = False
        self._watcher: asyncio.Future[None] | None = None
        self._connection: ClientWatch | None = scope.get(CLIENT_WATCH)
        if self._connection is None:
            self._watcher = asyncio.ensure_future(_disconnect(receive))
            self._watcher.add_done_callback(self._watched)
        elif self._connection.lost:
            self.client_left()
        else:
            self._connection.departures[self] = None

    def _watched(self, watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled():
            self.client_left()

    def client_left(self) -> None:
        """The client has gone: cancel the answering task if its answer is still being made."""
        self.left = True
        if self._waiting and self._task is not None:
            self._waiting = False
            self._task.cancel()

    def settled(self) -> None:
        """The pipeline has answered: a departure from now on no longer cancels the task."""
        self._waiting = False

    def forgive(self) -> None:
        """Take back the cancellation the client's departure caused."""
        if self._task is not None:
            self._task.uncancel()

    def close(self) -> None:
        """The answer is sent (or given up): stop watching."""
        self._waiting = False
        if self._watcher is not None:
            self._watcher.cancel()
        if self._connection is not None:
            self._connection.departures.pop(self, None)


class ClientWatch:
    """What a connection tells the requests that came on it: whether it is lost, and the
    departures to tell when it is lost."""

    __slots__ = ("departures", "lost")

    def __init__(self) -> None:
        self.lost = False
        self.departures: dict[Departure, None] = {}

    def lose(self) -> None:
        """The connection is gone: tell every departure watching it."""
        self.lost = True
        for departure in list(self.departures):
            departure.client_left()
        self.departures.clear()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
