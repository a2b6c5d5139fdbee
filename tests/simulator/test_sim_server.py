"""The simulator over real HTTP, driven by the official openai client (and aiohttp where needed)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import aiohttp
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from switchgear.simulator import Faults, ModelOptions, RunningSimulator, start_simulator
from switchgear.simulator.text import FILLER_WORDS, REFUSAL_WORDS

WaitUntil = Callable[[Callable[[], bool]], Awaitable[None]]  # the conftest fixture
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, simulator"}]
REFUSAL = "I'm sorry, but I can't help with that."


async def test_a_chat_answer_has_text_and_usage(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(model="sim", messages=HELLO, max_tokens=6)
    assert answer.object == "chat.completion"
    assert answer.model == "sim"
    assert answer.choices[0].message.content == "".join(FILLER_WORDS[:6])
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 6
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 6 > 6


async def test_a_streamed_chat_carries_usage_when_asked(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sim", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    pieces, usages, finish_reasons = [], [], []
    async for chunk in stream:
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish_reasons.append(choice.finish_reason)
    text = "".join(pieces)
    assert text
    assert len(usages) == 1
    assert usages[0].completion_tokens == len([p for p in pieces if p])
    assert [reason for reason in finish_reasons if reason] == ["stop"]


async def test_a_stream_ends_with_done_and_has_no_usage_unasked(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    body = {"model": "sim", "prompt": "Once upon", "max_tokens": 3, "stream": True}
    async with http.post(f"{simulator.base_url}/completions", json=body) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = (await response.text()).split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [orjson.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "".join(FILLER_WORDS[:3])
    assert all("usage" not in chunk for chunk in chunks)


async def test_completions_plain_and_streamed(client: openai.AsyncOpenAI) -> None:
    answer = await client.completions.create(model="sim", prompt="Once upon a time", max_tokens=4)
    assert answer.choices[0].text == "".join(FILLER_WORDS[:4])
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 4)
    stream = await client.completions.create(model="sim", prompt="Once", max_tokens=4, stream=True)
    assert "".join([chunk.choices[0].text async for chunk in stream]) == answer.choices[0].text


async def test_embeddings_are_unit_vectors(client: openai.AsyncOpenAI) -> None:
    answer = await client.embeddings.create(model="sim", input=["alpha", "beta"])
    vectors = [item.embedding for item in answer.data]
    assert [len(vector) for vector in vectors] == [64, 64]
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] != vectors[1]
    floats = await client.embeddings.create(model="sim", input="alpha", dimensions=64,
                                            encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], rel=1e-6)


async def test_models_lists_the_served_model(client: openai.AsyncOpenAI) -> None:
    assert [model.id async for model in client.models.list()] == ["sim"]


async def test_bad_requests_get_openai_errors(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="sim", messages=[])
    assert refused.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as too_long:
        await client.completions.create(model="sim", prompt="x" * 40_000, max_tokens=10)
    assert too_long.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("POST", "/v1/chat/completions", b"{not json", 400),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400),
        ("GET", "/v1/nowhere", b"", 404),
        ("GET", "/v1/chat/completions", b"", 405),
    ],
)
async def test_unusable_requests_get_openai_shaped_errors(
    simulator: RunningSimulator, http: aiohttp.ClientSession,
    method: str, path: str, data: bytes, status: int,
) -> None:
    async with http.request(method, simulator.url + path, data=data) as response:
        assert response.status == status
        error = orjson.loads(await response.read())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


async def test_an_api_key_is_required_when_set(fast_options: ModelOptions) -> None:
    running = await start_simulator(fast_options, api_key="sk-right")
    try:
        for key, works in (("sk-wrong", False), ("sk-right", True)):
            async with openai.AsyncOpenAI(base_url=running.base_url, api_key=key,
                                          max_retries=0, timeout=10) as keyed:
                if works:
                    await keyed.chat.completions.create(model="sim", messages=HELLO)
                else:
                    with pytest.raises(openai.AuthenticationError):
                        await keyed.chat.completions.create(model="sim", messages=HELLO)
    finally:
        await running.stop()


async def test_health_is_ok(simulator: RunningSimulator, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{simulator.url}/healthz") as response:
        assert (response.status, await response.json()) == (200, {"status": "ok"})


async def test_an_injected_error_raises_the_status_error(
    simulator: RunningSimulator, client: openai.AsyncOpenAI
) -> None:
    simulator.state.faults = Faults(error_rate=1)
    with pytest.raises(openai.InternalServerError) as failed:
        await client.chat.completions.create(model="sim", messages=HELLO)
    assert failed.value.status_code == 500
    simulator.state.faults = Faults(error_rate=1, error_status=429)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="sim", messages=HELLO)
    assert limited.value.response.headers["Retry-After"] == "1"


async def test_a_reset_is_a_connection_error(
    simulator: RunningSimulator, client: openai.AsyncOpenAI
) -> None:
    simulator.state.faults = Faults(reset_rate=1)
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="sim", messages=HELLO)
    with pytest.raises(openai.APIConnectionError):
        await client.embeddings.create(model="sim", input="a")


async def test_a_disconnect_cuts_the_stream_before_done(
    simulator: RunningSimulator, client: openai.AsyncOpenAI
) -> None:
    simulator.state.faults = Faults(disconnect_rate=1)
    received = []
    stream = await client.chat.completions.create(model="sim", messages=HELLO, stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert 0 < len(received) < 4
    plain = await client.chat.completions.create(model="sim", messages=HELLO)
    assert plain.choices[0].message.content  # only streams are cut


async def test_a_hang_lasts_until_the_client_gives_up(
    simulator: RunningSimulator, client: openai.AsyncOpenAI, wait_until: WaitUntil
) -> None:
    simulator.state.faults = Faults(hang_rate=1)
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.3).chat.completions.create(model="sim",
                                                                      messages=HELLO)
    simulator.state.faults = Faults()
    await client.chat.completions.create(model="sim", messages=HELLO)
    await wait_until(lambda: b'status="hang"' in simulator.state.metrics.render())


async def test_a_latency_spike_outlasts_a_short_timeout(
    simulator: RunningSimulator, client: openai.AsyncOpenAI
) -> None:
    simulator.state.faults = Faults(spike_rate=1, spike_ms=60_000)
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.3).chat.completions.create(model="sim",
                                                                      messages=HELLO)


async def test_faults_change_at_run_time_through_the_admin_api(
    simulator: RunningSimulator, client: openai.AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    admin = f"{simulator.url}/admin/faults"
    async with http.get(admin) as response:
        assert (await response.json())["error_rate"] == 0.0
    async with http.post(admin, json={"error_rate": 1, "error_status": 503}) as response:
        assert (await response.json())["error_status"] == 503
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="sim", messages=HELLO)
    async with http.put(admin, json={"spike_rate": 0.5}) as response:
        replaced = await response.json()
    assert (replaced["error_rate"], replaced["error_status"], replaced["spike_rate"]) == (
        0.0, 500, 0.5)
    async with http.post(admin, json={"spike_rate": 0}) as response:
        assert response.status == 200
    await client.chat.completions.create(model="sim", messages=HELLO)
    async with http.post(admin, json={"hang_rate": 2}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["param"] == "hang_rate"


async def test_answers_get_worse_at_run_time_through_the_admin_api(
    simulator: RunningSimulator, client: openai.AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    async def lengths() -> list[int]:
        answers = [await client.chat.completions.create(model="sim", messages=HELLO)
                   for _ in range(40)]
        return [a.usage.completion_tokens for a in answers if a.usage is not None]

    before = await lengths()
    async with http.post(f"{simulator.url}/admin/faults", json={"output_factor": 0.25}) as response:
        assert (await response.json())["output_factor"] == 0.25
    shorter = await lengths()
    assert sum(shorter) < 0.5 * sum(before)
    async with http.post(f"{simulator.url}/admin/faults",
                         json={"refusal_rate": 1, "output_factor": 1}) as response:
        assert response.status == 200
    answer = await client.chat.completions.create(model="sim", messages=HELLO)
    assert answer.choices[0].message.content == REFUSAL
    assert answer.usage is not None and answer.usage.completion_tokens == len(REFUSAL_WORDS)
    assert answer.choices[0].finish_reason == "stop"
    stream = await client.chat.completions.create(model="sim", messages=HELLO, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream
                    if c.choices]) == REFUSAL


async def test_metrics_show_slots_and_queue_while_requests_run(
    http: aiohttp.ClientSession,
) -> None:
    running = await start_simulator(
        ModelOptions(slots=2, ttft_ms=40, tpot_ms=5, mean_output_tokens=6, seed=3)
    )
    samples: list[dict[str, float]] = []
    try:
        async with openai.AsyncOpenAI(base_url=running.base_url, api_key="test",
                                      max_retries=0, timeout=10) as sim_client:
            requests = asyncio.gather(*(
                sim_client.chat.completions.create(model="sim", messages=HELLO)
                for _ in range(6)
            ))
            async with asyncio.timeout(10):
                while not requests.done():
                    samples.append(await _scrape(http, running.url))
                answers = await requests
            final = await _scrape(http, running.url)
    finally:
        await running.stop()
    assert len(answers) == 6
    assert max(sample["switchgear_sim_busy_slots"] for sample in samples) == 2
    assert max(sample["switchgear_sim_queue_depth"] for sample in samples) > 0
    assert 2 < final["switchgear_sim_peak_in_flight"] <= 6  # waiting requests count too
    assert final['switchgear_sim_requests_total{status="200"}'] == 6
    assert final["switchgear_sim_requests_served_total"] == 6
    assert (final["switchgear_sim_busy_slots"], final["switchgear_sim_queue_depth"]) == (0, 0)


async def _scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith("switchgear_sim_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_a_client_leaving_mid_stream_frees_its_slot(wait_until: WaitUntil) -> None:
    running = await start_simulator(
        ModelOptions(slots=1, ttft_ms=1, tpot_ms=20, mean_output_tokens=500, seed=1)
    )
    try:
        async with openai.AsyncOpenAI(base_url=running.base_url, api_key="test",
                                      max_retries=0, timeout=10) as sim_client:
            stream = await sim_client.chat.completions.create(model="sim", messages=HELLO,
                                                              stream=True)
            async for _ in stream:
                break
            assert running.state.model.busy_slots == 1
            await stream.close()
        await wait_until(lambda: running.state.model.busy_slots == 0)
        await wait_until(lambda: b'status="client_closed"' in running.state.metrics.render())
    finally:
        await running.stop()
