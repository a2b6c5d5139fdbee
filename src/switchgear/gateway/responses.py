"""OpenAI's Responses API: ``POST /v1/responses`` through the one pipeline (an InboundAPI
adapter), and ``GET`` / ``DELETE /v1/responses/{id}`` of stored responses.

Each request gets its own adapter (``ResponseCall``), which keeps what its answer needs: the
Responses request, the conversation before it and the response's frame. A response is stored
(``store`` is true unless the request says false) before it is answered, or, streamed, before
``response.completed`` is sent: a client may continue it (``previous_response_id``) as soon as
it has it. A store outage fails no answer: the response is answered unstored, with a warning.
"""

from __future__ import annotations

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
from switchgear.store.responses import StoredResponses

log = logging.getLogger("switchgear.gateway")

API_NAME = "openai.responses"
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


class ResponseCall:
    """The adapter of one ``POST /v1/responses``: parses it (reading the response it
    continues), translates its answer or stream, and stores the response."""

    def __init__(self, stored: StoredResponses, request_id: str) -> None:
        self.stored = stored
        self.request_id = request_id
        self.request: Body = {}
        #: The conversation before the response: the one it continues, then its input.
        self.items: list[Item] = []
        self.frame: ResponseFrame | None = None
        self.api = InboundAPI(name=API_NAME, operation=Operation.CHAT, credential=bearer_token,
                              parse=self.parse, reply=self.reply, stream=self.events,
                              error=openai_error)

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

    async def reply(self, exchange: Exchange, reply: Body) -> Body:
        """The Response object for a whole chat answer, stored when asked."""
        response = response_of(self._frame(), reply)
        await self.save(exchange, response)
        return response

    def events(self, exchange: Exchange) -> ResponseStream:
        """The encoder of the streamed answer."""
        return ResponseStream(self, exchange, ResponseEvents(self._frame()))

    async def save(self, exchange: Exchange, response: Body) -> None:
        """Store ``response`` for the request's tenant, unless the request said ``store:
        false``; a store outage is logged, not answered."""
        if self.request.get("store") is False:
            return
        try:
            await self.stored.save(exchange.principal.tenant, response, self.items)
        except StoreUnavailable as error:
            log.warning("request %s: response %s answered but not stored: %s",
                        self.request_id, response["id"], error)


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
        """Close the output, store the response, then ``response.completed``."""
        closing = [*self._opening(), *self.events.closing()]
        if self.events.response is not None:
            await self.call.save(self.exchange, self.events.response)
        return [named_event(event) for event in closing]

    def fail(self, error: SwitchgearError) -> Iterable[bytes]:
        """An ``error`` event and ``response.failed``."""
        return [named_event(event) for event in (*self._opening(), *self.events.failure(error))]


class ResponsesAPI:
    """The Responses endpoints over ``state``'s store; ``infer`` runs a request's adapter."""

    def __init__(self, state: AppState, infer: Infer) -> None:
        self.state = state
        self.infer = infer
        self.stored = StoredResponses(state.store, state.local.store.responses_retention_days)

    async def create(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """POST /v1/responses."""
        await self.infer(ResponseCall(self.stored, request_id).api, scope, receive, send,
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
