"""What the stage tests share: the fake next stage each stage is chained to, exchanges, answers
and streams in OpenAI's shape, and a config parsed the way the gateway parses it."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from switchgear.config import Config, parse_config
from switchgear.exchange import Exchange, Operation
from switchgear.pipeline import Body, Reply, Stage, chain
from switchgear.pipeline.route import take_usage

S = TypeVar("S", bound=Stage)

HELLO = [{"role": "user", "content": "Say hello"}]


def make_exchange(model: str = "chat", *, body: Body | None = None,
                  operation: Operation = Operation.CHAT, stream: bool = False,
                  **fields: Any) -> Exchange:
    """A request for ``model``; by default a deterministic chat (temperature 0) saying hello."""
    body = body if body is not None else {"messages": copy.deepcopy(HELLO), "temperature": 0}
    return Exchange(request_id="req", operation=operation, body=body, model=model, stream=stream,
                    **fields)


def answer(text: str = "Hello!", *, prompt_tokens: int = 5, completion_tokens: int = 2) -> Body:
    """A whole chat answer saying ``text``, with its usage."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "sim",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def chunks(*pieces: str, prompt_tokens: int = 5) -> list[Body]:
    """A streamed chat answer: one chunk per piece of text, the finish, then the usage."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "sim"}
    return [*({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                    "finish_reason": None}]} for piece in pieces),
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**base, "choices": [], "usage": {
                "prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                "total_tokens": prompt_tokens + len(pieces)}}]


def text_of(reply: Body | list[Body]) -> str:
    """The text a whole answer or a list of chat chunks carries."""
    if isinstance(reply, dict):
        return "".join(choice["message"]["content"] for choice in reply["choices"])
    return "".join(choice["delta"].get("content") or "" for chunk in reply
                   for choice in chunk["choices"])


async def drain(reply: Reply) -> Body | list[Body]:
    """A whole answer as it is; a stream read to its end, as the list of its chunks."""
    if isinstance(reply, dict):
        return reply
    return [chunk async for chunk in reply]


async def turns(count: int = 5) -> None:
    """Let every ready task run ``count`` times (no wall-clock wait)."""
    for _ in range(count):
        await asyncio.sleep(0)


def config(models: dict[str, Any] | None = None, **sections: Any) -> Config:
    """A parsed Config: ``models`` (default: ``chat``, served by one simulated deployment ``d``
    priced 1 per token each way) and any other ``sections``."""
    if models is None:
        models = {"chat": {"deployments": [{"name": "d", "backend": "simulated", "price": {
            "input_per_million": 1_000_000, "output_per_million": 1_000_000}}]}}
    return parse_config({"models": models, **sections})


def chained(stage: S, after: NextStage) -> S:
    """``stage`` with ``after`` as its next stage, linked by ``chain`` as the gateway links it."""
    assert chain(stage, after) is stage
    return stage


class NextStage:
    """A fake next stage — the only fake in the stage tests: it stands where the rest of the
    pipeline would be, notes each Exchange handed to it (``exchanges``) and a copy of it as it
    arrived (``seen``, body included), then answers: ``reply`` (a whole body, or a function of
    the Exchange), ``stream`` (these chunks), or raises ``error`` (after the chunks, for a
    stream). With ``hold`` it waits for ``release()`` first, so a test can keep a request in
    flight; with ``pause_after`` a stream waits for ``resume()`` after that many chunks.
    ``deployment`` is what it says served the request, and the answer's usage is noted on the
    Exchange, as the Route stage does (a stream's from the last chunk it sent)."""

    def __init__(self, reply: Body | Callable[[Exchange], Body] | None = None, *,
                 stream: Sequence[Body] | None = None, error: BaseException | None = None,
                 hold: bool = False, deployment: str | None = None,
                 pause_after: int | None = None) -> None:
        self.reply = reply if reply is not None else answer()
        self.stream = None if stream is None else list(stream)
        self.error = error
        self.deployment = deployment
        self.pause_after = pause_after
        self._resumed = asyncio.Event()
        self.exchanges: list[Exchange] = []
        self.seen: list[Exchange] = []
        #: Set once a request has reached this stage.
        self.entered = asyncio.Event()
        self._go = asyncio.Event()
        if not hold:
            self._go.set()
        #: Streams this stage started and that have been closed (read to the end or not).
        self.closed = 0

    @property
    def calls(self) -> int:
        """How many requests reached this stage."""
        return len(self.exchanges)

    def release(self) -> None:
        """Let held requests be answered."""
        self._go.set()

    def resume(self) -> None:
        """Let paused streams go on."""
        self._resumed.set()

    async def __call__(self, exchange: Exchange) -> Reply:
        self.exchanges.append(exchange)
        arrived = copy.copy(exchange)
        arrived.body = copy.deepcopy(exchange.body)
        self.seen.append(arrived)
        self.entered.set()
        await self._go.wait()
        if self.deployment is not None:
            exchange.deployment = self.deployment
            exchange.served_alias = exchange.resolved_alias or exchange.model
        if self.stream is not None:
            return self._chunks(exchange, self.stream)
        if self.error is not None:
            raise self.error
        reply = self.reply(exchange) if callable(self.reply) else copy.deepcopy(self.reply)
        take_usage(exchange, reply)
        return reply

    async def _chunks(self, exchange: Exchange, stream: list[Body]) -> AsyncIterator[Body]:
        sent: Body = {}
        try:
            for index, chunk in enumerate(stream):
                if index == self.pause_after:
                    await self._resumed.wait()
                sent = copy.deepcopy(chunk)
                yield sent
            if self.error is not None:
                raise self.error
        finally:
            self.closed += 1
            take_usage(exchange, sent)
