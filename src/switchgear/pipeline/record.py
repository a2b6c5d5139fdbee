"""The Record stage: when a request ends, however it ends, count it, cost it and log it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from switchgear.errors import SwitchgearError, internal_error
from switchgear.exchange import Exchange
from switchgear.guards.redact import redact
from switchgear.pipeline import Body, Reply, Stage, close_stream
from switchgear.store.records import RequestRecord
from switchgear.store.writer import RecordWriter

#: Status recorded when the client went away before the answer was complete (nginx's convention).
CLIENT_CLOSED = 499
#: The message a request is cancelled with when the server's shutdown timeout cuts it off.
SHUTDOWN = "switchgear: cut off at shutdown"

log = logging.getLogger(__name__)


def cancelled_as(error: BaseException) -> tuple[int, str]:
    """The status and error type to record for a request ended by ``error`` (a cancellation
    or GeneratorExit): cut off by the server's shutdown (503), or left by its client (499)."""
    if isinstance(error, asyncio.CancelledError) and error.args == (SHUTDOWN,):
        return 503, "ShutDown"
    return CLIENT_CLOSED, "ClientClosed"


Step = Callable[[Exchange], None]


class Recorder:
    """Finishes an Exchange by running its steps in order over it: price it, count it, let the
    router learn from it, log its row (written in batches, off the hot path).

    An answer that went well is recorded just after it is on its way (``finish_soon``): its
    steps run in the event loop's next turn, with the others that ended in this one, so the
    client does not wait for them; whatever the loop does next (the next request too) sees them
    done. ``flush`` runs what is still waiting (a serving version stopping)."""

    def __init__(self, steps: Sequence[Step | None]) -> None:
        """``steps`` in the order they run (None: a step this config leaves out)."""
        self.steps = tuple(step for step in steps if step is not None)
        self._soon: list[Exchange] = []

    def finish(self, exchange: Exchange) -> None:
        """Record a finished exchange now; O(1) per step."""
        exchange.done = time.time()
        for step in self.steps:
            step(exchange)

    def finish_soon(self, exchange: Exchange) -> None:
        """Record a finished exchange (ended now) once the running task lets the loop go on."""
        exchange.done = time.time()
        if not self._soon:
            asyncio.get_running_loop().call_soon(self.flush)
        self._soon.append(exchange)

    def flush(self) -> None:
        """Run the steps of every exchange ``finish_soon`` left waiting; one whose step fails
        is logged, and the others are recorded all the same."""
        waiting, self._soon = self._soon, []
        for exchange in waiting:
            try:
                for step in self.steps:
                    step(exchange)
            except Exception:
                log.exception("recording request %s failed", exchange.request_id)

    def fail(self, exchange: Exchange, error: SwitchgearError) -> None:
        """Record an exchange that ended in ``error``."""
        exchange.status = error.status
        exchange.error_type = error.kind
        self.finish(exchange)


def take_answer(exchange: Exchange, body: Body) -> None:
    """Note the text an answer or a chunk carries, and how the answer ended."""
    choices = body.get("choices")
    if not choices:
        return
    exchange.completion_text.append(answer_text(body))
    reason = choices[0].get("finish_reason")
    if reason:
        exchange.finish_reason = reason


def answer_text(body: Body) -> str:
    """The text an answer or a chunk carries (chat message, chat delta or completion text)."""
    parts = []
    for choice in body.get("choices") or ():
        part = (choice.get("message") or choice.get("delta") or {}).get("content") or \
            choice.get("text")
        if isinstance(part, str):
            parts.append(part)
    return "".join(parts)


def prompt_text(exchange: Exchange) -> str:
    """The request's prompt as text (messages' contents, or the prompt / input)."""
    body = exchange.body
    messages = body.get("messages")
    if isinstance(messages, list):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in messages
                         if isinstance(m, dict))
    return str(body.get("prompt") or body.get("input") or "")


def log_row(writer: RecordWriter) -> Step:
    """The Recorder step that submits the request-log row: last, as it reads what the others
    noted."""
    return lambda exchange: writer.submit(RequestRecord.of(exchange))


def store_content(exchange: Exchange) -> None:
    """A Recorder step (content logging only): the redacted prompt and completion."""
    exchange.stored_prompt = redact(prompt_text(exchange))
    exchange.stored_completion = redact("".join(exchange.completion_text))


class Record(Stage):
    """Wraps the rest of the pipeline so every request ends in exactly one record, with the
    answer's text and finish reason noted on the way (its usage was noted where the answer came
    from: the Route stage, or the Cache stage for a cached or shared answer)."""

    def __init__(self, recorder: Recorder) -> None:
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
        except asyncio.CancelledError as cancelled:  # the client left, or the server stops
            exchange.status, exchange.error_type = cancelled_as(cancelled)
            self.recorder.finish(exchange)
            raise
        if isinstance(reply, dict):
            exchange.first_token = time.time()
            take_answer(exchange, reply)
            self.recorder.finish_soon(exchange)
            return reply
        return self._watch(exchange, reply)

    async def _watch(self, exchange: Exchange, chunks: AsyncIterator[Body]) -> AsyncIterator[Body]:
        """Pass a stream on, noting its first token, each chunk's time and how it ended."""
        error: SwitchgearError | None = None
        times = exchange.chunk_times = []
        try:
            async for chunk in chunks:
                if exchange.first_token is None:
                    exchange.first_token = time.time()
                if chunk.get("choices"):
                    times.append(time.monotonic())
                take_answer(exchange, chunk)
                yield chunk
        except SwitchgearError as failure:
            error = failure
            raise
        except Exception:
            error = internal_error()
            raise
        except BaseException as ended:  # the client left (GeneratorExit) or the server stops
            exchange.status, exchange.error_type = cancelled_as(ended)
            exchange.truncated = True
            raise
        finally:
            await close_stream(chunks)
            if error is not None:
                exchange.truncated = True
                self.recorder.fail(exchange, error)
                error = None  # kept, its traceback would hold this frame in a cycle
            elif exchange.status == 200:  # it ended well (a cut one says why above)
                self.recorder.finish_soon(exchange)
            else:
                self.recorder.finish(exchange)

