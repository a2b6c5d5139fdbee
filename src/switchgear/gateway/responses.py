"""OpenAI's Responses API: ``POST /v1/responses`` through the one pipeline (an InboundAPI
adapter), and ``GET`` / ``DELETE /v1/responses/{id}`` of stored responses.

Each request gets its own adapter (``ResponseCall``), which keeps what its answer needs: the
Responses request, the conversation before it and the response's frame. A response is stored
(``store`` is true unless the request says false) off the hot path, as records are: it joins
the next write as the answer goes out (a streamed one's at ``response.completed``), and a read
here of a response not yet written waits for its write, starting it if it still gathers
(``ResponseSaves``), so a client continuing it (``previous_response_id``) at once finds it on
this replica; another replica, which cannot know of the write, reads a miss again after
``WRITE_LAG_S`` before it answers 404. A store outage
fails no answer: the response is answered unstored, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from switchgear.admission.keys import ApiKey
from switchgear.errors import InvalidRequest, NotFound, Overloaded, SwitchgearError
from switchgear.exchange import Exchange, Operation
from switchgear.gateway.http import Receive, Scope, Send, bearer_token, send_json
from switchgear.gateway.inbound import InboundAPI, openai_error
from switchgear.gateway.state import AppState
from switchgear.pipeline import Body
from switchgear.protocols.responses import (
    Item,
    ResponseEvents,
    ResponseFrame,
    chat_body,
    input_items,
    response_of,
)
from switchgear.store.base import StoreUnavailable
from switchgear.store.responses import (
    ResponseRow,
    StoredResponse,
    StoredResponses,
    response_row,
)

log = logging.getLogger("switchgear.gateway")

API_NAME = "openai.responses"
#: How long a stored response's write may take to land (its gathering, then a batch on a busy
#: store): a response not found is looked for again after this long, in case another replica
#: is writing it.
WRITE_LAG_S = 0.1
#: Stored responses waiting for their write at most (each holds its whole conversation): past
#: it, as when the store is down or far behind, responses are answered unstored.
MAX_WAITING = 1000
#: How long responses gather before their write, and so the most writes a second: one
#: statement (one trip to the store's thread) for every response answered meanwhile. Under
#: load, back-to-back writes kept the store's thread waking and taking the core from the event
#: loop; a read of a response still gathering here starts its write at once.
GATHER_S = 0.05
PREFIX = "/v1/responses/"
#: GatewayApp.infer: runs an InboundAPI's request through the pipeline.
Infer = Callable[[InboundAPI, Scope, Receive, Send, str], Awaitable[None]]


def _tenant(key: ApiKey | None) -> str:
    """The tenant a caller's stored responses belong to (``default`` in open mode)."""
    return "default" if key is None else key.tenant


def named_event(payload: Body) -> bytes:
    """A Responses stream event: its type as the SSE event name, the payload as its data."""
    return (b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload)
            + b"\n\n")


