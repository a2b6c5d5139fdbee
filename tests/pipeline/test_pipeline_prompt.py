"""Prompt: a chat request naming a template reaches the next stage with the rendered messages
before its own (and no ``prompt`` left); a reference that cannot be served goes no further."""

from __future__ import annotations

from typing import Any

import pytest
from pipeline_support import HELLO, NextStage, chained, config, make_exchange

from switchgear.errors import InvalidRequest, PromptNotFound
from switchgear.exchange import Operation
from switchgear.pipeline.prompt import Prompt

TEMPLATES = {"support": {"messages": [
    {"role": "system", "content": "You help {{customer}} with {{product}}."}]}}


def prompt(after: NextStage) -> Prompt:
    """The Prompt stage serving version 3 of the template ``support``, chained to ``after``."""
    return chained(Prompt(config(prompts=TEMPLATES).prompts, {"support": 3}), after)


def naming(reference: Any) -> dict[str, Any]:
    """A chat body that names ``reference``."""
    return {"messages": [*HELLO], "temperature": 0, "prompt": reference}


async def test_a_named_template_is_rendered_before_the_next_stage_sees_the_body() -> None:
    after = NextStage()
    exchange = make_exchange(body=naming({"id": "support", "version": "3", "variables": {
        "customer": "Ada", "product": {"type": "input_text", "text": "the gateway"}}}))
    await prompt(after)(exchange)
    (arrived,) = after.seen
    assert arrived.body == {"messages": [
        {"role": "system", "content": "You help Ada with the gateway."}, *HELLO],
        "temperature": 0}
    assert arrived.prompt_name == "support" and arrived.prompt_version == 3


async def test_a_request_naming_no_template_passes_untouched() -> None:
    after = NextStage()
    exchange = make_exchange()
    body = exchange.body
    await prompt(after)(exchange)
    assert after.seen[0].body == body and after.seen[0].prompt_name is None


async def test_only_chat_requests_are_rendered() -> None:
    after = NextStage()
    body = {"prompt": "Once upon a time", "max_tokens": 5}
    await prompt(after)(make_exchange(body=dict(body), operation=Operation.COMPLETIONS))
    assert after.seen[0].body == body and after.seen[0].prompt_name is None


@pytest.mark.parametrize(("reference", "error", "param"), [
    ({"id": "billing"}, PromptNotFound, "prompt.id"),
    ({"id": "support", "version": 2, "variables": {"customer": "A", "product": "B"}},
     InvalidRequest, "prompt.version"),
    ({"id": "support", "variables": {"customer": "A"}}, InvalidRequest,
     "prompt.variables.product"),
    ({"id": "support", "variables": {"customer": "A", "product": 7}}, InvalidRequest,
     "prompt.variables.product"),
    ("support", InvalidRequest, "prompt"),
])
async def test_a_reference_that_cannot_be_served_goes_no_further(
        reference: Any, error: type[InvalidRequest | PromptNotFound], param: str) -> None:
    after = NextStage()
    exchange = make_exchange(body=naming(reference))
    with pytest.raises(error) as refused:
        await prompt(after)(exchange)
    assert refused.value.param == param
    assert after.calls == 0
