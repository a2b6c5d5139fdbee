"""OpenAI's Responses API end to end: the official openai SDK's ``client.responses`` against a
real gateway, over a simulator, a fake upstream that records what it is sent, and the embedded
model; stored responses per tenant; records and cost as for chat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3
from aiohttp import web

from switchgear.config import DEFAULT_ALIAS, Config, StoreConfig
from switchgear.gateway.responses import ResponseSaves
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator
from switchgear.store.base import RecordStore, StoreUnavailable
from switchgear.store.responses import ResponseRow, StoredResponses

from servers import BackgroundLoop, aiohttp_server, fetch_records, gateway, wait_for_record

ADMIN = "sg-test-admin-secret-0123456789abcdef"
WEATHER = {"type": "function", "name": "weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
#: What the fake upstream reports for every answer, and the price it is charged at.
UPSTREAM_USAGE = {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26,
                  "prompt_tokens_details": {"cached_tokens": 8}}
PRICE = {"input_per_million": 3.0, "output_per_million": 15.0, "cached_input_per_million": 0.3}


class RecordingUpstream:
    """A fake OpenAI-compatible model server that keeps every chat body it is sent. It calls
    the first tool when given tools and the conversation does not end with a tool's result;
    else it answers "You said: <the last user text>"; always with ``UPSTREAM_USAGE``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        messages = body["messages"]
        tools = body.get("tools") or []
        call = None
        if tools and messages[-1]["role"] != "tool":
            call = {"id": f"call_{len(self.bodies)}", "type": "function",
                    "function": {"name": tools[0]["function"]["name"],
                                 "arguments": '{"city": "Paris"}'}}
        said = next(m["content"] for m in reversed(messages) if m["role"] in ("user", "tool"))
        text = None if call else f"You said: {said}"
        finish = "tool_calls" if call else "stop"
        if not body.get("stream"):
            return web.json_response({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": "fake",
                "choices": [{"index": 0, "finish_reason": finish, "message": {
                    "role": "assistant", "content": text,
                    **({"tool_calls": [call]} if call else {})}}],
                "usage": UPSTREAM_USAGE})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if call:
            deltas += [{"tool_calls": [{"index": 0, **call,
                                        "function": {"name": "weather", "arguments": ""}}]},
                       {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
                       {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}]
        else:
            answer = text or ""
            deltas += [{"content": answer[at:at + 4]} for at in range(0, len(answer), 4)]
        chunks = [{"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                  for delta in deltas]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({"choices": [], "usage": UPSTREAM_USAGE})
        for chunk in chunks:
            chunk.update(id="chatcmpl-fake", object="chat.completion.chunk", created=1,
                         model="fake")
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture
def upstream(background: BackgroundLoop) -> Iterator[tuple[RecordingUpstream, str]]:
    """The recording fake upstream, and its /v1 URL."""
    fake = RecordingUpstream()
    with aiohttp_server(fake.app(), background) as url:
        yield fake, url + "/v1"


def models(upstream_url: str, sim: RunningSimulator | None = None) -> dict[str, Any]:
    aliases: dict[str, Any] = {"fake": {"deployments": [{
        "name": "fake", "backend": "openai_http", "url": upstream_url, "model": "fake",
        "price": PRICE}]}}
    if sim is not None:
        aliases["sim"] = {"deployments": [{"name": "sim", "backend": "openai_http",
                                           "url": sim.base_url, "model": "sim"}]}
    return aliases


def client(base_url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)


def request_id(response_id: str) -> str:
    """The gateway's request id of a response (``resp_X`` answers ``req_X``)."""
    return "req_" + response_id.removeprefix("resp_")


def test_plain_and_streamed_responses_over_a_simulator(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
    upstream: tuple[RecordingUpstream, str], tmp_path: Path,
) -> None:
    config = make_config(models(upstream[1], simulators()))
    with gateway(config) as base_url, client(base_url) as sdk:
        plain = sdk.responses.create(model="sim", input="Say hello", max_output_tokens=64)
        assert plain.object == "response" and plain.status == "completed"
        assert plain.output_text and plain.model == "sim"
        assert plain.usage is not None and plain.usage.input_tokens > 0
        assert 0 < plain.usage.output_tokens <= 64

        with sdk.responses.stream(model="sim", input="Say hello", max_output_tokens=64,
                                  instructions="Be brief") as stream:
            kinds, deltas = [], []
            for event in stream:
                kinds.append(event.type)
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
            final = stream.get_final_response()
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert kinds[-1] == "response.completed" and len(deltas) > 1
        assert final.output_text == "".join(deltas) and final.instructions == "Be brief"
        assert final.usage is not None and final.usage.output_tokens > 0
    url = f"sqlite:///{tmp_path}/records.db"
    for response in (plain, final):
        record = wait_for_record(url, request_id(response.id))
        assert record.api == "openai.responses" and record.status == 200
        assert record.model == "sim" and record.deployment == "sim"
        assert record.completion_tokens == response.usage.output_tokens  # type: ignore[union-attr]


def test_a_function_call_round_trip_over_a_simulator(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
    upstream: tuple[RecordingUpstream, str],
) -> None:
    config = make_config(models(upstream[1], simulators()))
    with gateway(config) as base_url, client(base_url) as sdk:
        first = sdk.responses.create(model="sim", input="Weather in Paris?", tools=[WEATHER])
        calls = [item for item in first.output if item.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "weather"
        assert json.loads(calls[0].arguments) == {"city": "sim"}
        second = sdk.responses.create(
            model="sim", previous_response_id=first.id, tools=[WEATHER],
            input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                    "output": "sunny, 21C"}])
        assert second.output_text and second.previous_response_id == first.id
        assert [item.type for item in second.output] == ["message"]


def test_a_function_call_round_trip_reaches_the_upstream_as_chat_tool_calls(
    make_config: Callable[..., Config], upstream: tuple[RecordingUpstream, str],
) -> None:
    fake, url = upstream
    with gateway(make_config(models(url))) as base_url, client(base_url) as sdk:
        with sdk.responses.stream(model="fake", input="Weather in Paris?",
                                  tools=[WEATHER]) as stream:
            arguments = "".join(event.delta for event in stream
                                if event.type == "response.function_call_arguments.delta")
            first = stream.get_final_response()
        (call,) = first.output
        assert call.type == "function_call" and call.arguments == arguments == '{"city": "Paris"}'
        answer = sdk.responses.create(
            model="fake", previous_response_id=first.id, tools=[WEATHER],
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert answer.output_text == "You said: sunny"
    assert fake.bodies[0]["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": WEATHER["description"],
        "parameters": WEATHER["parameters"]}}]
    assert fake.bodies[1]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.call_id, "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}]


def test_previous_response_id_carries_the_conversation_to_the_upstream(
    make_config: Callable[..., Config], upstream: tuple[RecordingUpstream, str], store_url: str,
) -> None:
    fake, url = upstream
    with gateway(make_config(models(url), store_url)) as base_url, client(base_url) as sdk:
        first = sdk.responses.create(model="fake", input="My name is Ada.",
                                     instructions="Answer in English.")
        second = sdk.responses.create(model="fake", input="What is my name?",
                                      previous_response_id=first.id)
        third = sdk.responses.create(model="fake", input="And again?",
                                     previous_response_id=second.id, store=False)
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(third.id)  # store: false keeps nothing
    assert first.output_text == "You said: My name is Ada."
    assert fake.bodies[0]["messages"][0] == {"role": "system", "content": "Answer in English."}
    # the earlier instructions are not carried over (as OpenAI does), the conversation is
    assert fake.bodies[2]["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "You said: My name is Ada."},
        {"role": "user", "content": "What is my name?"},
        {"role": "assistant", "content": "You said: What is my name?"},
        {"role": "user", "content": "And again?"}]


def call(base_url: str, method: str, path: str, token: str, body: Any = None
         ) -> tuple[int, Any]:
    response = urllib3.request(method, base_url.removesuffix("/v1") + path, timeout=10,
                               headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": "application/json"},
                               body=None if body is None else json.dumps(body).encode())
    return response.status, json.loads(response.data)


def test_stored_responses_belong_to_their_tenant(
    make_config: Callable[..., Config], upstream: tuple[RecordingUpstream, str],
    monkeypatch: pytest.MonkeyPatch, store_url: str,
) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    with gateway(make_config(models(upstream[1]), store_url)) as base_url:
        keys = {}
        for tenant in ("acme", "globex"):
            status, made = call(base_url, "POST", "/admin/keys", ADMIN,
                                {"name": tenant, "tenant": tenant})
            assert status == 201, made
            keys[tenant] = made["secret"]
        with client(base_url, keys["acme"]) as acme, client(base_url, keys["globex"]) as globex:
            mine = acme.responses.create(model="fake", input="secret plans")
            assert acme.responses.retrieve(mine.id).output_text == mine.output_text
            with pytest.raises(openai.NotFoundError):
                globex.responses.retrieve(mine.id)
            with pytest.raises(openai.NotFoundError) as refused:
                globex.responses.create(model="fake", input="more", previous_response_id=mine.id)
            assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]
            with pytest.raises(openai.NotFoundError):
                globex.responses.delete(mine.id)
            acme.responses.delete(mine.id)
            with pytest.raises(openai.NotFoundError):
                acme.responses.retrieve(mine.id)
            with pytest.raises(openai.NotFoundError):
                acme.responses.delete(mine.id)
        status, answer = call(base_url, "DELETE", "/v1/responses/resp_nope", keys["acme"])
        assert status == 404 and answer["error"]["type"] == "invalid_request_error"
        status, answer = call(base_url, "GET", f"/v1/responses/{mine.id}", "sg-wrong-key")
        assert status == 401 and answer["error"]["code"] == "invalid_api_key"