class ResponseSaves:
    """Stored responses, written in the background and together: those answered within
    ``gather_s`` of each other go in one statement, a write each ``gather_s`` at most. Each
    waits as its row (JSON text, made when it is saved), not as the objects it was made of.
    A read of a response still waiting or being written here waits for its write first, and
    a read of one still gathering starts its write at once; at most ``limit`` responses wait."""

    def __init__(self, stored: StoredResponses, limit: int = MAX_WAITING,
                 gather_s: float = GATHER_S) -> None:
        self.stored = stored
        self.limit = limit
        self.gather_s = gather_s
        #: Responses answered unstored because too many were waiting (logged once per spell).
        self.dropped = 0
        self._waiting: list[ResponseRow] = []
        #: Done once the write of the responses waiting now is over (however it went).
        self._next_write: asyncio.Future[None] | None = None
        #: Per response id not yet written: the future of the write it is in.
        self._written: dict[str, asyncio.Future[None]] = {}
        #: Set when a read waits for a response still gathering: its write starts now.
        self._wanted = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def save(self, tenant: str, response: Body, items: list[Item],
             encoded: bytes | None = None) -> None:
        """Write ``response`` (after ``items``; ``encoded``: its JSON, when made already) for
        ``tenant`` soon; not when ``limit`` responses are waiting already."""
        if len(self._waiting) >= self.limit:
            if not self.dropped:
                log.error("%d stored responses are waiting for the store: new ones are "
                          "answered but not stored until they are written", len(self._waiting))
            self.dropped += 1
            return
        self.dropped = 0
        row = response_row(tenant, response, items, encoded)
        self._waiting.append(row)
        if self._next_write is None:
            self._next_write = asyncio.get_running_loop().create_future()
        self._written[row[0]] = self._next_write
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        while self._waiting:
            await self._gathered()
            batch, self._waiting = self._waiting, []
            written, self._next_write = self._next_write, None
            try:
                await self.stored.save_many(batch)
            except StoreUnavailable as error:
                log.warning("%d responses were answered but not stored: %s", len(batch), error)
            except Exception:
                log.exception("%d responses were answered but not stored", len(batch))
            finally:
                for row in batch:
                    self._written.pop(row[0], None)
                if written is not None:
                    written.set_result(None)

    async def _gathered(self) -> None:
        """Wait ``gather_s`` for more responses to join the write, or until a read wants it."""
        if self.gather_s and not self._wanted.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.gather_s):
                    await self._wanted.wait()
        self._wanted.clear()

    async def _settled(self, response_id: str) -> None:
        written = self._written.get(response_id)
        if written is self._next_write is not None:  # still gathering: write it now
            self._wanted.set()
        if written is not None:
            await asyncio.shield(written)

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        """``tenant``'s stored response ``response_id``, once any write of it here is over
        (a miss is read again after ``WRITE_LAG_S``)."""
        await self._settled(response_id)
        found = await self.stored.get(tenant, response_id)
        if found is None:
            await asyncio.sleep(WRITE_LAG_S)
            found = await self.stored.get(tenant, response_id)
        return found

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Remove ``tenant``'s stored response ``response_id``; whether there was one (a miss
        is tried again after ``WRITE_LAG_S``)."""
        await self._settled(response_id)
        if await self.stored.delete(tenant, response_id):
            return True
        await asyncio.sleep(WRITE_LAG_S)
        return await self.stored.delete(tenant, response_id)

    async def drain(self) -> None:
        """Wait for the writes still to do (the gateway stops after them)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)


class ResponseCall:
    """The adapter of one ``POST /v1/responses`` (its InboundAPI): parses it (reading the
    response it continues), translates its answer or stream, and stores the response. Made per
    request, as its answer repeats what the request said."""

    __slots__ = ("frame", "items", "request", "request_id", "stored")

    name = API_NAME
    operation = Operation.CHAT
    credential = staticmethod(bearer_token)
    error = staticmethod(openai_error)

    def __init__(self, stored: ResponseSaves, request_id: str) -> None:
        self.stored = stored
        self.request_id = request_id
        self.request: Body = {}
        #: The conversation before the response: the one it continues, then its input.
        self.items: list[Item] = []
        self.frame: ResponseFrame | None = None

    async def parse(self, body: Any, key: ApiKey | None) -> Body:
        """The chat body for the Responses request ``body``, after the conversation its
        ``previous_response_id`` names (404 when the caller's tenant has no such response)."""
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        history: list[Item] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            if not isinstance(previous, str):
                raise InvalidRequest("previous_response_id must be a string",
                                     param="previous_response_id")
            try:
                found = await self.stored.get(_tenant(key), previous)
            except StoreUnavailable:
                raise Overloaded("Stored responses cannot be read right now; try again "
                                 "shortly.", retry_after=1) from None
            if found is None:
                raise NotFound(f"Previous response with id '{previous}' not found.",
                               param="previous_response_id")
            history = found.conversation
        chat = chat_body(body, history)
        self.request = body
        self.items = [*history, *input_items(body)]
        self.frame = ResponseFrame.of(body, self.request_id)
        return chat

    def _frame(self) -> ResponseFrame:
        if self.frame is None:
            raise RuntimeError("a Responses answer before its request was parsed")
        return self.frame

    async def reply(self, exchange: Exchange, reply: Body) -> bytes:
        """The Response object for a whole chat answer, encoded (the stored copy is the same
        JSON), stored when asked."""
        response = response_of(self._frame(), reply)
        encoded = orjson.dumps(response)
        self.save(exchange, response, encoded)
        return encoded

    def stream(self, exchange: Exchange) -> ResponseStream:
        """The encoder of the streamed answer."""
        return ResponseStream(self, exchange, ResponseEvents(self._frame()))

    def save(self, exchange: Exchange, response: Body, encoded: bytes | None = None) -> None:
        """Start storing ``response`` (``encoded``: its JSON, when made already) for the
        request's tenant, unless the request said ``store: false``."""
        if self.request.get("store") is not False:
            self.stored.save(exchange.principal.tenant, response, self.items, encoded)


