"""POST /v1/messages and /v1/messages/count_tokens end to end: the official anthropic SDK against
a real gateway over a real simulator (and the embedded model), keys in x-api-key, records in a
real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import urllib3

from switchgear.config import Config, StoreConfig
from switchgear.protocols.anthropic import chat_request, estimate_tokens
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator
from switchgear.store.records import RequestRecord

from servers import create_key, fetch_records, gateway, wait_for_record

ADMIN = "sg-messages-admin-0123456789abcdef0123456789"
#: Answers always longer than the tests' max_tokens, so two requests for the same prompt use
#: the same tokens; half of each prompt comes from the upstream's prompt cache.
LONG_ANSWERS = ModelOptions(ttft_ms=2, tpot_ms=0.1, mean_output_tokens=400, output_spread=0.01,
                            seed=3, cached_prompt_share=0.5)
PRICE = {"input_per_million": 3.0, "cached_input_per_million": 0.3, "output_per_million": 15.0}
HELLO = [{"role": "user", "content": "Say hello to the gateway."}]
#: Greedy sampling (the SDK no longer names temperature; the API still takes it).
GREEDY = {"temperature": 0}
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


@dataclass
class Served:
    """A gateway requiring keys, over simulators; a client key and the records' store."""

    root: str
    key: str
    store_url: str

    def client(self, key: str | None = None) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.root, api_key=key or self.key, max_retries=0,
                                   timeout=30)

    def record(self, request_id: str) -> RequestRecord:
        return wait_for_record(self.store_url, request_id)