def test_a_streamed_response_has_one_record_with_the_upstreams_usage_and_the_chat_cost(
    make_config: Callable[..., Config], upstream: tuple[RecordingUpstream, str], tmp_path: Path,
) -> None:
    with gateway(make_config(models(upstream[1]))) as base_url, client(base_url) as sdk:
        with sdk.responses.stream(model="fake", input="How much?") as stream:
            response = stream.get_final_response()
        chat = sdk.chat.completions.with_raw_response.create(
            model="fake", messages=[{"role": "user", "content": "How much?"}], stream=True)
        list(chat.parse())
    url = f"sqlite:///{tmp_path}/records.db"
    chat_record = wait_for_record(url, chat.headers["x-request-id"])
    record = wait_for_record(url, request_id(response.id))
    assert [r.request_id for r in fetch_records(url)].count(record.request_id) == 1
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens,
            response.usage.input_tokens_details.cached_tokens) == (21, 5, 8)
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (21, 5, 8)
    assert record.stream and record.api == "openai.responses" and chat_record.api == "openai"
    assert record.cost == pytest.approx(chat_record.cost)
    assert record.cost == pytest.approx((13 * 3.0 + 8 * 0.3 + 5 * 15.0) / 1e6)


def test_a_stream_cut_in_the_middle_fails_the_response(
    make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
    upstream: tuple[RecordingUpstream, str], tmp_path: Path,
) -> None:
    cutting = simulators(ModelOptions(ttft_ms=1, tpot_ms=1, mean_output_tokens=40, seed=1),
                         Faults(disconnect_rate=1.0))
    with gateway(make_config(models(upstream[1], cutting))) as base_url, \
            client(base_url) as sdk:
        events = list(sdk.responses.create(model="sim", input="Tell a story", stream=True,
                                           max_output_tokens=40))
        created = events[0].response  # type: ignore[union-attr]
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(created.id)  # a failed response is not stored
    kinds = [event.type for event in events]
    assert "response.output_text.delta" in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"  # type: ignore[union-attr]
    record = wait_for_record(f"sqlite:///{tmp_path}/records.db", request_id(created.id))
    assert record.status == 502 and record.truncated


