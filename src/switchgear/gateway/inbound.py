"""The APIs a client may speak to the gateway, each an adapter in front of the one pipeline.

The pipeline runs OpenAI bodies. An ``InboundAPI`` says how one client API maps onto it: where
the caller's key is, how its request body becomes an OpenAI body, and how the pipeline's reply
(a dict, or a stream of chunks), and any error, go back in that API's shape. The OpenAI
endpoints are adapters too, whose translations leave the body as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from switchgear.admission.keys import ApiKey
from switchgear.errors import SwitchgearError
from switchgear.exchange import Exchange, Operation
from switchgear.gateway.http import DONE_EVENT, Scope, bearer_token, event
from switchgear.pipeline import Body

#: An error as a status and a body: ``(status, body)``.
ErrorShape = Callable[[SwitchgearError, str], tuple[int, Any]]


class StreamEncoder(Protocol):
    """Turns one stream of OpenAI chunks into an API's server-sent events (encoded bytes).

    Made afresh for each stream, so it may keep what the stream has said so far."""

    def chunk(self, chunk: Body) -> Iterable[bytes]:
        """The events for one chunk (none, one or several)."""

    async def end(self) -> Iterable[bytes]:
        """The events that close a stream that finished cleanly."""

    def fail(self, error: SwitchgearError) -> Iterable[bytes]:
        """The events that end a stream cut by ``error`` after its first byte."""


class InboundAPI(Protocol):
    """How one client API maps onto the OpenAI pipeline.

    ``credential`` finds the caller's key in the request's scope; ``parse`` gets the parsed
    JSON body and the caller's verified key (None in open mode) and returns the OpenAI body to
    run (raising ``InvalidRequest`` for a bad one); ``reply`` translates a whole answer (to a
    body, or to its JSON when the adapter has encoded it already); ``stream`` makes the encoder
    of one streamed answer; ``error`` gives an error's status and body. An API whose answer
    needs what its request said (the Responses API) is an object made per request; one that
    needs nothing of it is a ``StatelessAPI``, made once.
    """

    @property
    def name(self) -> str:
        """What ``Exchange.api`` records."""

    @property
    def operation(self) -> Operation:
        """The pipeline operation its requests run."""

    def credential(self, scope: Scope, /) -> str | None:
        """The caller's key as the request carries it."""

    def parse(self, body: Any, key: ApiKey | None, /) -> Awaitable[Any]:
        """The OpenAI body for the request ``body``."""

    def reply(self, exchange: Exchange, reply: Body, /) -> Awaitable[Body | bytes]:
        """The whole answer ``reply`` in this API's shape."""

    def stream(self, exchange: Exchange, /) -> StreamEncoder:
        """The encoder of one streamed answer."""

    def error(self, error: SwitchgearError, request_id: str, /) -> tuple[int, Any]:
        """``error``'s status and body in this API's shape."""


@dataclass(frozen=True, slots=True)
class StatelessAPI:
    """An InboundAPI whose translations need nothing of the request they answer: its
    functions, given once."""

    name: str
    operation: Operation
    credential: Callable[[Scope], str | None]
    parse: Callable[[Any, ApiKey | None], Awaitable[Any]]
    reply: Callable[[Exchange, Body], Awaitable[Body | bytes]]
    stream: Callable[[Exchange], StreamEncoder]
    error: ErrorShape


def openai_error(error: SwitchgearError, request_id: str) -> tuple[int, Any]:
    """An error in OpenAI's shape, with its own status."""
    return error.status, error.body()


class OpenAIEvents:
    """OpenAI's stream: each chunk an event (the usage chunk only when the client asked for
    it), ``[DONE]`` at a clean end, and an error event without ``[DONE]`` after a failure, so
    no client mistakes a cut stream for a clean finish."""

    __slots__ = ("include_usage",)

    def __init__(self, exchange: Exchange) -> None:
        self.include_usage = exchange.include_usage

    def chunk(self, chunk: Body) -> Iterable[bytes]:
        """The chunk as one event; without its usage unless the client asked for it."""
        if "usage" in chunk and not self.include_usage:
            if not chunk.get("choices"):
                return ()
            chunk = {key: value for key, value in chunk.items() if key != "usage"}
        return (event(chunk),)

    async def end(self) -> Iterable[bytes]:
        """``data: [DONE]``."""
        return (DONE_EVENT,)

    def fail(self, error: SwitchgearError) -> Iterable[bytes]:
        """The error's body as one event."""
        return (event(error.body()),)


async def _as_is(body: Any, key: ApiKey | None) -> Any:
    return body


async def _reply_as_is(exchange: Exchange, reply: Body) -> Body:
    return reply


def openai_api(operation: Operation) -> StatelessAPI:
    """The OpenAI endpoint of ``operation``: bodies and answers pass as they are."""
    return StatelessAPI(name="openai", operation=operation, credential=bearer_token,
                        parse=_as_is, reply=_reply_as_is, stream=OpenAIEvents,
                        error=openai_error)
