"""Record: the recorder's steps run exactly once per request — whether the next stage answers,
raises or is cancelled, and for a stream at its end, however it ends — with what it ended in.
An answer that went well is recorded in the loop's next turn (after it is on its way), with the
others that ended in the same turn; a failed one at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import pytest
from pipeline_support import NextStage, answer, chained, chunks, drain, make_exchange

from switchgear.errors import Overloaded, UpstreamProtocolError
from switchgear.exchange import Exchange
from switchgear.pipeline.record import CLIENT_CLOSED, Record, Recorder


@dataclass(frozen=True)
class Ended:
    """What a recorder step saw of an Exchange when it ran."""

    status: int
    error_type: str | None
    truncated: bool
    text: str
    total_tokens: int
    done: bool


def record(after: NextStage) -> tuple[Record, list[Ended]]:
    """The Record stage over a Recorder whose one step notes each Exchange it finishes, chained
    to ``after``; and those notes."""
    ended: list[Ended] = []

    def step(exchange: Exchange) -> None:
        ended.append(Ended(exchange.status, exchange.error_type, exchange.truncated,
                           "".join(exchange.completion_text), exchange.usage.total_tokens,
                           exchange.done is not None))

    return chained(Record(Recorder([step])), after), ended


async def test_a_whole_answer_is_recorded_once_with_its_usage_and_text() -> None:
    stage, ended = record(NextStage(answer("Hi there", prompt_tokens=4, completion_tokens=3)))
    exchange = make_exchange()
    assert await stage(exchange) == answer("Hi there", prompt_tokens=4, completion_tokens=3)
    assert ended == [] and exchange.done is not None  # the answer goes out before its record
    await asyncio.sleep(0)
    assert ended == [Ended(200, None, False, "Hi there", 7, True)]
    assert exchange.first_token is not None and exchange.finish_reason == "stop"


@pytest.mark.parametrize(("error", "status", "kind"), [
    (Overloaded("full", retry_after=1), 503, "Overloaded"),
    (ValueError("a bug, with a secret in it"), 500, "SwitchgearError"),
])
async def test_a_failure_is_recorded_once_and_raised(
        error: Exception, status: int, kind: str) -> None:
    stage, ended = record(NextStage(error=error))
    with pytest.raises(type(error)):
        await stage(make_exchange())
    assert ended == [Ended(status, kind, False, "", 0, True)]


async def test_a_request_cancelled_while_waiting_is_recorded_once_as_client_closed() -> None:
    after = NextStage(hold=True)
    stage, ended = record(after)
    running = asyncio.create_task(stage(make_exchange()))
    await after.entered.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert ended == [Ended(CLIENT_CLOSED, "ClientClosed", False, "", 0, True)]


async def test_a_stream_is_recorded_at_its_end() -> None:
    after = NextStage(stream=chunks("Hel", "lo"))
    stage, ended = record(after)
    exchange = make_exchange(stream=True)
    reply = await stage(exchange)
    assert isinstance(reply, AsyncGenerator)
    assert await anext(reply) == chunks("Hel", "lo")[0]
    assert ended == [] and exchange.first_token is not None  # not over yet
    rest = await drain(reply)
    assert rest == chunks("Hel", "lo")[1:]
    await asyncio.sleep(0)
    assert ended == [Ended(200, None, False, "Hello", 7, True)]
    assert exchange.chunk_times is not None and len(exchange.chunk_times) == 3  # with choices
    assert after.closed == 1


async def test_a_stream_that_fails_is_recorded_once_as_truncated() -> None:
    stage, ended = record(NextStage(stream=chunks("Hel"), error=UpstreamProtocolError("cut")))
    reply = await stage(make_exchange(stream=True))
    with pytest.raises(UpstreamProtocolError):
        await drain(reply)
    assert ended == [Ended(502, "UpstreamProtocolError", True, "Hel", 6, True)]


async def test_a_stream_the_client_leaves_is_recorded_once_as_client_closed() -> None:
    after = NextStage(stream=chunks("Hel", "lo"))
    stage, ended = record(after)
    reply = await stage(make_exchange(stream=True))
    assert isinstance(reply, AsyncGenerator)
    await anext(reply)
    await reply.aclose()
    assert ended == [Ended(CLIENT_CLOSED, "ClientClosed", True, "Hel", 0, True)]
    assert after.closed == 1  # the rest of the pipeline's stream was closed too


def named(request_id: str) -> Exchange:
    exchange = make_exchange()
    exchange.request_id = request_id
    return exchange


async def test_answers_ending_in_one_turn_are_recorded_together_and_a_failing_step_loses_none(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def step(exchange: Exchange) -> None:
        if exchange.request_id == "req_bad":
            raise RuntimeError("a broken step")
        seen.append(exchange.request_id)

    recorder = Recorder([step])
    for request_id in ("req_a", "req_bad", "req_b"):
        recorder.finish_soon(named(request_id))
    assert seen == []
    await asyncio.sleep(0)
    assert seen == ["req_a", "req_b"]
    assert "recording request req_bad failed" in caplog.text


async def test_flush_records_what_is_waiting_at_once() -> None:
    seen: list[str] = []
    recorder = Recorder([lambda exchange: seen.append(exchange.request_id)])
    recorder.finish_soon(named("req_a"))
    recorder.flush()
    assert seen == ["req_a"]
    await asyncio.sleep(0)
    assert seen == ["req_a"]  # not twice
