"""``chain``: stages linked in the order given, a left-out stage (None) skipped, and only the last
link allowed to be a plain handler; the gateway's pipeline is the order the docs declare."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_support import NextStage, answer, config, make_exchange

from switchgear.gateway.state import AppState
from switchgear.pipeline import Stage, chain
from switchgear.pipeline.prioritize import Prioritize
from switchgear.pipeline.prompt import Prompt


async def test_stages_are_linked_in_the_order_given_and_none_is_skipped() -> None:
    after = NextStage(answer("linked"))
    prioritize, prompt = Prioritize(None), Prompt({}, {})
    first = chain(None, prioritize, None, prompt, None, after)
    assert first is prioritize
    assert prioritize.next_stage is prompt and prompt.next_stage is after
    reply = await first(make_exchange())
    assert reply == answer("linked") and after.calls == 1
    assert after.seen[0].queued_at is not None  # it went through Prioritize on the way


def test_a_handler_alone_is_the_pipeline() -> None:
    after = NextStage()
    assert chain(after) is after
    assert chain(None, after, None) is after


def test_only_a_stage_may_have_a_stage_after_it() -> None:
    with pytest.raises(TypeError, match="NextStage cannot have a stage after it"):
        chain(NextStage(), Prioritize(None))
    with pytest.raises(TypeError):
        chain(Prioritize(None), NextStage(), None, Prompt({}, {}))


@pytest.mark.parametrize("guarded", [True, False])
def test_the_gateway_assembles_the_declared_order(tmp_path: Path, guarded: bool) -> None:
    guards = {"input": [{"check": "pii", "action": "redact"}]} if guarded else {}
    state = AppState.build(config(store={"url": f"sqlite:///{tmp_path}/records.db"},
                                  guards=guards))
    order = []
    stage = state.pipeline
    while isinstance(stage, Stage):
        order.append(type(stage).__name__)
        stage = stage.next_stage
    order.append(type(stage).__name__)
    assert order == ["Record", "Resolve", "Admit", "Prompt", *(["Guard"] if guarded else []),
                     "Cache", "Prioritize", "Route"]
