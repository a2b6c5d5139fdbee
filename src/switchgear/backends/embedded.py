"""The embedded backend: the in-process llama.cpp engine (SmolLM2 by default) behind the Backend
protocol, answering in OpenAI's response and chunk shapes.

The gateway has already validated the body's types; here it becomes an engine request, and what
the engine cannot do (several choices, token-id prompts) is refused as an ``InvalidRequest``.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from switchgear.backends.base import Body
from switchgear.config import DEFAULT_ALIAS, DeploymentConfig
from switchgear.engine.engine import Engine, JobEvents
from switchgear.engine.job import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    EngineRequest,
    Finished,
    Job,
    SamplingParams,
    TokenDelta,
)
from switchgear.engine.runner import LlamaRunner
from switchgear.engine.scheduler import BatchScheduler
from switchgear.engine.stats import EngineStats
from switchgear.errors import InvalidRequest, UpstreamConnectError, UpstreamProtocolError
from switchgear.exchange import Operation, Usage
from switchgear.sections.tiers import TIERS


def _given(body: Body, key: str, default: Any) -> Any:
    """``body[key]``, or ``default`` when it is missing or null."""
    value = body.get(key)
    return default if value is None else value


def sampling_params(body: Body, operation: Operation) -> SamplingParams:
    """The sampling settings of an OpenAI chat or completions body (OpenAI's defaults)."""
    if _given(body, "n", 1) != 1:
        raise InvalidRequest("the embedded engine generates one choice (n=1)", param="n")
    max_tokens = _given(body, "max_tokens", None)
    if operation is Operation.CHAT:
        max_tokens = _given(body, "max_completion_tokens", max_tokens)
    stop = _given(body, "stop", ())
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=float(_given(body, "temperature", 1.0)),
        top_p=float(_given(body, "top_p", 1.0)),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        seed=_given(body, "seed", None),
    )