@pytest.fixture
def served(make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Served]:
    """Models: ``sim`` (a real simulator over HTTP), ``broken`` (answers 500), ``cut`` (streams
    cut after their first chunk)."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)

    def http(sim: RunningSimulator) -> dict[str, Any]:
        return {"deployments": [{"name": "sim", "backend": "openai_http", "url": sim.base_url,
                                 "model": "sim", "price": PRICE}]}

    config = make_config({
        "sim": http(simulators(LONG_ANSWERS)),
        "broken": http(simulators(LONG_ANSWERS, Faults(error_rate=1.0))),
        "cut": http(simulators(LONG_ANSWERS, Faults(disconnect_rate=1.0))),
    }, max_body_bytes=64 * 1024)
    with gateway(config) as base_url:
        secret = create_key(base_url, ADMIN, tenant="acme")["secret"]
        yield Served(base_url.removesuffix("/v1"), secret, f"sqlite:///{tmp_path}/records.db")


def chat_twin(served: Served, body: dict[str, Any]) -> RequestRecord:
    """The record of the chat request a Messages ``body`` translates to, sent to /v1/chat."""
    chat = chat_request(body)
    with openai.OpenAI(base_url=served.root + "/v1", api_key=served.key, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(**chat)
    return served.record(raw.headers["x-request-id"])


def test_a_message_is_served_recorded_and_priced_as_its_chat_twin(served: Served) -> None:
    body = {"model": "sim", "max_tokens": 12, "messages": HELLO,
            "metadata": {"user_id": "user-42"}}
    with served.client() as client:
        raw = client.messages.with_raw_response.create(**body)
    answer = raw.parse()
    assert answer.type == "message" and answer.role == "assistant"
    assert answer.content[0].type == "text" and answer.content[0].text
    assert answer.stop_reason == "max_tokens" and answer.usage.output_tokens == 12
    row = served.record(raw.headers["x-request-id"])
    assert (row.api, row.tenant, row.user_id, row.status, row.stream) == (
        "anthropic.messages", "acme", "user-42", 200, False)
    # The upstream's usage, exactly: Anthropic's input_tokens leaves the cache reads out.
    assert answer.usage.cache_read_input_tokens == row.cached_tokens > 0
    assert answer.usage.input_tokens + row.cached_tokens == row.prompt_tokens
    assert row.completion_tokens == 12
    twin = chat_twin(served, body)
    assert (twin.api, twin.prompt_tokens, twin.cached_tokens, twin.completion_tokens) == (
        "openai", row.prompt_tokens, row.cached_tokens, row.completion_tokens)
    assert row.cost == pytest.approx(twin.cost) and row.cost > 0


def test_a_streamed_message_makes_one_record_with_the_upstreams_usage(served: Served) -> None:
    body = {"model": "sim", "max_tokens": 10, "messages": HELLO}
    with served.client() as client, client.messages.stream(**body) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "max_tokens"
    row = served.record(request_id)
    assert [r.request_id for r in fetch_records(served.store_url)].count(request_id) == 1
    assert (row.api, row.stream, row.status) == ("anthropic.messages", True, 200)
    assert (final.usage.input_tokens + final.usage.cache_read_input_tokens,
            final.usage.cache_read_input_tokens, final.usage.output_tokens) == (
        row.prompt_tokens, row.cached_tokens, row.completion_tokens)
    assert row.cached_tokens and row.completion_tokens == 10
    twin = chat_twin(served, body)
    assert row.cost == pytest.approx(twin.cost) and row.cost > 0


def test_create_with_stream_true_yields_anthropics_event_sequence(served: Served) -> None:
    with served.client() as client:
        events = list(client.messages.create(model="sim", max_tokens=3, messages=HELLO,
                                             stream=True))
    kinds = [event.type for event in events]
    assert kinds == ["message_start", "content_block_start", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "max_tokens" and delta.usage.output_tokens == 3


def test_raw_stream_carries_event_names_and_a_ping(served: Served) -> None:
    response = urllib3.request(
        "POST", served.root + "/v1/messages", timeout=10,
        headers={"x-api-key": served.key, "anthropic-version": "2023-06-01",
                 "content-type": "application/json"},
        body=json.dumps({"model": "sim", "max_tokens": 2, "stream": True, "messages": HELLO}))
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    blocks = response.data.decode().strip().split("\n\n")
    names = [block.split("\n")[0] for block in blocks]
    assert names[:2] == ["event: message_start", "event: ping"]
    assert names[-1] == "event: message_stop"
    for block in blocks:
        name, data = block.split("\n")
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")


def test_a_tool_use_round_trip_plain_and_streamed(served: Served) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    with served.client() as client:
        called = client.messages.create(model="sim", max_tokens=64, tools=[WEATHER],
                                        messages=ask)
        assert called.stop_reason == "tool_use"
        use = called.content[-1]
        assert use.type == "tool_use" and use.name == "get_weather"
        assert use.input == {"city": "sim"}
        with client.messages.stream(model="sim", max_tokens=64, tools=[WEATHER],
                                    tool_choice={"type": "tool", "name": "get_weather"},
                                    messages=ask) as stream:
            streamed = stream.get_final_message()
        assert streamed.stop_reason == "tool_use"
        assert [(b.type, getattr(b, "input", None)) for b in streamed.content] == [
            ("tool_use", {"city": "sim"})]
        answered = client.messages.create(model="sim", max_tokens=8, tools=[WEATHER], messages=[
            *ask, {"role": "assistant", "content": called.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": "Sunny, 21 degrees"}]}])
    assert answered.stop_reason == "max_tokens"
    assert [block.type for block in answered.content] == ["text"]


def test_system_and_turns_reach_the_model(served: Served) -> None:
    body = {"model": "sim", "max_tokens": 4,
            "system": [{"type": "text", "text": "You are a terse assistant of the gateway."}],
            "messages": [*HELLO, {"role": "assistant", "content": "Hello, gateway."},
                         {"role": "user", "content": [{"type": "text", "text": "Again,"},
                                                      {"type": "text", "text": " louder."}]}]}
    with served.client() as client:
        raw = client.messages.with_raw_response.create(**body)
        short = client.messages.create(model="sim", max_tokens=4, messages=HELLO)
    row = served.record(raw.headers["x-request-id"])
    assert row.prompt_tokens == chat_twin(served, body).prompt_tokens
    full = raw.parse().usage
    assert full.input_tokens + full.cache_read_input_tokens > (
        short.usage.input_tokens + short.usage.cache_read_input_tokens)


def test_count_tokens(served: Served) -> None:
    body = {"model": "sim", "system": "Be brief.", "tools": [WEATHER], "messages": HELLO}
    with served.client() as client:
        counted = client.messages.count_tokens(**body)
        longer = client.messages.count_tokens(
            model="sim", messages=[{"role": "user", "content": "word " * 500}])
        with pytest.raises(anthropic.NotFoundError):
            client.messages.count_tokens(model="nope", messages=HELLO)
        with served.client("sk-wrong") as stranger, pytest.raises(
                anthropic.AuthenticationError):
            stranger.messages.count_tokens(**body)
    assert counted.input_tokens == estimate_tokens(chat_request(body, counting=True))
    assert longer.input_tokens > counted.input_tokens


def test_errors_raise_the_sdks_own_classes(served: Served) -> None:
    with served.client() as client:
        with pytest.raises(anthropic.BadRequestError) as missing:
            client.post("/v1/messages", body={"model": "sim", "messages": HELLO},
                        cast_to=object)
        assert missing.value.type == "invalid_request_error"
        assert "max_tokens" in str(missing.value.body)
        with pytest.raises(anthropic.NotFoundError) as unknown:
            client.messages.create(model="nope", max_tokens=4, messages=HELLO)
        assert unknown.value.type == "not_found_error"
        with pytest.raises(anthropic.InternalServerError) as broken:
            client.messages.create(model="broken", max_tokens=4, messages=HELLO)
        assert broken.value.type == "api_error"
    with served.client("sk-wrong") as stranger, pytest.raises(
            anthropic.AuthenticationError) as wrong:
        stranger.messages.create(model="sim", max_tokens=4, messages=HELLO)
    assert wrong.value.type == "authentication_error"
    assert wrong.value.body == {"type": "error", "request_id": wrong.value.response.headers[
        "x-request-id"], "error": {"type": "authentication_error",
                                   "message": wrong.value.body["error"]["message"]}}  # type: ignore[index]
    slow = create_key(served.root, ADMIN, tenant="acme", limits={"rpm": 1})["secret"]
    with served.client(slow) as client:
        client.messages.create(model="sim", max_tokens=2, messages=HELLO)
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(model="sim", max_tokens=2, messages=HELLO)
    assert limited.value.type == "rate_limit_error"
    assert limited.value.response.headers["retry-after"]


def test_a_bearer_token_works_as_well_as_x_api_key(served: Served) -> None:
    with anthropic.Anthropic(base_url=served.root, auth_token=served.key, api_key=None,
                             max_retries=0) as client:
        assert client.messages.create(model="sim", max_tokens=2, messages=HELLO).content


def test_a_stream_cut_after_its_first_byte_ends_with_an_error_event(served: Served) -> None:
    with served.client() as client, client.messages.stream(
            model="cut", max_tokens=50, messages=HELLO) as stream:
        request_id = stream.response.headers["x-request-id"]
        with pytest.raises(anthropic.APIStatusError) as cut:
            stream.get_final_message()
    assert cut.value.type == "api_error"
    row = served.record(request_id)
    assert row.api == "anthropic.messages" and row.error_type is not None


def raw_post(served: Served, body: bytes, content_type: str = "application/json",
             path: str = "/v1/messages") -> tuple[int, Any]:
    response = urllib3.request("POST", served.root + path, body=body, timeout=10, headers={
        "x-api-key": served.key, "content-type": content_type})
    return response.status, json.loads(response.data)


HOSTILE: list[tuple[bytes, str, int, str]] = [
    (b"{", "application/json", 400, "invalid_request_error"),
    (b"[1, 2]", "application/json", 400, "invalid_request_error"),
    (b"null", "application/json", 400, "invalid_request_error"),
    (b"x" * (65 * 1024), "application/json", 413, "request_too_large"),
    (b"{}", "text/plain", 415, "invalid_request_error"),
    (b"[" * 10_000 + b"]" * 10_000, "application/json", 400, "invalid_request_error"),
    *[(json.dumps({"model": "sim", "max_tokens": 4, "messages": HELLO, field: value}).encode(),
       "application/json", 400, "invalid_request_error") for field, value in [
        ("max_tokens", "4"), ("max_tokens", -1), ("model", 7), ("messages", {}),
        ("system", {"text": "x"}), ("stop_sequences", "x"), ("temperature", "hot"),
        ("tools", [{"name": "x"}]), ("tool_choice", "any"), ("metadata", []),
        ("stream", 1), ("messages", [{"role": "user", "content": [{"type": "audio"}]}]),
        ("messages", [{"role": "user", "content": [{"type": "text", "text": None}]}]),
        ("messages", [{"role": "user", "content": [{"type": "text", "text": "x"}] * 0}]),
        ("temperature", 1e308 * 10)]],
]


@pytest.mark.parametrize(("body", "content_type", "status", "kind"), HOSTILE)
def test_hostile_input_is_refused_in_anthropics_shape(
        served: Served, body: bytes, content_type: str, status: int, kind: str) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        got, answer = raw_post(served, body, content_type, path)
        if path.endswith("count_tokens") and status == 400 and b'"max_tokens"' in body:
            continue  # count_tokens reads no max_tokens nor sampling fields
        assert (got, answer["type"], answer["error"]["type"]) == (status, "error", kind), answer
        assert answer["error"]["message"]


def test_a_wrong_method_is_refused_in_anthropics_shape(served: Served) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = urllib3.request("GET", served.root + path, timeout=10,
                                   headers={"x-api-key": served.key})
        answer = json.loads(response.data)
        assert (response.status, answer["type"], answer["error"]["type"]) == (
            405, "error", "invalid_request_error")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The default config (the embedded SmolLM2 as 'smollm2'), open mode; the gateway's root."""
    store_url = f"sqlite:///{tmp_path_factory.mktemp('messages')}/records.db"
    with gateway(Config(store=StoreConfig(url=store_url, flush_interval_ms=20))) as base_url:
        yield base_url.removesuffix("/v1")