class ResponseStream:
    """The Responses API's events for one stream of chat chunks (a StreamEncoder)."""

    __slots__ = ("call", "events", "exchange", "opened")

    def __init__(self, call: ResponseCall, exchange: Exchange, events: ResponseEvents) -> None:
        self.call = call
        self.exchange = exchange
        self.events = events
        self.opened = False

    def _opening(self) -> list[Body]:
        if self.opened:
            return []
        self.opened = True
        return self.events.opening()

    def chunk(self, chunk: Body) -> Iterable[bytes]:
        """``response.created`` and ``response.in_progress`` first, then each chunk's events."""
        return [named_event(event) for event in (*self._opening(), *self.events.chunk(chunk))]

    async def end(self) -> Iterable[bytes]:
        """Close the output, then ``response.completed``; the response is stored."""
        closing = [*self._opening(), *self.events.closing()]
        if self.events.response is not None:
            self.call.save(self.exchange, self.events.response)
        return [named_event(event) for event in closing]

    def fail(self, error: SwitchgearError) -> Iterable[bytes]:
        """An ``error`` event and ``response.failed``."""
        return [named_event(event) for event in (*self._opening(), *self.events.failure(error))]


class ResponsesAPI:
    """The Responses endpoints over ``state``'s store; ``infer`` runs a request's adapter."""

    def __init__(self, state: AppState, infer: Infer) -> None:
        self.state = state
        self.infer = infer
        self.stored = ResponseSaves(StoredResponses(
            state.store, state.local.store.responses_retention_days))

    async def drain(self) -> None:
        """Wait for the stored responses still being written."""
        await self.stored.drain()

    async def create(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """POST /v1/responses."""
        await self.infer(ResponseCall(self.stored, request_id), scope, receive, send,
                         request_id)

    async def _target(self, scope: Scope) -> tuple[str, str]:
        """The caller's tenant and the response id the path names (404 for a deeper path)."""
        key = await self.state.authenticator.caller(bearer_token(scope))
        response_id = scope["path"].rstrip("/")[len(PREFIX):]
        if not response_id or "/" in response_id:
            raise NotFound(f"Unknown path: {scope['path']}")
        return _tenant(key), response_id

    async def retrieve(self, scope: Scope, receive: Receive, send: Send,
                       request_id: str) -> None:
        """GET /v1/responses/{id}: the stored response."""
        tenant, response_id = await self._target(scope)
        found = await self.stored.get(tenant, response_id)
        if found is None:
            raise _missing(response_id)
        await send_json(send, 200, found.response, request_id)

    async def delete(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """DELETE /v1/responses/{id}."""
        tenant, response_id = await self._target(scope)
        if not await self.stored.delete(tenant, response_id):
            raise _missing(response_id)
        await send_json(send, 200, {"id": response_id, "object": "response.deleted",
                                    "deleted": True}, request_id)


def _missing(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")