HOSTILE: list[Any] = [
    ["not", "an", "object"],
    {"model": "fake"},
    {"model": "fake", "input": {"role": "user"}},
    {"model": "fake", "input": [1, 2, 3]},
    {"model": "fake", "input": [{"type": "computer_call", "id": "x"}]},
    {"model": "fake", "input": [{"type": "message", "role": "user", "content": [{"x": 1}]}]},
    {"model": "fake", "input": [{"type": "function_call", "call_id": 5}]},
    {"model": "fake", "input": "hi", "tools": [{"type": "file_search"}]},
    {"model": "fake", "input": "hi", "tools": "weather"},
    {"model": "fake", "input": "hi", "max_output_tokens": -1},
    {"model": "fake", "input": "hi", "temperature": "hot"},
    {"model": "fake", "input": "hi", "previous_response_id": 12},
    {"model": "fake", "input": "hi", "text": {"format": "json"}},
    {"model": "fake", "input": "hi", "instructions": {"a": 1}},
    {"model": "fake", "input": "hi", "background": True},
    {"model": ["fake"], "input": "hi"},
]


def test_hostile_bodies_are_refused_in_openais_shape_never_a_500(
    make_config: Callable[..., Config], upstream: tuple[RecordingUpstream, str],
) -> None:
    fake, url = upstream
    config = make_config(models(url), max_body_bytes=100_000)
    with gateway(config) as base_url:
        for body in HOSTILE:
            status, answer = call(base_url, "POST", "/v1/responses", "unused", body)
            assert status == 400, (body, answer)
            assert answer["error"]["type"] == "invalid_request_error" and answer["error"][
                "message"], body
        huge = {"model": "fake", "input": [{"role": "user", "content": "x" * 200_000}]}
        status, answer = call(base_url, "POST", "/v1/responses", "unused", huge)
        assert status == 413 and answer["error"]["type"] == "invalid_request_error"
        status, answer = call(base_url, "POST", "/v1/responses", "unused",
                              {"model": "nope", "input": "hi"})
        assert status == 404 and answer["error"]["code"] == "model_not_found"
        status, answer = call(base_url, "GET", "/v1/responses/resp_x/input_items", "unused")
        assert status == 404
        status, answer = call(base_url, "PUT", "/v1/responses/resp_x", "unused")
        assert status == 405
    assert fake.bodies == []  # nothing refused reached the model


