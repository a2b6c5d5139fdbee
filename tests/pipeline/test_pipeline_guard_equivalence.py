"""The Guard stage redacts and flags exactly what it did before its scans were made cheaper:
streamed answers chunk by chunk and prompts in place, over many generated texts
(tests/guard_reference.py holds the code it is compared with)."""

from __future__ import annotations

import random
from typing import Any

from pipeline_support import NextStage, chained, chunks, config, drain, make_exchange

from guard_reference import (
    REFERENCE_HIDDEN_ORDERS,
    REFERENCE_INJECTION,
    generated,
    pieces_of,
    reference_spans,
    reference_stream,
)
from switchgear.guards.redact import replace_spans
from switchgear.pipeline.guard import Guard


async def test_the_stage_streams_and_redacts_as_it_did_before() -> None:
    rng = random.Random(4)
    stage_config = config(guards={"output": [{"check": "pii", "action": "redact"},
                                             {"check": "empty", "action": "flag"}]}).guards
    for text in generated(200, seed=4):
        pieces = pieces_of(text, rng)
        stage = chained(Guard(stage_config), NextStage(stream=chunks(*pieces)))
        subject = make_exchange(stream=True)
        received = await drain(await stage(subject))
        assert isinstance(received, list)
        texts = [chunk["choices"][0]["delta"].get("content", "") for chunk in received[:-1]]
        expected, found = reference_stream([*pieces, ""])  # the finish chunk carries no text
        assert texts == [*expected[:-2], expected[-2] + expected[-1]], pieces
        assert [c["verdict"] for c in subject.checks] == [
            "fail" if found else "pass", "pass" if text.strip() else "fail"]


async def test_the_input_is_redacted_as_it_was_before() -> None:
    stage_config = config(guards={"input": [{"check": "pii", "action": "redact"},
                                            {"check": "injection", "action": "flag"}]}).guards
    for text in generated(300, seed=5):
        body: dict[str, Any] = {"messages": [{"role": "tool", "content": text}]}
        after = NextStage()
        await chained(Guard(stage_config), after)(make_exchange(body=body))
        redacted = replace_spans(text, reference_spans(text))
        assert after.seen[0].body["messages"][0]["content"] == redacted
        suspect = REFERENCE_INJECTION.search(redacted) or REFERENCE_HIDDEN_ORDERS.search(redacted)
        assert [c["verdict"] for c in after.seen[0].checks] == [
            "fail" if reference_spans(text) else "pass", "fail" if suspect else "pass"]
