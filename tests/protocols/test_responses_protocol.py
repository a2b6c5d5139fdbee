"""The Responses API over the chat shape, checked against the openai SDK's own types: requests
to chat bodies, chat answers to Response objects, chat chunk streams to the typed events."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from switchgear.errors import InvalidRequest, UpstreamProtocolError
from switchgear.protocols.responses import (
    ResponseEvents,
    ResponseFrame,
    chat_body,
    response_of,
)

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def frame(**request: Any) -> ResponseFrame:
    return ResponseFrame.of({"model": "m", **request}, "req_0123abcd", now=1000.0)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body: dict[str, Any] = {"object": "chat.completion.chunk", "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def test_a_string_input_with_instructions_and_settings() -> None:
    body = chat_body({"model": "m", "input": "Hi", "instructions": "Be brief",
                      "max_output_tokens": 32, "temperature": 0.5, "top_p": 0.9,
                      "stream": True, "user": "u1", "metadata": {"a": "b"},
                      "reasoning": {"effort": "low"}, "store": False})
    assert body == {"model": "m", "stream": True, "temperature": 0.5, "top_p": 0.9,
                    "user": "u1", "max_tokens": 32,
                    "messages": [{"role": "system", "content": "Be brief"},
                                 {"role": "user", "content": "Hi"}]}


def test_items_become_messages_with_tool_calls_and_results() -> None:
    body = chat_body({"model": "m", "tools": [WEATHER], "tool_choice": "required", "input": [
        {"role": "developer", "content": "Use tools"},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Weather in "},
                     {"type": "input_text", "text": "Paris?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "weather",
         "arguments": '{"city":"Lyon"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "rain"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "And this?"},
                                     {"type": "input_image", "image_url": "https://x/y.png",
                                      "detail": "low"}]},
    ]})
    assert body["tool_choice"] == "required"
    assert body["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": "The weather in a city",
        "parameters": WEATHER["parameters"]}}]
    assert body["messages"] == [
        {"role": "system", "content": "Use tools"},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Lyon"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        {"role": "user", "content": [
            {"type": "text", "text": "And this?"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
    ]


def test_the_conversation_so_far_comes_before_the_input() -> None:
    history = [{"type": "message", "role": "user", "content": "First"},
               {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "One", "annotations": []}]}]
    body = chat_body({"model": "m", "input": "Second", "instructions": "Now"}, history)
    assert body["messages"] == [{"role": "system", "content": "Now"},
                                {"role": "user", "content": "First"},
                                {"role": "assistant", "content": "One"},
                                {"role": "user", "content": "Second"}]


def test_text_formats_and_a_named_tool_choice() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    body = chat_body({"model": "m", "input": "x", "tools": [WEATHER],
                      "tool_choice": {"type": "function", "name": "weather"},
                      "text": {"format": {"type": "json_schema", "name": "num",
                                          "schema": schema, "strict": True}}})
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "num", "schema": schema, "strict": True}}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat_body({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}
                     )["response_format"] == {"type": "json_object"}
    assert "response_format" not in chat_body({"model": "m", "input": "x",
                                               "text": {"format": {"type": "text"}}})


@pytest.mark.parametrize(("request_body", "param"), [
    ({"input": "x"}, "model"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": 5}, "input"),
    ({"model": "m", "input": ["text"]}, "input[0]"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"model": "m", "input": [{"type": "web_search_call"}]}, "input[0].type"),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"role": "user", "content": 7}]}, "input[0].content"),
    ({"model": "m", "input": [{"role": "user", "content": "ok"},
                              {"role": "assistant", "content": None}]}, "input[1].content"),
    ({"model": "m", "input": [{"role": "user", "content": "ok"}, {"content": "x"}]},
     "input[1].role"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
     "input[0].content[0].type"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
     "input[0].content[0].text"),
    ({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "f"}]}]}, "input[0].content[0].image_url"),
    ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input[0].call_id"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": 3}]},
     "input[0].output"),
    ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": "m", "input": "x", "tools": {"type": "function"}}, "tools"),
    ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "grammar"}}}, "text.format.type"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}},
     "text.format.name"),
    ({"model": "m", "input": "x", "instructions": ["a"]}, "instructions"),
    ({"model": "m", "input": "x", "background": True}, "background"),
    ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "m", "input": "x", "max_output_tokens": "9"}, "max_output_tokens"),
    ({"model": "m", "input": "x", "store": "yes"}, "store"),
    ({"model": "m", "input": "x", "metadata": ["a"]}, "metadata"),
    ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
])
def test_what_cannot_be_served_is_a_400_naming_the_field(request_body: dict[str, Any],
                                                         param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        chat_body(request_body)
    assert refused.value.status == 400 and refused.value.param == param


def test_a_body_that_is_no_object_is_a_400() -> None:
    with pytest.raises(InvalidRequest):
        chat_body(["model", "m"])


def test_a_whole_answer_becomes_a_response_the_sdk_reads() -> None:
    reply = {"choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": "Paris."}}],
             "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                       "prompt_tokens_details": {"cached_tokens": 8}}}
    body = response_of(frame(instructions="Be brief", temperature=0.2), reply)
    response = Response.model_validate(body)
    assert response.id == "resp_0123abcd" and response.object == "response"
    assert response.status == "completed" and response.output_text == "Paris."
    assert response.instructions == "Be brief" and response.temperature == 0.2
    assert response.created_at == 1000
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens,
            response.usage.total_tokens) == (12, 3, 15)
    assert response.usage.input_tokens_details.cached_tokens == 8


def test_tool_calls_become_function_call_items_and_a_cut_answer_is_incomplete() -> None:
    reply = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]}}]}
    response = Response.model_validate(response_of(frame(tools=[WEATHER]), reply))
    assert [item.type for item in response.output] == ["function_call"]
    call = response.output[0]
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_9", "weather", '{"city":"Oslo"}')
    cut = response_of(frame(), {"choices": [{"index": 0, "finish_reason": "length",
                                             "message": {"content": "Once upon"}}]})
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}


def stream(events: ResponseEvents, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = events.opening()
    for piece in chunks:
        out += events.chunk(piece)
    return out + events.closing()


def test_a_text_stream_becomes_typed_events_in_sequence() -> None:
    events = stream(ResponseEvents(frame()), [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop"),
        chunk(usage={"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6})])
    parsed = [EVENTS.validate_python(event) for event in events]
    assert [event.type for event in parsed] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [event.sequence_number for event in parsed] == list(range(len(parsed)))
    assert parsed[6].text == "Hello"
    completed = parsed[-1].response
    assert completed.status == "completed" and completed.output_text == "Hello"
    assert completed.usage.input_tokens == 4 and completed.usage.output_tokens == 2


def test_streamed_tool_calls_become_function_call_items() -> None:
    events = ResponseEvents(frame())
    out = stream(events, [
        chunk({"content": "Let me look."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "time", "arguments": "{}"}}]}),
        chunk({}, "tool_calls")])
    parsed = [EVENTS.validate_python(event) for event in out]
    kinds = [event.type for event in parsed]
    assert kinds.count("response.function_call_arguments.delta") == 3
    assert kinds.count("response.function_call_arguments.done") == 2
    assert kinds.index("response.output_text.done") < kinds.index(
        "response.function_call_arguments.delta")
    final = parsed[-1].response
    assert [item.type for item in final.output] == ["message", "function_call", "function_call"]
    assert [(item.call_id, item.name, item.arguments) for item in final.output[1:]] == [
        ("call_a", "weather", '{"city":"Rome"}'), ("call_b", "time", "{}")]
    added = [event.output_index for event in parsed if event.type == "response.output_item.added"]
    assert added == [0, 1, 2]


def test_a_stream_cut_short_is_incomplete_and_a_failure_says_so() -> None:
    cut = stream(ResponseEvents(frame()), [chunk({"content": "Once"}), chunk({}, "length")])
    assert cut[-1]["type"] == "response.incomplete"
    assert cut[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    events = ResponseEvents(frame())
    out = [*events.opening(), *events.chunk(chunk({"content": "Par"})),
           *events.failure(UpstreamProtocolError("the stream broke"))]
    parsed = [EVENTS.validate_python(event) for event in out]
    assert [event.type for event in parsed[-2:]] == ["error", "response.failed"]
    assert parsed[-2].message == "the stream broke"
    assert parsed[-1].response.status == "failed"
    assert [event.sequence_number for event in parsed] == list(range(len(parsed)))
