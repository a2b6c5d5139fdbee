"""The anthropic backend against a fake Anthropic Messages API over real HTTP that records what it
receives (x-api-key, anthropic-version, the translated body) and answers, plain and streamed, in
Anthropic's exact shapes with prompt-cache usage; its errors mapped; and a chat request through
the gateway with the official openai client: the answer, the usage, and the cost with cache reads
and writes at the built-in table's prices."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from switchgear.backends import build_backend
from switchgear.backends.anthropic import AnthropicBackend
from switchgear.config import Config, DeploymentConfig
from switchgear.errors import InvalidRequest, SwitchgearError, UpstreamProtocolError
from switchgear.exchange import Operation
from switchgear.protocols.anthropic_upstream import messages_request

from servers import BackgroundLoop, aiohttp_server, gateway

KEY = "sk-ant-test-0123456789"
MODEL = "claude-sonnet-4-5-20250929"
#: What the fake reports: 12 fresh input tokens, 100 read from the cache, 50 written to it.
USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 50, "cache_read_input_tokens": 100,
         "output_tokens": 7}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
#: What USAGE costs at claude-sonnet-4-5's built-in prices: 3 per million in, 3.75 written to the
#: cache, 0.30 read from it, 15 out.
COST = (12 * 3.0 + 50 * 3.75 + 100 * 0.30 + 7 * 15.0) / 1_000_000
#: Anthropic's error type for each status the fake can be told to answer.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


@dataclass
class FakeAnthropic:
    """Anthropic's Messages API as far as the tests need it: a text answer, or a tool_use when
    the request offers tools and the conversation has no tool_result yet; ``fail`` makes it
    answer that status in Anthropic's error shape instead, ``fail_mid_stream`` sends an error
    event after the first text delta."""

    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    fail: int | None = None
    fail_mid_stream: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, request: web.Request) -> web.Response:
        if request.headers.get("x-api-key") != KEY:
            return self.error(401)
        return web.json_response({"data": [{"type": "model", "id": MODEL}], "has_more": False})

    def error(self, status: int) -> web.Response:
        return web.json_response({"type": "error", "error": {
            "type": ERROR_TYPES[status], "message": f"fake {ERROR_TYPES[status]}"}},
            status=status, headers={"retry-after": "3"} if status == 429 else None)

    def content(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        answered = any(block.get("type") == "tool_result"
                       for message in body["messages"] if isinstance(message["content"], list)
                       for block in message["content"])
        if body.get("tools") and not answered:
            return [{"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                     "input": {"city": "Paris"}}]
        return [{"type": "text", "text": "Hello from Claude"}]

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append((dict(request.headers), body))
        if request.headers.get("x-api-key") != KEY:
            return self.error(401)
        if self.fail is not None:
            return self.error(self.fail)
        content = self.content(body)
        stop = "tool_use" if content[-1]["type"] == "tool_use" else "end_turn"
        if not body.get("stream"):
            return web.json_response({
                "id": "msg_01", "type": "message", "role": "assistant", "model": MODEL,
                "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": USAGE})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in self.events(content, stop):
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                                 .encode())
        return response

    def events(self, content: list[dict[str, Any]], stop: str) -> Iterator[dict[str, Any]]:
        """Anthropic's event sequence for ``content``, text in two deltas, tool input in two
        partial JSON pieces, with a ping."""
        yield {"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "model": MODEL,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {**USAGE, "output_tokens": 1}}}
        yield {"type": "ping"}
        for index, block in enumerate(content):
            if block["type"] == "text":
                yield {"type": "content_block_start", "index": index,
                       "content_block": {"type": "text", "text": ""}}
                half = len(block["text"]) // 2
                for piece in (block["text"][:half], block["text"][half:]):
                    yield {"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": piece}}
                    if self.fail_mid_stream:
                        yield {"type": "error", "error": {"type": "overloaded_error",
                                                          "message": "Overloaded"}}
                        return
            else:
                yield {"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}
                text = json.dumps(block["input"])
                for piece in (text[:5], text[5:]):
                    yield {"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": piece}}
            yield {"type": "content_block_stop", "index": index}
        yield {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
               "usage": {"output_tokens": USAGE["output_tokens"]}}
        yield {"type": "message_stop"}


@pytest.fixture
def fake(background: BackgroundLoop, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[tuple[str, FakeAnthropic]]:
    monkeypatch.setenv("SG_TEST_ANTHROPIC_KEY", KEY)
    upstream = FakeAnthropic()
    with aiohttp_server(upstream.app(), background) as url:
        yield url, upstream


def deployment(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "claude", "backend": "anthropic", "url": url, "model": MODEL,
            "api_key_env": "SG_TEST_ANTHROPIC_KEY", **extra}


def run(background: BackgroundLoop, config: dict[str, Any], operation: Operation,
        body: dict[str, Any], stream: bool = False) -> Any:
    """What the backend answers (a body, or the list of chunks), or the error it raises."""
    backend = build_backend(DeploymentConfig.model_validate(config))
    assert isinstance(backend, AnthropicBackend)

    async def call() -> Any:
        await backend.start()
        try:
            if stream:
                return [chunk async for chunk in backend.stream(operation, body)]
            return await backend.complete(operation, body)
        except SwitchgearError as error:
            return error
        finally:
            await backend.aclose()

    return background.run(call())


CHAT = {"model": MODEL, "max_tokens": 64, "stop": "\n\n", "temperature": 0.2,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Say hello"}]}


def test_a_chat_request_is_sent_as_a_messages_request_with_the_keys_headers(
        fake: tuple[str, FakeAnthropic], background: BackgroundLoop,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, upstream = fake
    monkeypatch.setenv("SG_TEST_BETA", "prompt-caching-2024-07-31")
    answer = run(background, deployment(url, anthropic={"version": "2023-01-01"},
                                        headers_env={"anthropic-beta": "SG_TEST_BETA"}),
                 Operation.CHAT, CHAT)
    headers, body = upstream.received[-1]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-01-01"
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert "Authorization" not in headers
    assert body == {"model": MODEL, "max_tokens": 64, "temperature": 0.2, "stream": False,
                    "system": [{"type": "text", "text": "Be brief."}],
                    "messages": [{"role": "user", "content": [{"type": "text",
                                                               "text": "Say hello"}]}],
                    "stop_sequences": ["\n\n"]}
    assert answer["object"] == "chat.completion" and answer["model"] == MODEL
    assert answer["choices"][0]["message"] == {"role": "assistant",
                                               "content": "Hello from Claude"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 162, "completion_tokens": 7,
                               "total_tokens": 169, "prompt_tokens_details": {
                                   "cached_tokens": 100, "cache_write_tokens": 50}}


def test_max_tokens_comes_from_the_request_or_the_configured_default(
        fake: tuple[str, FakeAnthropic], background: BackgroundLoop) -> None:
    url, upstream = fake
    hello = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    run(background, deployment(url), Operation.CHAT, hello)
    assert upstream.received[-1][1]["max_tokens"] == 4096
    assert upstream.received[-1][0]["anthropic-version"] == "2023-06-01"
    run(background, deployment(url, anthropic={"max_tokens": 300}), Operation.CHAT, hello)
    assert upstream.received[-1][1]["max_tokens"] == 300
    run(background, deployment(url), Operation.CHAT, {**hello, "max_completion_tokens": 9})
    assert upstream.received[-1][1]["max_tokens"] == 9


def test_a_stream_becomes_chat_chunks_with_the_usage_last(
        fake: tuple[str, FakeAnthropic], background: BackgroundLoop) -> None:
    url, upstream = fake
    chunks = run(background, deployment(url), Operation.CHAT,
                 {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                 stream=True)
    assert upstream.received[-1][1]["stream"] is True
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(chunk["choices"][0]["delta"].get("content") or ""
                   for chunk in chunks if chunk["choices"])
    assert text == "Hello from Claude"
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks if chunk["choices"]][-1] \
        == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 162
    assert chunks[-1]["usage"]["completion_tokens"] == 7
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["id"] == "msg_01"
               for chunk in chunks)
    without = run(background, deployment(url), Operation.CHAT, {**CHAT, "stream": True},
                  stream=True)
    assert all(chunk["choices"] for chunk in without)  # usage not asked for, not sent


def test_a_streamed_tool_call_arrives_as_openai_tool_call_deltas(
        fake: tuple[str, FakeAnthropic], background: BackgroundLoop) -> None:
    url, upstream = fake
    chunks = run(background, deployment(url), Operation.CHAT,
                 {**CHAT, "tools": [WEATHER_TOOL], "tool_choice": "required", "stream": True},
                 stream=True)
    sent = upstream.received[-1][1]
    assert sent["tools"] == [{"name": "get_weather", "description": "The weather in a city",
                              "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    assert sent["tool_choice"] == {"type": "any"}
    calls = [call for chunk in chunks if chunk["choices"]
             for call in chunk["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0] == {"index": 0, "id": "toolu_01", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert "".join(call["function"]["arguments"] for call in calls) == '{"city": "Paris"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(("status", "expected", "retryable"), [
    # a refused key is the gateway's fault (502), which another deployment may not share
    (400, 400, False), (401, 502, True), (429, 429, True), (500, 500, True), (529, 503, True),
])
def test_error_answers_are_mapped(fake: tuple[str, FakeAnthropic], background: BackgroundLoop,
                                  status: int, expected: int, retryable: bool) -> None:
    url, upstream = fake
    upstream.fail = status
    for stream in (False, True):
        error = run(background, deployment(url), Operation.CHAT,
                    {**CHAT, "stream": stream}, stream=stream)
        assert isinstance(error, SwitchgearError)
        assert (error.status, error.retryable) == (expected, retryable), error
        if status == 400:
            assert error.type == "invalid_request_error" and "fake" in error.message
        if status == 429:
            assert error.retry_after == 3


def test_an_error_event_mid_stream_fails_the_stream(
        fake: tuple[str, FakeAnthropic], background: BackgroundLoop) -> None:
    url, upstream = fake
    upstream.fail_mid_stream = True
    error = run(background, deployment(url), Operation.CHAT, {**CHAT, "stream": True},
                stream=True)
    assert isinstance(error, UpstreamProtocolError) and "Overloaded" in error.message


def test_only_chat_is_served(fake: tuple[str, FakeAnthropic],
                             background: BackgroundLoop) -> None:
    url, upstream = fake
    for operation, body in ((Operation.EMBEDDINGS, {"model": MODEL, "input": "x"}),
                            (Operation.COMPLETIONS, {"model": MODEL, "prompt": "x"})):
        error = run(background, deployment(url), operation, body)
        assert isinstance(error, InvalidRequest) and error.status == 400
        assert "chat completions only" in error.message
    assert upstream.received == []


def test_the_health_check_lists_models_or_asks_one_token_with_the_key(
        fake: tuple[str, FakeAnthropic], background: BackgroundLoop,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, upstream = fake

    def check(**settings: Any) -> str | None:
        backend = build_backend(DeploymentConfig.model_validate(deployment(url, **settings)))

        async def call() -> str | None:
            await backend.start()
            try:
                await backend.check()
            except SwitchgearError as error:
                return error.message
            finally:
                await backend.aclose()
            return None

        result: str | None = background.run(call())
        return result

    assert check() is None
    assert upstream.received == []  # GET /v1/models only
    assert check(health_check="completion") is None
    assert upstream.received[-1][1] == {"model": MODEL, "max_tokens": 1,
                                        "messages": [{"role": "user", "content": "ping"}]}
    monkeypatch.setenv("SG_TEST_ANTHROPIC_KEY", "wrong")
    assert "health check answered 401" in (check() or "")
    assert "health check answered 401" in (check(health_check="completion") or "")


def test_a_tool_round_trip_translates_calls_and_results() -> None:
    history = {"model": MODEL, "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather in Paris and Rome? See"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "24C"}],
        "tools": [WEATHER_TOOL], "parallel_tool_calls": False,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    body = messages_request(history, 100)
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather in Paris and Rome? See"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather",
             "input": {"city": "Rome"}}]},
        {"role": "user", "content": [  # both results in one turn, as Anthropic requires
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"}]}]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather",
                                   "disable_parallel_tool_use": True}


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
])
def test_what_anthropic_cannot_answer_is_refused(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        messages_request({**CHAT, **extra}, 100)
    assert raised.value.param == param and raised.value.status == 400


def rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("select * from request_log")]


def test_the_official_client_through_the_gateway_gets_the_answer_usage_and_cost(
        fake: tuple[str, FakeAnthropic], make_config: Callable[..., Config],
        tmp_path: Path) -> None:
    url, upstream = fake
    config = make_config({"claude": {"deployments": [deployment(url)]}})
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="unused",
                                                    max_retries=0, timeout=30) as sdk:
        answer = sdk.chat.completions.create(model="claude", max_tokens=50, messages=[
            {"role": "user", "content": "Say hello"}])
        assert answer.choices[0].message.content == "Hello from Claude"
        assert answer.usage is not None and answer.usage.prompt_tokens == 162
        assert answer.usage.prompt_tokens_details is not None
        assert answer.usage.prompt_tokens_details.cached_tokens == 100

        asked = [{"role": "user", "content": "Weather in Paris?"}]
        stream = sdk.chat.completions.create(model="claude", messages=asked, stream=True,
                                             tools=[WEATHER_TOOL],
                                             stream_options={"include_usage": True})
        chunks = list(stream)
        calls = [call for chunk in chunks if chunk.choices
                 for call in chunk.choices[0].delta.tool_calls or []]
        assert calls[0].id == "toolu_01" and calls[0].function is not None
        arguments = "".join(call.function.arguments or "" for call in calls if call.function)
        assert json.loads(arguments) == {"city": "Paris"}
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 169

        final = sdk.chat.completions.create(model="claude", tools=[WEATHER_TOOL],
                                            messages=[*asked, {
            "role": "assistant", "content": None, "tool_calls": [{
                "id": "toolu_01", "type": "function",
                "function": {"name": "get_weather", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "18C, sunny"}])
        assert final.choices[0].message.content == "Hello from Claude"
    assert upstream.received[-1][1]["messages"][-1] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C, sunny"}]}

    records = rows(tmp_path / "records.db")
    assert len(records) == 3
    for record in records:
        assert (record["deployment"], record["status"]) == ("claude", 200)
        assert (record["prompt_tokens"], record["completion_tokens"], record["cached_tokens"],
                record["cache_write_tokens"]) == (162, 7, 100, 50)
        assert record["cost"] == pytest.approx(COST)
        assert record["cached_cost"] == pytest.approx(100 * 0.30 / 1_000_000)


def test_the_anthropic_sdk_through_the_gateway_sees_the_upstreams_own_usage(
        fake: tuple[str, FakeAnthropic], make_config: Callable[..., Config],
        tmp_path: Path) -> None:
    """Messages in, Messages out, over chat inside: both translations compose, and the prompt
    cache's counts come back to the client as the upstream reported them."""
    url, upstream = fake
    config = make_config({"claude": {"deployments": [deployment(url)]}})
    with gateway(config) as base_url, anthropic.Anthropic(
            base_url=base_url.removesuffix("/v1"), api_key="unused", max_retries=0,
            timeout=30) as client:
        message = client.messages.create(
            model="claude", max_tokens=50, system="Be brief.", stop_sequences=["###"],
            messages=[{"role": "user", "content": "Say hello"}])
        assert [block.type for block in message.content] == ["text"]
        assert message.content[0].text == "Hello from Claude"
        assert message.stop_reason == "end_turn"
        assert (message.usage.input_tokens, message.usage.cache_read_input_tokens,
                message.usage.cache_creation_input_tokens, message.usage.output_tokens) \
            == (12, 100, 50, 7)
        with client.messages.stream(model="claude", max_tokens=50, messages=[
                {"role": "user", "content": "Say hello"}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == "Hello from Claude"
        assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 7)
    sent = upstream.received[0][1]
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["stop_sequences"] == ["###"] and sent["max_tokens"] == 50
    records = rows(tmp_path / "records.db")
    assert len(records) == 2  # one per request, the streamed one too
    assert {(r["api"], r["prompt_tokens"], r["cached_tokens"], r["cache_write_tokens"],
             r["completion_tokens"]) for r in records} == {("anthropic.messages", 162, 100, 50, 7)}
    assert [r["cost"] for r in records] == pytest.approx([COST, COST])  # as a chat request's


def test_the_responses_client_through_the_gateway_to_an_anthropic_upstream(
        fake: tuple[str, FakeAnthropic], make_config: Callable[..., Config],
        tmp_path: Path) -> None:
    url, _ = fake
    config = make_config({"claude": {"deployments": [deployment(url)]}})
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="unused",
                                                    max_retries=0, timeout=30) as sdk:
        response = sdk.responses.create(model="claude", input="Say hello",
                                        instructions="Be brief.")
        assert response.output_text == "Hello from Claude"
        assert response.usage is not None
        assert (response.usage.input_tokens, response.usage.output_tokens,
                response.usage.input_tokens_details.cached_tokens) == (162, 7, 100)
        with sdk.responses.stream(model="claude", input="Say hello") as stream:
            final = stream.get_final_response()
        assert final.output_text == "Hello from Claude"
        assert final.usage is not None and final.usage.input_tokens == 162
    records = rows(tmp_path / "records.db")
    assert len(records) == 2
    assert {(r["api"], r["prompt_tokens"], r["cached_tokens"], r["cache_write_tokens"],
             r["completion_tokens"]) for r in records} == {("openai.responses", 162, 100, 50, 7)}
    assert [r["cost"] for r in records] == pytest.approx([COST, COST])