def _message_text(content: Any) -> str:
    """A message's content as plain text (content parts of type ``text`` joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text", "") for part in content
                 if isinstance(part, dict) and part.get("type") == "text"]
        if len(parts) == len(content):
            return "".join(parts)
    raise InvalidRequest("the embedded model reads text content only", param="messages")


def _chat_request(body: Body) -> ChatRequest:
    messages = [{**message, "content": _message_text(message.get("content"))}
                for message in body.get("messages") or []]
    return ChatRequest(messages, sampling_params(body, Operation.CHAT))


def engine_request(operation: Operation, body: Body) -> EngineRequest:
    """The engine request for an OpenAI body of ``operation``."""
    if operation is Operation.CHAT:
        return _chat_request(body)
    if operation is Operation.COMPLETIONS:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidRequest("the embedded engine takes one text prompt", param="prompt")
        return CompletionRequest(prompt, sampling_params(body, operation))
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise InvalidRequest("input must be a string or a non-empty list of strings",
                             param="input")
    return EmbeddingRequest(tuple(inputs))


def usage_body(usage: Usage) -> Body:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _embedding_value(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # what the openai SDK asks for unless told otherwise
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


class _ResponseShape:
    """The OpenAI bodies of one response: its id, timestamp and model name, shared by its chunks."""

    def __init__(self, operation: Operation, model: str) -> None:
        self.operation = operation
        self.model = model
        prefix = "chatcmpl" if operation is Operation.CHAT else "cmpl"
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def completion(self, text: str, finished: Finished) -> Body:
        """The whole ``chat.completion`` or ``text_completion`` body."""
        if self.operation is Operation.CHAT:
            choice: Body = {"index": 0, "logprobs": None, "finish_reason": finished.finish_reason,
                            "message": {"role": "assistant", "content": text, "refusal": None}}
            return self._body("chat.completion", [choice], usage=usage_body(finished.usage))
        choice = {"index": 0, "text": text, "logprobs": None,
                  "finish_reason": finished.finish_reason}
        return self._body("text_completion", [choice], usage=usage_body(finished.usage))

    def chunk(self, text: str, finish_reason: str | None = None, *, first: bool = False) -> Body:
        """One streamed chunk carrying ``text`` (the first chat chunk also names the role)."""
        if self.operation is Operation.CHAT:
            delta: Body = {"role": "assistant", "content": text} if first else (
                {"content": text} if text else {})
            choice: Body = {"index": 0, "delta": delta, "logprobs": None,
                            "finish_reason": finish_reason}
            return self._body("chat.completion.chunk", [choice])
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._body("text_completion", [choice])

    def usage_chunk(self, usage: Usage) -> Body:
        """The last chunk when the client asked ``stream_options.include_usage``."""
        kind = "chat.completion.chunk" if self.operation is Operation.CHAT else "text_completion"
        return self._body(kind, [], usage=usage_body(usage))

    def _body(self, kind: str, choices: list[Body], **extra: Any) -> Body:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None, "choices": choices, **extra}


class EmbeddedBackend:
    """The embedded llama.cpp engine as a deployment: OpenAI bodies in, OpenAI bodies out."""

    def __init__(self, config: DeploymentConfig) -> None:
        self.name = config.name
        self._options = config.embedded
        self._model = config.model or DEFAULT_ALIAS
        self._runner: LlamaRunner | None = None
        self._engine: Engine | None = None

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the engine (for metrics)."""
        return self._engine.queue_depth if self._engine is not None else 0

    @property
    def busy(self) -> bool:
        """Whether the engine is generating now (for metrics)."""
        return self._engine is not None and self._engine.busy

    def engine_stats(self) -> EngineStats | None:
        """The engine's slots, queue, KV-cache use, throughput and utilization (once started)."""
        return self._engine.stats() if self._engine is not None else None

    async def start(self) -> None:
        """Load the model (in a thread: it takes a while) and start the engine's worker."""
        if self._engine is not None:
            return
        options = self._options
        try:
            self._runner = await asyncio.to_thread(
                LlamaRunner, options.model_path, options.n_ctx, options.n_threads, options.seed,
                max_sequences=options.max_sequences, kv_tokens=options.kv_cache_tokens,
                step_tokens=options.step_tokens, shared_kv=options.shared_kv,
            )
        except (OSError, ValueError, RuntimeError) as error:
            raise UpstreamConnectError(
                f"Deployment '{self.name}': the embedded model did not load: {error}"
            ) from error
        scheduler = BatchScheduler(options.max_sequences, options.kv_cache_tokens,
                                   options.step_tokens, keep_prefixes=not options.shared_kv)
        self._engine = Engine(scheduler, self._runner,
                              switch_interval_s=options.gil_switch_interval_ms / 1000)
        self._engine.start()

    async def complete(self, operation: Operation, body: Body, tier: str = "standard") -> Body:
        """Answer one request whole: a chat/text completion or an embeddings list; ``tier`` is
        the priority the engine schedules it by."""
        shape = _ResponseShape(operation, body.get("model") or self._model)
        texts: list[str] = []
        finished = await self._run(operation, body, tier, texts.append)
        if operation is Operation.EMBEDDINGS:
            encoding = body.get("encoding_format") or "float"
            data = [{"object": "embedding", "index": index,
                     "embedding": _embedding_value(vector, encoding)}
                    for index, vector in enumerate(finished.embeddings or [])]
            return {"object": "list", "data": data, "model": shape.model,
                    "usage": {"prompt_tokens": finished.usage.prompt_tokens,
                              "total_tokens": finished.usage.prompt_tokens}}
        return shape.completion("".join(texts), finished)

    async def stream(
        self, operation: Operation, body: Body, tier: str = "standard"
    ) -> AsyncIterator[Body]:
        """Answer one request as chunks: a role chunk, a chunk per text delta, a finish chunk and,
        when asked, a usage chunk; ``tier`` is the priority the engine schedules it by."""
        if operation is Operation.EMBEDDINGS:
            raise InvalidRequest("embeddings cannot be streamed", param="stream")
        shape = _ResponseShape(operation, body.get("model") or self._model)
        events = await self._submit(engine_request(operation, body), tier)
        first = operation is Operation.CHAT
        async with aclosing(events):
            async for event in events:
                if isinstance(event, TokenDelta):
                    yield shape.chunk(event.text, first=first)
                    first = False
                    continue
                if first:
                    yield shape.chunk("", first=True)
                yield shape.chunk("", event.finish_reason)
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield shape.usage_chunk(event.usage)

    async def count_prompt_tokens(self, body: Body) -> int:
        """The tokens the model reads for the OpenAI chat ``body`` (its chat template applied),
        counted by the model's own tokenizer in a worker thread, as the engine counts a job's
        (/v1/messages/count_tokens asks)."""
        runner = self._runner
        if runner is None:
            raise UpstreamConnectError(f"Deployment '{self.name}': the embedded engine is not "
                                       "started.")
        request = _chat_request(body)
        return len(await asyncio.to_thread(runner.prompt_tokens, request))

    async def check(self) -> None:
        """Raise ``UpstreamConnectError`` unless the engine's worker is running."""
        if self._engine is None or not self._engine.alive:
            raise UpstreamConnectError(f"Deployment '{self.name}': the embedded engine is not "
                                       "running.")

    async def aclose(self) -> None:
        """Finish the running request, stop the engine and free the model."""
        engine, runner = self._engine, self._runner
        self._engine = self._runner = None
        if engine is not None:
            await engine.stop()
        if runner is not None:
            await asyncio.to_thread(runner.close)

    def _started(self) -> Engine:
        if self._engine is None:
            raise UpstreamConnectError(f"Deployment '{self.name}': the embedded engine is not "
                                       "started.")
        return self._engine

    async def _submit(self, request: EngineRequest, tier: str) -> JobEvents:
        return await self._started().submit(Job(request, tier if tier in TIERS else "standard"))

    async def _run(
        self, operation: Operation, body: Body, tier: str, on_text: Callable[[str], object]
    ) -> Finished:
        request = engine_request(operation, body)
        if isinstance(request, EmbeddingRequest):
            return await self._started().embed(request)
        events = await self._submit(request, tier)
        async with aclosing(events):
            async for event in events:
                if isinstance(event, TokenDelta):
                    on_text(event.text)
                else:
                    return event
        raise UpstreamProtocolError(f"Deployment '{self.name}': the engine ended a request "
                                    "without finishing it.")
