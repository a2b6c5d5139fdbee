"""SimulatedModel: request validation, output lengths, answer shapes, embeddings, slots and load."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from switchgear.errors import ContextWindowExceeded, InvalidRequest
from switchgear.exchange import Operation
from switchgear.simulator import ModelOptions, SimulatedModel
from switchgear.simulator.text import FILLER_WORDS, REFUSAL_WORDS, estimate_tokens

WaitUntil = Callable[[Callable[[], bool]], Awaitable[None]]  # the conftest fixture


def chat(content: str = "Hello there", **fields: Any) -> dict[str, Any]:
    return {"model": "sim", "messages": [{"role": "user", "content": content}], **fields}


def test_prompt_tokens_are_estimated_at_four_characters_each() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("x" * 400) == 100


def test_max_tokens_clips_the_output_and_says_length(fast_options: ModelOptions) -> None:
    model = SimulatedModel(ModelOptions(seed=1, mean_output_tokens=500))
    generation = model.plan_generation(Operation.CHAT, chat(max_tokens=3))
    assert (generation.output_tokens, generation.finish_reason) == (3, "length")


def test_ignore_eos_runs_every_answer_to_max_tokens() -> None:
    model = SimulatedModel(ModelOptions(seed=1, mean_output_tokens=4, output_spread=0.5))
    lengths = {model.plan_generation(Operation.CHAT, chat(max_tokens=50, ignore_eos=True))
               .output_tokens for _ in range(50)}
    assert lengths == {50}  # a mean of 4 would stop far sooner without it
    with pytest.raises(InvalidRequest, match="ignore_eos"):
        model.plan_generation(Operation.CHAT, chat(ignore_eos="yes"))


def test_a_degraded_generation_is_shorter_or_a_refusal() -> None:
    model = SimulatedModel(ModelOptions(seed=1, mean_output_tokens=500))
    clipped = model.plan_generation(Operation.CHAT, chat(max_tokens=40))
    assert clipped.degraded(1.0, refuse=False) is clipped
    shorter = clipped.degraded(0.25, refuse=False)
    assert (shorter.output_tokens, shorter.finish_reason) == (10, "stop")  # stopped by itself
    refusal = clipped.degraded(0.25, refuse=True)
    assert (refusal.output_tokens, refusal.finish_reason) == (len(REFUSAL_WORDS), "stop")
    assert refusal.words == REFUSAL_WORDS


def test_output_lengths_spread_around_the_mean_and_repeat_with_the_seed() -> None:
    def lengths(seed: int) -> list[int]:
        model = SimulatedModel(ModelOptions(seed=seed, mean_output_tokens=40))
        return [model.plan_generation(Operation.COMPLETIONS,
                                      {"model": "sim", "prompt": "hi"}).output_tokens
                for _ in range(400)]

    first = lengths(3)
    assert first == lengths(3)
    assert first != lengths(4)
    assert 32 <= sum(first) / len(first) <= 48
    assert len(set(first)) > 10


def test_prompt_plus_max_tokens_beyond_the_context_window_is_refused() -> None:
    model = SimulatedModel(ModelOptions(context_window=20))
    body = {"model": "sim", "prompt": "x" * 40, "max_tokens": 10}  # 10 + 10 tokens fit
    assert model.plan_generation(Operation.COMPLETIONS, body).output_tokens <= 10
    with pytest.raises(ContextWindowExceeded) as refused:
        model.plan_generation(Operation.COMPLETIONS, body | {"max_tokens": 11})
    assert refused.value.status == 400
    assert refused.value.body()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "sim"}, "messages"),
        ({"model": "sim", "messages": []}, "messages"),
        ({"model": "sim", "messages": ["hi"]}, "messages[0]"),
        ({"model": "sim", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(max_tokens="5"), "max_tokens"),
        (chat(max_tokens=True), "max_tokens"),
        (chat(n=2), "n"),
        (chat(stream="yes"), "stream"),
    ],
)
def test_malformed_chat_bodies_name_the_wrong_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        SimulatedModel(ModelOptions()).plan_generation(Operation.CHAT, body)
    assert refused.value.param == param
    assert refused.value.status == 400


async def test_a_whole_chat_answer_is_filler_text_with_usage(fast_options: ModelOptions) -> None:
    model = SimulatedModel(fast_options)
    generation = model.plan_generation(Operation.CHAT, chat(content="x" * 40, max_tokens=4))
    body = await model.complete(generation)
    assert body["object"] == "chat.completion"
    assert body["model"] == "sim"
    assert body["choices"][0]["message"] == {"role": "assistant",
                                             "content": "".join(FILLER_WORDS[:4])}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": estimate_tokens("user: " + "x" * 40),
                             "completion_tokens": 4, "total_tokens": body["usage"]["total_tokens"]}
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 4
    assert model.requests_served == 1


async def test_a_chat_stream_opens_with_the_role_and_ends_with_usage(
    fast_options: ModelOptions,
) -> None:
    model = SimulatedModel(fast_options)
    body = chat(max_tokens=5, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in model.stream(model.plan_generation(Operation.CHAT, body))]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert "".join(pieces) == "".join(FILLER_WORDS[:5])
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1


async def test_a_stream_without_include_usage_carries_no_usage(fast_options: ModelOptions) -> None:
    model = SimulatedModel(fast_options)
    body = {"model": "sim", "prompt": "Once", "max_tokens": 3, "stream": True}
    chunks = [c async for c in model.stream(model.plan_generation(Operation.COMPLETIONS, body))]
    assert all("usage" not in chunk for chunk in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "".join(FILLER_WORDS[:3])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert {c["object"] for c in chunks} == {"text_completion"}


async def test_embeddings_are_unit_vectors_fixed_by_their_text(fast_options: ModelOptions) -> None:
    model = SimulatedModel(fast_options)
    body = await model.embed(model.plan_embedding({"model": "sim", "input": ["a", "b", "a"]}))
    vectors = [item["embedding"] for item in body["data"]]
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert all(len(vector) == 64 for vector in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-9) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert body["usage"]["prompt_tokens"] == 3

    again = SimulatedModel(ModelOptions(seed=99))
    short = await again.embed(again.plan_embedding(
        {"model": "sim", "input": "a", "dimensions": 8, "encoding_format": "base64"}))
    decoded = struct.unpack("<8f", base64.b64decode(short["data"][0]["embedding"]))
    assert math.isclose(sum(x * x for x in decoded), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "sim"}, "input"),
        ({"model": "sim", "input": []}, "input"),
        ({"model": "sim", "input": [""]}, "input"),
        ({"model": "sim", "input": "a", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "sim", "input": "a", "dimensions": 0}, "dimensions"),
    ],
)
def test_malformed_embedding_bodies_are_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        SimulatedModel(ModelOptions()).plan_embedding(body)
    assert refused.value.param == param


async def test_slots_limit_concurrency_and_the_rest_queue(wait_until: WaitUntil) -> None:
    model = SimulatedModel(ModelOptions(slots=2, ttft_ms=30, tpot_ms=5, seed=2))
    most_busy = most_queued = 0

    async def ask() -> dict[str, Any]:
        return await model.complete(model.plan_generation(Operation.CHAT, chat(max_tokens=4)))

    tasks = [asyncio.create_task(ask()) for _ in range(6)]
    await wait_until(lambda: model.queue_depth == 4)
    while not all(task.done() for task in tasks):
        most_busy = max(most_busy, model.busy_slots)
        most_queued = max(most_queued, model.queue_depth)
        await asyncio.sleep(0.001)
    async with asyncio.timeout(10):
        answers = await asyncio.gather(*tasks)
    assert most_busy == 2
    assert most_queued == 4
    assert len(answers) == 6
    assert (model.busy_slots, model.queue_depth, model.requests_served) == (0, 0, 6)


async def test_steps_slow_down_as_slots_fill(wait_until: WaitUntil) -> None:
    model = SimulatedModel(ModelOptions(slots=2, ttft_ms=100, tpot_ms=10, load_factor=1.0,
                                        mean_output_tokens=1000))
    assert (model.ttft_seconds, model.tpot_seconds) == (0.1, 0.01)
    task = asyncio.gather(*(model.complete(model.plan_generation(Operation.CHAT, chat()))
                            for _ in range(2)))
    await wait_until(lambda: model.busy_slots == 2)
    assert math.isclose(model.ttft_seconds, 0.15)
    assert math.isclose(model.tpot_seconds, 0.015)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        await model.wait_idle()