#: Text each store and sink must keep byte for byte: a NUL (PostgreSQL's text refuses it), CRLF
#: with a forged log line, bidirectional overrides, markup, SQL, astral characters.
HOSTILE_TEXT = ("nul\x00byte\r\nINFO forged log line\u202egnp.exe\u2066 <script>alert(1)"
                "</script> '); DROP TABLE responses;-- \U0001f600 \\x00 %s %(x)s")


def test_hostile_text_is_stored_read_back_and_continued_byte_for_byte(
    make_config: Callable[..., Config], upstream: tuple[RecordingUpstream, str], store_url: str,
) -> None:
    fake, url = upstream
    with gateway(make_config(models(url), store_url)) as base_url, client(base_url) as sdk:
        first = sdk.responses.create(model="fake", input=HOSTILE_TEXT,
                                     instructions=HOSTILE_TEXT, metadata={"note": HOSTILE_TEXT})
        kept = sdk.responses.retrieve(first.id)
        second = sdk.responses.create(model="fake", input="again",
                                      previous_response_id=first.id)
        assert sdk.responses.retrieve(second.id).output_text == "You said: again"
    assert first.output_text == kept.output_text == f"You said: {HOSTILE_TEXT}"
    assert kept.instructions == HOSTILE_TEXT and kept.metadata == {"note": HOSTILE_TEXT}
    assert fake.bodies[0]["messages"] == [{"role": "system", "content": HOSTILE_TEXT},
                                          {"role": "user", "content": HOSTILE_TEXT}]
    assert fake.bodies[1]["messages"][:2] == [
        {"role": "user", "content": HOSTILE_TEXT},
        {"role": "assistant", "content": f"You said: {HOSTILE_TEXT}"}]
    record = wait_for_record(store_url, request_id(first.id))
    assert record.status == 200 and record.api == "openai.responses"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The default config: the embedded model as 'smollm2'."""
    store_url = f"sqlite:///{tmp_path_factory.mktemp('embedded')}/records.db"
    with gateway(Config(store=StoreConfig(url=store_url, flush_interval_ms=20))) as base_url:
        yield base_url


@pytest.mark.model
def test_the_embedded_model_answers_plain_streamed_and_continued(embedded: str) -> None:
    with client(embedded) as sdk:
        first = sdk.responses.create(model=DEFAULT_ALIAS, input="What is the capital of France?",
                                     max_output_tokens=8, temperature=0)
        assert first.output_text.strip() and first.usage is not None
        assert 0 < first.usage.output_tokens <= 8
        assert first.status in ("completed", "incomplete")
        events = list(sdk.responses.create(model=DEFAULT_ALIAS, input="And of Italy?",
                                           previous_response_id=first.id, max_output_tokens=8,
                                           temperature=0, stream=True))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    final = events[-1].response  # type: ignore[union-attr]
    assert len(deltas) >= 2 and final.output_text == "".join(deltas)
    assert events[-1].type in ("response.completed", "response.incomplete")
    # the second turn's prompt held the first: more input tokens than the first turn's
    assert final.usage.input_tokens > first.usage.input_tokens


class HeldWrites(StoredResponses):
    """Stored responses whose writes wait until ``release`` is set; each batch noted."""

    def __init__(self, store: RecordStore) -> None:
        super().__init__(store, None)
        self.release = asyncio.Event()
        self.batches: list[list[str]] = []
        self.down = False

    async def save_many(self, rows: Sequence[ResponseRow]) -> None:
        self.batches.append([response_id for response_id, *_ in rows])
        await self.release.wait()
        if self.down:
            raise StoreUnavailable("the store is down")
        await super().save_many(rows)


def stored(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "object": "response", "created_at": 1.0, "model": "m",
            "output": []}


async def test_responses_are_written_together_and_read_after_their_write(
    store: RecordStore,
) -> None:
    held = HeldWrites(store)
    saves = ResponseSaves(held, gather_s=0)
    saves.save("t", stored("resp_a"), [])
    await asyncio.sleep(0)  # the first write starts, and is held
    saves.save("t", stored("resp_b"), [])
    saves.save("t", stored("resp_c"), [{"type": "message", "role": "user", "content": "q"}])
    reading = asyncio.ensure_future(saves.get("t", "resp_c"))
    await asyncio.sleep(0.05)
    assert not reading.done()  # it waits for its write rather than miss it
    held.release.set()
    found = await reading
    assert found is not None and found.items == [{"type": "message", "role": "user",
                                                  "content": "q"}]
    assert held.batches == [["resp_a"], ["resp_b", "resp_c"]]
    await saves.drain()
    assert await saves.delete("t", "resp_a") and await saves.get("t", "resp_b") is not None


async def test_responses_answered_one_after_another_go_in_one_write(
    store: RecordStore,
) -> None:
    """At low concurrency each response would be a write (a trip to the store) of its own: those
    answered within the gathering time go together, and a read still waits for its write."""
    held = HeldWrites(store)
    held.release.set()
    saves = ResponseSaves(held, gather_s=0.05)
    for name in ("resp_x", "resp_y", "resp_z"):
        saves.save("t", stored(name), [])
        await asyncio.sleep(0.005)
    assert await saves.get("t", "resp_z") is not None
    assert held.batches == [["resp_x", "resp_y", "resp_z"]]
    await saves.drain()


async def test_a_read_starts_the_write_of_a_response_still_gathering(
    store: RecordStore,
) -> None:
    """A client continuing a response at once on this replica does not wait out the gathering:
    its read starts the write (a minute's gathering would time the read out)."""
    held = HeldWrites(store)
    held.release.set()
    saves = ResponseSaves(held, gather_s=60)
    saves.save("t", stored("resp_now"), [])
    assert await asyncio.wait_for(saves.get("t", "resp_now"), 10) is not None
    assert held.batches == [["resp_now"]]
    await saves.drain()


async def test_responses_answered_during_a_write_wait_for_the_next_gathering(
    store: RecordStore,
) -> None:
    """Writes come a gathering apart, not back to back: under load each write would wake the
    store's thread again at once."""
    held = HeldWrites(store)
    saves = ResponseSaves(held, gather_s=0.05)
    saves.save("t", stored("resp_1"), [])
    await asyncio.sleep(0.1)  # gathered: its write starts, and is held
    assert held.batches == [["resp_1"]]
    saves.save("t", stored("resp_2"), [])
    held.release.set()
    await asyncio.sleep(0.01)  # before the next gathering ends (its timer fires later)
    assert held.batches == [["resp_1"]]
    await saves.drain()
    assert held.batches == [["resp_1"], ["resp_2"]]


async def test_a_store_outage_loses_the_stored_response_not_the_reads(
    store: RecordStore,
) -> None:
    held = HeldWrites(store)
    held.down = True
    saves = ResponseSaves(held)
    saves.save("t", stored("resp_lost"), [])
    reading = asyncio.ensure_future(saves.get("t", "resp_lost"))
    held.release.set()
    assert await reading is None
    await saves.drain()


class WrittenDuringTheMiss(StoredResponses):
    """Another replica's view of the store: its first miss of a response is when the writing
    replica's held write lands."""

    def __init__(self, store: RecordStore, held: HeldWrites, writer: ResponseSaves) -> None:
        super().__init__(store, None)
        self.held = held
        self.writer = writer
        self.misses = 0

    async def get(self, tenant: str, response_id: str) -> Any:
        found = await super().get(tenant, response_id)
        if found is None:
            self.misses += 1
            self.held.release.set()
            await self.writer.drain()
        return found


async def test_another_replica_looks_again_before_a_404(store: RecordStore) -> None:
    held = HeldWrites(store)
    writer = ResponseSaves(held)
    view = WrittenDuringTheMiss(store, held, writer)
    writer.save("t", stored("resp_elsewhere"), [])
    assert await ResponseSaves(view).get("t", "resp_elsewhere") is not None
    assert view.misses == 1
    assert await ResponseSaves(view).get("t", "resp_never") is None
    assert view.misses == 3  # a real miss is read twice before it is one


async def test_past_the_limit_of_waiting_writes_responses_go_unstored(store: RecordStore) -> None:
    held = HeldWrites(store)
    saves = ResponseSaves(held, limit=2, gather_s=0)
    saves.save("t", stored("resp_1"), [])
    await asyncio.sleep(0)  # resp_1's write starts, and is held
    for number in (2, 3, 4):
        saves.save("t", stored(f"resp_{number}"), [])
    assert saves.dropped == 1
    held.release.set()
    await saves.drain()
    assert held.batches == [["resp_1"], ["resp_2", "resp_3"]]
    assert await saves.get("t", "resp_4") is None
