"""The Record stage: when a request ends, however it ends, count it, cost it and log it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from switchgear.errors import SwitchgearError, internal_error
from switchgear.exchange import Exchange
from switchgear.ledger.cost import PriceBook
from switchgear.pipeline import Body, Handler, Reply
from switchgear.store.records import RequestRecord
from switchgear.store.writer import RecordWriter
from switchgear.telemetry.metrics import GatewayMetrics

#: Status recorded when the client went away before the answer was complete (nginx's convention).
CLIENT_CLOSED = 499


Step = Callable[[Exchange], None]


class Recorder:
    """Finishes an Exchange by running its steps in order over it: price it, count it, let the
    router learn from it, log its row (written in batches, off the hot path)."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)

    @classmethod
    def standard(cls, prices: PriceBook, metrics: GatewayMetrics, writer: RecordWriter,
                 *observers: Step) -> Recorder:
        """Price, then metrics, then ``observers``, then the request-log row."""
        return cls([prices.price, metrics.observe, *observers,
                    lambda exchange: writer.submit(RequestRecord.of(exchange))])

    def finish(self, exchange: Exchange) -> None:
        """Record a finished exchange; O(1) per step."""
        exchange.done = time.time()
        for step in self.steps:
            step(exchange)

    def fail(self, exchange: Exchange, error: SwitchgearError) -> None:
        """Record an exchange that ended in ``error``."""
        exchange.status = error.status
        exchange.error_type = error.kind
        self.finish(exchange)


def take_usage(exchange: Exchange, body: Body) -> None:
    """Copy the token counts of an OpenAI ``usage`` object, if the body has one."""
    usage: Any = body.get("usage")
    if not usage:
        return
    exchange.usage.prompt_tokens = usage.get("prompt_tokens") or 0
    exchange.usage.completion_tokens = usage.get("completion_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    exchange.usage.cached_tokens = details.get("cached_tokens") or 0


class Record:
    """Wraps the rest of the pipeline so every request ends in exactly one record."""

    def __init__(self, next_stage: Handler, recorder: Recorder) -> None:
        self.next_stage = next_stage
        self.recorder = recorder

    async def __call__(self, exchange: Exchange) -> Reply:
        try:
            reply = await self.next_stage(exchange)
        except SwitchgearError as error:
            self.recorder.fail(exchange, error)
            raise
        except Exception:
            self.recorder.fail(exchange, internal_error())
            raise
        if isinstance(reply, dict):
            exchange.first_token = time.time()
            take_usage(exchange, reply)
            self.recorder.finish(exchange)
            return reply
        return self._watch(exchange, reply)

    async def _watch(self, exchange: Exchange, chunks: AsyncIterator[Body]) -> AsyncIterator[Body]:
        """Pass a stream on, noting its first token, its usage and how it ended."""
        error: SwitchgearError | None = None
        try:
            async for chunk in chunks:
                if exchange.first_token is None:
                    exchange.first_token = time.time()
                take_usage(exchange, chunk)
                yield chunk
        except SwitchgearError as failure:
            error = failure
            raise
        except Exception:
            error = internal_error()
            raise
        except BaseException:  # the client went away (GeneratorExit) or the server is stopping
            exchange.status, exchange.error_type = CLIENT_CLOSED, "ClientClosed"
            exchange.truncated = True
            raise
        finally:
            await _close(chunks)
            if error is not None:
                exchange.truncated = True
                self.recorder.fail(exchange, error)
            else:
                self.recorder.finish(exchange)


async def _close(chunks: AsyncIterator[Body]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
