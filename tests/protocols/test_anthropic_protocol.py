"""The Messages API over the chat shape, checked against the anthropic SDK's own types: requests
to chat bodies, chat answers to Messages, chat chunk streams to Anthropic's event sequence,
errors to Anthropic's shape and the statuses its SDK maps to its exception classes."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

from switchgear.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    PermissionDenied,
    RateLimited,
    SwitchgearError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from switchgear.protocols.anthropic import (
    MessageEvents,
    chat_request,
    error_status_and_body,
    estimate_tokens,
    message,
    usage,
)

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
PARAMS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(MessageCreateParamsNonStreaming)
WEATHER = {"name": "weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def request(**fields: Any) -> dict[str, Any]:
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}],
            **fields}
    PARAMS.validate_python(body)  # a body the SDK itself could send
    return body


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None, **choice: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "chatcmpl-abc", "object": "chat.completion.chunk",
                            "model": "m", "choices": []}
    if delta is not None or finish is not None:
        body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish,
                            **choice}]
    if usage is not None:
        body["usage"] = usage
    return body


def test_system_multi_turn_sampling_and_user_map_onto_chat() -> None:
    chat = chat_request(request(
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=[{"role": "user", "content": "hi"},
                  {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
                  {"role": "user", "content": [{"type": "text", "text": "and"},
                                               {"type": "text", "text": " you?"}]}],
        temperature=0.5, top_p=0.9, top_k=5, stop_sequences=["END", "\n\n"],
        metadata={"user_id": "u-1"}) | {"stream": True})
    assert chat == {
        "model": "m", "max_tokens": 16, "temperature": 0.5, "top_p": 0.9,
        "stop": ["END", "\n\n"], "stream": True, "user": "u-1",
        "messages": [
            {"role": "system", "content": "Be brief.\n\nBe kind."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "and"},
                                         {"type": "text", "text": " you?"}]},
        ]}


def test_images_become_image_url_parts() -> None:
    chat = chat_request(request(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "What are these?"}]}]))
    assert chat["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "What are these?"}]


def test_tools_tool_use_and_tool_results_become_tool_calls_and_tool_messages() -> None:
    chat = chat_request(request(
        tools=[WEATHER], tool_choice={"type": "tool", "name": "weather",
                                      "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "two calls", "signature": "s"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather",
                 "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather",
                 "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "no station"}]},
                {"type": "text", "text": "Thanks"}]}]))
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": "The weather in a city",
        "parameters": WEATHER["input_schema"]}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no station"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}]


def test_images_of_tool_results_follow_in_a_user_message() -> None:
    chat = chat_request(request(messages=[
        {"role": "user", "content": "Take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                           "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "taken"}, {
                                          "type": "image", "source": {
                                              "type": "base64", "media_type": "image/png",
                                              "data": "iVBORw0KGgo="}}]}]}]))
    assert chat["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "taken"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": "data:image/png;base64,iVBORw0KGgo="}}]}]


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")])
def test_tool_choice_kinds(choice: dict[str, Any], expected: str) -> None:
    assert chat_request(request(tools=[WEATHER], tool_choice=choice))["tool_choice"] == expected


def test_count_tokens_bodies_need_no_max_tokens() -> None:
    chat = chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                        counting=True)
    assert "max_tokens" not in chat
    with pytest.raises(InvalidRequest, match="max_tokens: Field required"):
        chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def test_estimate_grows_with_the_prompt() -> None:
    short = chat_request(request(), counting=True)
    long = chat_request(request(messages=[{"role": "user", "content": "hi " * 400}]),
                        counting=True)
    assert 0 < estimate_tokens(short) < estimate_tokens(long)
    assert estimate_tokens(long) >= 1200 // 4


WRONG: list[dict[str, Any]] = [
    {"model": None}, {"model": 5}, {"model": ""}, {"max_tokens": "10"}, {"max_tokens": 0},
    {"max_tokens": True}, {"max_tokens": 1.5}, {"messages": None}, {"messages": []},
    {"messages": "hi"}, {"messages": [5]}, {"messages": [{"role": "system", "content": "x"}]},
    {"messages": [{"role": ["user"], "content": "x"}]}, {"messages": [{"role": "user"}]},
    {"messages": [{"role": "user", "content": 5}]},
    {"messages": [{"role": "user", "content": []}]},
    {"messages": [{"role": "user", "content": [5]}]},
    {"messages": [{"role": "user", "content": [{"type": 5}]}]},
    {"messages": [{"role": "user", "content": [{"text": "no type"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": "x"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "text/html", "data": "x"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                "content": [{"type": "image"}]}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                "content": [{"type": "document"}]}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                "is_error": "yes"}]}]},
    {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t",
                                                     "name": "f", "input": "{}"}]}]},
    {"messages": [{"role": "assistant", "content": [{"type": "tool_result"}]}]},
    {"system": 5}, {"system": [{"type": "image"}]}, {"system": [{"type": "text"}]},
    {"temperature": 2}, {"temperature": "hot"}, {"top_p": -1}, {"top_k": -1}, {"top_k": "5"},
    {"stop_sequences": "END"}, {"stop_sequences": [5]}, {"stream": "yes"},
    {"metadata": "u"}, {"metadata": {"user_id": 5}}, {"tools": {}}, {"tools": [5]},
    {"tools": [{"name": "f"}]}, {"tools": [{"name": 5, "input_schema": {}}]},
    {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
    {"tools": [{**WEATHER, "description": 5}]}, {"tool_choice": "auto"},
    {"tool_choice": {"type": "sometimes"}}, {"tool_choice": {"type": ["auto"]}},
    {"tool_choice": {"type": "tool"}},
    {"tool_choice": {"type": "auto", "disable_parallel_tool_use": "no"}},
]


@pytest.mark.parametrize("fields", WRONG)
def test_every_wrong_field_is_an_invalid_request(fields: dict[str, Any]) -> None:
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}],
            **fields}
    with pytest.raises(InvalidRequest):
        chat_request(body)


@pytest.mark.parametrize("body", [None, [], "x", 5])
def test_a_body_that_is_no_object_is_an_invalid_request(body: Any) -> None:
    with pytest.raises(InvalidRequest):
        chat_request(body)


def test_a_chat_answer_becomes_a_message() -> None:
    answer = message({
        "id": "chatcmpl-abc", "model": "upstream-m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 3,
                  "prompt_tokens_details": {"cached_tokens": 20}}}, "m", None)
    parsed = Message.model_validate(answer)
    assert parsed.id == "msg_abc" and parsed.model == "upstream-m"
    assert [block.type for block in parsed.content] == ["text"]
    assert parsed.content[0].text == "Hello!"  # type: ignore[union-attr]
    assert (parsed.stop_reason, parsed.stop_sequence) == ("end_turn", None)
    assert (parsed.usage.input_tokens, parsed.usage.cache_read_input_tokens,
            parsed.usage.output_tokens) == (10, 20, 3)


def test_tool_calls_become_tool_use_blocks() -> None:
    answer = message({
        "id": "chatcmpl-abc",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7}}, "m", None)
    parsed = Message.model_validate(answer)
    assert parsed.model == "m" and parsed.stop_reason == "tool_use"
    block = parsed.content[0]
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == ("call_1", "weather", {"city": "Paris"})


@pytest.mark.parametrize(("finish", "matched", "reason", "sequence"), [
    ("stop", None, "end_turn", None), ("length", None, "max_tokens", None),
    ("stop", "END", "stop_sequence", "END"), ("stop", "OTHER", "end_turn", None),
    ("content_filter", None, "refusal", None), (None, None, "end_turn", None)])
def test_stop_reasons(finish: str | None, matched: str | None, reason: str,
                      sequence: str | None) -> None:
    answer = message({"choices": [{"finish_reason": finish, "stop_reason": matched,
                                   "message": {"content": "x"}}]}, "m", ["END"])
    assert (answer["stop_reason"], answer["stop_sequence"]) == (reason, sequence)


def test_tool_call_arguments_that_are_no_object_are_the_upstreams_fault() -> None:
    with pytest.raises(UpstreamProtocolError):
        message({"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "[1"}}]}}]}, "m", None)


def test_usage_leaves_cache_reads_and_writes_out_of_input_tokens() -> None:
    assert usage({"prompt_tokens": 100, "completion_tokens": 9, "prompt_tokens_details": {
        "cached_tokens": 60, "cache_write_tokens": 30}}) == {
        "input_tokens": 10, "output_tokens": 9, "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 30}
    assert usage(None) == usage({"prompt_tokens": "x"}) == {
        "input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0}


def replay(chunks: list[dict[str, Any]], stop: Any = None) -> list[dict[str, Any]]:
    """The events of ``chunks``, each checked against the SDK's event types."""
    events = MessageEvents("m", stop)
    out = [event for chunk in chunks for event in events.chunk(chunk)]
    out.extend(events.end())
    for event in out:
        if event["type"] != "ping":  # the SDK skips pings before it reads them
            EVENTS.validate_python(event)
    return out