@pytest.mark.model
def test_the_embedded_model_answers_messages_plain_streamed_and_stopped(embedded: str) -> None:
    with anthropic.Anthropic(base_url=embedded, api_key="unused", max_retries=0) as client:
        plain = client.messages.create(
            model="smollm2", max_tokens=8, extra_body=GREEDY, system="Answer in one word.",
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert plain.content[0].type == "text" and plain.content[0].text.strip()
        assert plain.stop_reason in ("end_turn", "max_tokens")
        assert plain.usage.input_tokens > 5 and 0 < plain.usage.output_tokens <= 8
        with client.messages.stream(
                model="smollm2", max_tokens=8, extra_body=GREEDY,
                messages=[{"role": "user", "content": "Count from one to ten."}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text.strip() and final.usage.output_tokens > 0
        stopped = client.messages.create(
            model="smollm2", max_tokens=40, extra_body=GREEDY, stop_sequences=["3"],
            messages=[{"role": "user", "content": "Count from 1 to 10 in digits."}])
        said = "".join(b.text for b in stopped.content if b.type == "text")
        assert "3" not in said and "4" not in said
        assert stopped.stop_reason in ("end_turn", "stop_sequence")
        with pytest.raises(anthropic.BadRequestError):  # the embedded model reads text only
            client.messages.create(model="smollm2", max_tokens=4, messages=[{
                "role": "user", "content": [{"type": "image", "source": {
                    "type": "url", "url": "https://example.com/a.png"}}]}])
        counted = client.messages.count_tokens(model="smollm2", system="Answer in one word.",
                                               messages=[{"role": "user", "content":
                                                          "What is the capital of France?"}])
    # Counted by the model's own tokenizer, chat template included: what the model then read.
    assert counted.input_tokens == plain.usage.input_tokens, (counted, plain.usage)


@pytest.mark.model
def test_the_embedded_models_tool_free_answers_pass_tools_through(embedded: str) -> None:
    """A model without tool calling still answers a request with tools (in text)."""
    with anthropic.Anthropic(base_url=embedded, api_key="unused", max_retries=0) as client:
        answer = client.messages.create(model="smollm2", max_tokens=4, extra_body=GREEDY,
                                        tools=[WEATHER], messages=HELLO)
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
