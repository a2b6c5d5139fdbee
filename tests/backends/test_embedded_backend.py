"""The embedded backend with the real SmolLM2 model: OpenAI shapes, streaming, concurrency."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from switchgear.backends.embedded import EmbeddedBackend
from switchgear.config import DeploymentConfig, EmbeddedOptions
from switchgear.errors import ContextWindowExceeded, InvalidRequest, UpstreamConnectError
from switchgear.exchange import Operation

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

N_CTX = 512
WAIT = 120.0  # seconds a request may take on a slow machine before it counts as a hang
MESSAGES = [{"role": "user", "content": "Name three colours of the rainbow."}]


def chat_body(max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {"model": "smollm2", "messages": MESSAGES, "max_tokens": max_tokens,
            "temperature": 0, **extra}


def embedded_config(n_ctx: int = N_CTX) -> DeploymentConfig:
    return DeploymentConfig(name="embedded", backend="embedded",
                            embedded=EmbeddedOptions(n_ctx=n_ctx))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[EmbeddedBackend]:
    backend = EmbeddedBackend(embedded_config())
    async with asyncio.timeout(WAIT):
        await backend.start()
    yield backend
    async with asyncio.timeout(WAIT):
        await backend.aclose()


async def stream_all(backend: EmbeddedBackend, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with asyncio.timeout(WAIT):
        return [chunk async for chunk in backend.stream(Operation.CHAT, body)]


def contents(chunks: list[dict[str, Any]]) -> list[str]:
    return [choice["delta"]["content"] for chunk in chunks for choice in chunk["choices"]
            if choice["delta"].get("content")]


async def test_a_chat_completion_has_text_and_usage(backend: EmbeddedBackend) -> None:
    async with asyncio.timeout(WAIT):
        body = await backend.complete(Operation.CHAT, chat_body())
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "smollm2"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_a_text_completion_has_text_and_usage(backend: EmbeddedBackend) -> None:
    request = {"model": "small", "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}
    async with asyncio.timeout(WAIT):
        body = await backend.complete(Operation.COMPLETIONS, request)
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == "small"
    assert body["choices"][0]["text"].strip()
    assert body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["completion_tokens"] > 0


async def test_a_stream_sends_role_deltas_finish_and_usage(backend: EmbeddedBackend) -> None:
    chunks = await stream_all(backend, chat_body(stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = contents(chunks)
    assert len(deltas) >= 2
    assert "".join(deltas).strip()
    finish = chunks[-2]["choices"][0]
    assert finish["finish_reason"] in {"stop", "length"}
    assert all(choice["finish_reason"] is None for chunk in chunks[:-2]
               for choice in chunk["choices"])
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["prompt_tokens"] > 0
    assert len(deltas) <= usage["completion_tokens"] <= 8
    if finish["finish_reason"] == "length":
        assert usage["completion_tokens"] == 8


async def test_a_stream_carries_usage_only_when_asked(backend: EmbeddedBackend) -> None:
    chunks = await stream_all(backend, chat_body(max_tokens=3, stream=True))
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


async def test_concurrent_streams_all_complete(backend: EmbeddedBackend) -> None:
    body = chat_body(max_tokens=6, stream=True, stream_options={"include_usage": True})
    results = await asyncio.gather(*(stream_all(backend, body) for _ in range(3)))
    for chunks in results:
        finish_reason = chunks[-2]["choices"][0]["finish_reason"]
        completion_tokens = chunks[-1]["usage"]["completion_tokens"]
        assert finish_reason in {"stop", "length"}
        assert len(contents(chunks)) <= completion_tokens
        if finish_reason == "length":
            assert completion_tokens == 6


async def test_the_event_loop_keeps_running_during_generation(backend: EmbeddedBackend) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    ticks_at_chunk = []
    try:
        async with asyncio.timeout(WAIT):
            async for _ in backend.stream(Operation.CHAT, chat_body(max_tokens=16, stream=True)):
                ticks_at_chunk.append(ticks)
    finally:
        ticker.cancel()
    # If generation blocked the loop, no tick could happen between the first and the last chunk.
    assert ticks_at_chunk[-1] > ticks_at_chunk[0]


async def test_a_prompt_that_cannot_fit_is_refused(backend: EmbeddedBackend) -> None:
    long_chat = chat_body(messages=[{"role": "user", "content": "word " * N_CTX}])
    with pytest.raises(ContextWindowExceeded) as refused:
        await backend.complete(Operation.CHAT, long_chat)
    assert refused.value.param == "messages"
    assert refused.value.status == 400
    with pytest.raises(ContextWindowExceeded) as refused:
        async for _ in backend.stream(Operation.CHAT, chat_body(max_tokens=N_CTX, stream=True)):
            pass
    assert refused.value.param == "max_tokens"


async def test_embeddings_come_as_floats_or_base64(backend: EmbeddedBackend) -> None:
    request = {"model": "smollm2", "input": ["red", "a long sentence about boats"]}
    async with asyncio.timeout(WAIT):
        floats = await backend.complete(Operation.EMBEDDINGS, request)
        packed = await backend.complete(Operation.EMBEDDINGS,
                                        {**request, "encoding_format": "base64"})
    assert floats["object"] == "list"
    assert [item["index"] for item in floats["data"]] == [0, 1]
    assert floats["usage"]["prompt_tokens"] > 0
    vector = floats["data"][0]["embedding"]
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(vector, abs=1e-6)


async def test_what_the_engine_cannot_do_is_refused(backend: EmbeddedBackend) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await backend.complete(Operation.CHAT, chat_body(n=2))
    assert refused.value.param == "n"
    with pytest.raises(InvalidRequest) as refused:
        await backend.complete(Operation.COMPLETIONS, {"prompt": [[1, 2, 3]]})
    assert refused.value.param == "prompt"


async def test_a_closed_backend_reports_itself_down() -> None:
    backend = EmbeddedBackend(embedded_config(n_ctx=256))
    with pytest.raises(UpstreamConnectError):
        await backend.check()
    async with asyncio.timeout(WAIT):
        await backend.start()
        await backend.check()
        await backend.aclose()
    with pytest.raises(UpstreamConnectError):
        await backend.check()
    with pytest.raises(UpstreamConnectError):
        await backend.complete(Operation.CHAT, chat_body())
