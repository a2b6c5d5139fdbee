"""Anthropic's Messages API: ``POST /v1/messages`` (an adapter in front of the one pipeline)
and ``POST /v1/messages/count_tokens``.

The key comes in ``x-api-key`` (as Anthropic's SDKs send it) or ``Authorization: Bearer``;
``anthropic-version`` is accepted whatever it says. Answers, events and errors are Anthropic's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import orjson

from switchgear.admission.keys import ApiKey
from switchgear.errors import PermissionDenied, SwitchgearError
from switchgear.exchange import Exchange, Operation
from switchgear.gateway.http import (
    Receive,
    Scope,
    Send,
    bearer_token,
    header,
    read_json,
    send_error,
    send_json,
)
from switchgear.gateway.inbound import StatelessAPI
from switchgear.gateway.state import AppState
from switchgear.pipeline import Body
from switchgear.protocols.anthropic import (
    MessageEvents,
    chat_request,
    error_status_and_body,
    estimate_tokens,
    message,
)

#: What ``Exchange.api`` records for a request that came in through /v1/messages.
API_NAME = "anthropic.messages"


def api_key(scope: Scope) -> str | None:
    """The caller's key: ``x-api-key``, else an ``Authorization: Bearer`` token."""
    value = header(scope, b"x-api-key")
    if value:
        return value.decode("latin-1").strip() or None
    return bearer_token(scope)


def sse(payload: Body) -> bytes:
    """One Anthropic server-sent event: its name (the payload's type) and its data."""
    name: str = payload["type"]
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class AnthropicEvents:
    """The stream encoder of one Messages answer (``inbound.StreamEncoder``)."""

    __slots__ = ("events",)

    def __init__(self, exchange: Exchange) -> None:
        self.events = MessageEvents(exchange.model, exchange.body.get("stop"))

    def chunk(self, chunk: Body) -> Iterable[bytes]:
        """The events of one chat chunk."""
        return [sse(payload) for payload in self.events.chunk(chunk)]

    async def end(self) -> Iterable[bytes]:
        """The events that close the message."""
        return [sse(payload) for payload in self.events.end()]

    def fail(self, error: SwitchgearError) -> Iterable[bytes]:
        """The error event."""
        return (sse(self.events.fail(error)),)


async def _parse(body: Any, key: ApiKey | None) -> Body:
    return chat_request(body)


async def _reply(exchange: Exchange, reply: Body) -> Body:
    return message(reply, exchange.model, exchange.body.get("stop"))


MESSAGES = StatelessAPI(name=API_NAME, operation=Operation.CHAT, credential=api_key,
                        parse=_parse, reply=_reply, stream=AnthropicEvents,
                        error=error_status_and_body)


@runtime_checkable
class PromptCounter(Protocol):
    """A backend that counts a chat prompt's tokens with the model's own tokenizer."""

    async def count_prompt_tokens(self, body: Body) -> int:
        """The tokens the model reads for the OpenAI chat ``body``."""


class TokenCounting:
    """``POST /v1/messages/count_tokens``: the prompt's tokens, ``{"input_tokens": N}``.

    Counted by the first deployment of the model that has a tokenizer at hand (a
    ``PromptCounter``), else estimated (``protocols.anthropic.estimate_tokens``)."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def count_tokens(self, scope: Scope, receive: Receive, send: Send,
                           request_id: str) -> None:
        """Answer the count, or an error in Anthropic's shape."""
        try:
            count = await self._count(scope, receive)
        except SwitchgearError as error:
            await send_error(send, error, request_id, shape=error_status_and_body)
            return
        await send_json(send, 200, {"input_tokens": count}, request_id)

    async def _count(self, scope: Scope, receive: Receive) -> int:
        state = self.state
        key = await state.authenticator.caller(api_key(scope))
        body = await read_json(scope, receive, state.config.server.max_body_bytes)
        chat = chat_request(body, counting=True)
        if key is not None and not key.allows(chat["model"]):
            raise PermissionDenied(f"This key may not call the model '{chat['model']}'.")
        for deployment in state.router.plan(chat["model"]):
            if isinstance(deployment.backend, PromptCounter):
                return await deployment.backend.count_prompt_tokens(chat)
        return estimate_tokens(chat)
