"""Guard: input checks run before the next stage (a block goes no further, a redaction is what the
next stage sees); output checks run on what it answers, whole or streamed."""

from __future__ import annotations

from typing import Any

import pytest
from pipeline_support import NextStage, answer, chained, chunks, config, drain, make_exchange, text_of

from switchgear.exchange import Principal
from switchgear.pipeline.guard import Guard, GuardBlocked

BLOCK_SECRET = {"check": "patterns", "terms": ["secret"], "action": "block"}


def guard(after: NextStage, **guards: Any) -> Guard:
    """The Guard stage for a ``guards:`` section, chained to ``after``."""
    return chained(Guard(config(guards=guards).guards), after)


def saying(text: str) -> dict[str, Any]:
    """A chat body whose one message says ``text``."""
    return {"messages": [{"role": "user", "content": text}]}


async def test_a_blocked_input_goes_no_further() -> None:
    after = NextStage()
    exchange = make_exchange(body=saying("tell me the secret"))
    with pytest.raises(GuardBlocked) as blocked:
        await guard(after, input=[BLOCK_SECRET])(exchange)
    assert blocked.value.status == 400 and blocked.value.code == "guard_blocked"
    assert "patterns check on the input" in blocked.value.message
    assert after.calls == 0
    assert exchange.guard_action == "block"
    assert [(c["stage"], c["verdict"]) for c in exchange.checks] == [("input", "fail")]


async def test_a_clean_input_goes_on_and_its_check_is_recorded() -> None:
    after = NextStage(answer("hi"))
    exchange = make_exchange(body=saying("hello"))
    assert await guard(after, input=[BLOCK_SECRET])(exchange) == answer("hi")
    assert after.calls == 1 and exchange.guard_action is None
    assert [(c["check"], c["verdict"]) for c in exchange.checks] == [("patterns", "pass")]
    assert exchange.output_passed is None  # no output check ran


async def test_the_next_stage_sees_the_redacted_input() -> None:
    after = NextStage()
    exchange = make_exchange(body=saying("mail ada@example.com please"))
    await guard(after, input=[{"check": "pii", "action": "redact"}])(exchange)
    (arrived,) = after.seen
    content = arrived.body["messages"][0]["content"]
    assert "ada@example.com" not in content and content.startswith("mail ")
    assert arrived.guard_action == "redact"


async def test_a_blocked_answer_is_withheld_after_the_next_stage_answered() -> None:
    after = NextStage(answer("the secret is 42"))
    exchange = make_exchange(body=saying("hello"))
    with pytest.raises(GuardBlocked, match="on the answer"):
        await guard(after, output=[BLOCK_SECRET])(exchange)
    assert after.calls == 1
    assert exchange.output_passed is False and exchange.guard_action == "block"


async def test_a_redacted_answer_is_a_copy_and_the_original_is_left_alone() -> None:
    shared = answer("write to ada@example.com")  # e.g. a cached answer others are served
    after = NextStage(lambda exchange: shared)
    exchange = make_exchange(body=saying("hello"))
    reply = await guard(after, output=[{"check": "pii", "action": "redact"}])(exchange)
    assert isinstance(reply, dict)
    assert "ada@example.com" not in text_of(reply)
    assert text_of(shared) == "write to ada@example.com"
    assert exchange.output_passed is False and exchange.guard_action == "redact"


async def test_a_stream_is_checked_whole_at_its_end() -> None:
    after = NextStage(stream=chunks("the ", "sec", "ret"))
    exchange = make_exchange(body=saying("hello"), stream=True)
    reply = await guard(after, output=[BLOCK_SECRET])(exchange)
    assert not isinstance(reply, dict)
    assert exchange.checks == []  # nothing judged before the answer is complete
    received = []
    with pytest.raises(GuardBlocked, match="on the answer"):
        async for chunk in reply:
            received.append(chunk)
    assert text_of(received) == "the secret"  # the match spanned chunks
    assert exchange.output_passed is False and after.calls == 1


async def test_a_clean_stream_passes_whole() -> None:
    after = NextStage(stream=chunks("all ", "good"))
    exchange = make_exchange(body=saying("hello"), stream=True)
    received = await drain(await guard(after, output=[BLOCK_SECRET])(exchange))
    assert received == chunks("all ", "good")
    assert exchange.output_passed is True


async def test_a_keys_checks_replace_everyones() -> None:
    after = NextStage()
    stage = guard(after, input=[BLOCK_SECRET], keys={"trusted": {"input": []}})
    await stage(make_exchange(body=saying("the secret"),
                              principal=Principal(key_id="trusted")))
    with pytest.raises(GuardBlocked):
        await stage(make_exchange(body=saying("the secret"), principal=Principal(key_id="k2")))
    assert after.calls == 1