def accumulate(events: list[dict[str, Any]]) -> Message:
    """The Message the SDK's own stream accumulation makes of ``events``."""
    from anthropic.lib.streaming._messages import accumulate_event

    snapshot = None
    buffers: dict[int, bytes] = {}
    for event in events:
        if event["type"] != "ping":
            snapshot = accumulate_event(event=EVENTS.validate_python(event),
                                        current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None
    return snapshot


def test_a_text_stream_becomes_anthropics_event_sequence() -> None:
    events = replay([
        chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
        chunk({"content": "lo"}), chunk({}, "length"),
        chunk(usage={"prompt_tokens": 12, "completion_tokens": 2,
                     "prompt_tokens_details": {"cached_tokens": 4}})])
    assert [event["type"] for event in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    final = accumulate(events)
    assert final.content[0].text == "Hello"  # type: ignore[union-attr]
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens,
            final.usage.output_tokens) == (8, 4, 2)


def test_streamed_text_then_tool_calls_become_blocks_with_input_json_deltas() -> None:
    events = replay([
        chunk({"role": "assistant", "content": "Let me look."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                               "function": {"name": "time", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"), chunk(usage={"prompt_tokens": 3, "completion_tokens": 9})])
    starts = [event for event in events if event["type"] == "content_block_start"]
    assert [(e["index"], e["content_block"]["type"]) for e in starts] == [
        (0, "text"), (1, "tool_use"), (2, "tool_use")]
    stops = [event["index"] for event in events if event["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    final = accumulate(events)
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("text", None), ("tool_use", {"city": "Paris"}), ("tool_use", {})]


def test_a_stream_meeting_a_stop_sequence_says_which() -> None:
    events = replay([chunk({"content": "a"}), chunk({}, "stop", stop_reason="END")], ["END"])
    delta = next(event for event in events if event["type"] == "message_delta")
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_an_empty_stream_still_is_a_whole_message() -> None:
    final = accumulate(replay([]))
    assert final.content == [] and final.stop_reason == "end_turn"


def sdk_error(status: int, body: dict[str, Any]) -> anthropic.APIStatusError:
    """The exception the anthropic SDK raises for an answer with ``status`` and ``body``."""
    client = anthropic.Anthropic(api_key="k", base_url="http://127.0.0.1:9")
    response = httpx2.Response(status, json=body, request=httpx2.Request(
        "POST", "http://127.0.0.1:9/v1/messages"))
    return client._make_status_error("failed", body=body, response=response)


@pytest.mark.parametrize(("error", "status", "kind", "exception"), [
    (InvalidRequest("bad"), 400, "invalid_request_error", anthropic.BadRequestError),
    (AuthenticationFailed("who"), 401, "authentication_error", anthropic.AuthenticationError),
    (PermissionDenied("no"), 403, "permission_error", anthropic.PermissionDeniedError),
    (ModelNotFound("none"), 404, "not_found_error", anthropic.NotFoundError),
    (BodyTooLarge("big"), 413, "request_too_large", anthropic.ContentTooLargeError),
    (RateLimited("slow"), 429, "rate_limit_error", anthropic.RateLimitError),
    (Overloaded("busy"), 529, "overloaded_error", anthropic.OverloadedError),
    (UpstreamStatusError("boom", status=500), 500, "api_error", anthropic.InternalServerError),
    (UpstreamTimeout("late"), 504, "timeout_error", anthropic.GatewayTimeoutError),
    (SwitchgearError("internal"), 500, "api_error", anthropic.InternalServerError),
])
def test_errors_leave_in_anthropics_shape_and_raise_the_sdks_own_class(
        error: SwitchgearError, status: int, kind: str,
        exception: type[anthropic.APIStatusError]) -> None:
    got_status, body = error_status_and_body(error, "req_1")
    assert (got_status, body) == (status, {"type": "error", "request_id": "req_1", "error": {
        "type": kind, "message": error.message}})
    raised = sdk_error(got_status, body)
    assert type(raised) is exception
    assert raised.type == kind
