"""The simulated model calls a function tool when a chat request offers tools, as a tool-calling
model would: whole and streamed, the tool tool_choice names, and text once the results are in."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchgear.errors import InvalidRequest
from switchgear.exchange import Operation
from switchgear.simulator import ModelOptions, SimulatedModel

FAST = ModelOptions(ttft_ms=0, tpot_ms=0, seed=1)
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                     "odd": {"type": ["string", "null"]}}}}}
CLOCK = {"type": "function", "function": {"name": "clock"}}


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "sim", "messages": list(messages) or [{"role": "user", "content": "hi"}],
            **fields}


async def test_a_request_with_tools_gets_a_call_of_the_first_tool() -> None:
    model = SimulatedModel(FAST)
    answer = await model.complete(model.plan_generation(Operation.CHAT, chat(
        tools=[WEATHER, CLOCK])))
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "sim", "days": 1, "odd": None}
    assert answer["usage"]["completion_tokens"] > 0


async def test_a_streamed_call_names_the_chosen_tool_then_its_arguments() -> None:
    model = SimulatedModel(FAST)
    generation = model.plan_generation(Operation.CHAT, chat(
        tools=[WEATHER, CLOCK], tool_choice={"type": "function", "function": {"name": "clock"}},
        stream=True, stream_options={"include_usage": True}))
    chunks = [chunk async for chunk in model.stream(generation)]
    calls = [call for chunk in chunks for choice in chunk["choices"]
             for call in choice["delta"].get("tool_calls", ())]
    assert calls[0]["function"]["name"] == "clock" and calls[0]["id"].startswith("call_")
    assert "".join(call["function"]["arguments"] for call in calls) == "{}"
    assert {chunk["id"] for chunk in chunks} == {chunks[0]["id"]}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("request_fields", [
    {"tools": [WEATHER], "tool_choice": "none"},
    {"tools": []},
    {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "sunny"}]},
])
async def test_no_call_without_tools_or_once_the_results_are_in(
        request_fields: dict[str, Any]) -> None:
    model = SimulatedModel(FAST)
    answer = await model.complete(model.plan_generation(Operation.CHAT, {**chat(),
                                                                         **request_fields}))
    message = answer["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"]


@pytest.mark.parametrize("tools", [{}, [5], [{"type": "function"}],
                                   [{"function": {"name": 5}}]])
def test_malformed_tools_are_an_invalid_request(tools: Any) -> None:
    with pytest.raises(InvalidRequest):
        SimulatedModel(FAST).plan_generation(Operation.CHAT, chat(tools=tools))
