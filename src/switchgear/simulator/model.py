"""A simulated model: slots, a waiting line, load-dependent speed, and OpenAI-shaped answers."""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from switchgear.exchange import Operation
from switchgear.simulator.bodies import (
    ChatShape,
    CompletionShape,
    completion_shape,
    embedding_list,
    model_list,
    usage,
)
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.requests import (
    EmbeddingRequest,
    GenerationRequest,
    parse_embedding,
    parse_generation,
)
from switchgear.simulator.slots import SlotPool
from switchgear.simulator.text import REFUSAL_WORDS, estimate_tokens, filler_words

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Generation:
    """A validated generation request, how long its answer will be and, for a canned answer,
    its words (else the filler text)."""

    request: GenerationRequest
    output_tokens: int
    finish_reason: str
    words: tuple[str, ...] | None = None

    @property
    def stream(self) -> bool:
        """Whether the client asked for a stream."""
        return self.request.stream

    def degraded(self, output_factor: float, refuse: bool) -> Generation:
        """This generation answered worse on purpose: a refusal, or ``output_factor`` of its
        length (an answer cut short stops by itself, before any token limit)."""
        if refuse:
            return replace(self, output_tokens=len(REFUSAL_WORDS), finish_reason="stop",
                           words=REFUSAL_WORDS)
        if output_factor == 1:
            return self
        shorter = max(1, round(self.output_tokens * output_factor))
        return replace(self, output_tokens=shorter,
                       finish_reason="stop" if shorter < self.output_tokens else
                       self.finish_reason)


class SimulatedModel:
    """A model server's behaviour without a model: timing, queueing, token counts, answer shapes.

    ``slots`` sequences run at once; later requests wait first-come-first-served. The first token
    comes after ``ttft_ms`` and each further one after ``tpot_ms``, both stretched by the load (see
    ``ModelOptions``). Output lengths are lognormal around ``mean_output_tokens``, clipped to
    ``max_tokens`` (``finish_reason`` is then ``length``); with vLLM's ``ignore_eos`` every answer
    runs to ``max_tokens``, as load generators ask.
    """

    def __init__(self, options: ModelOptions) -> None:
        self.options = options
        self._slots = SlotPool(options.slots)
        self._rng = random.Random(options.seed)
        self._served = 0

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a slot now."""
        return self._slots.waiting

    @property
    def busy_slots(self) -> int:
        """Slots running a sequence now."""
        return self._slots.busy

    @property
    def peak_in_flight(self) -> int:
        """The most requests running or waiting for a slot at once since start."""
        return self._slots.peak

    @property
    def requests_served(self) -> int:
        """Requests answered in full since start."""
        return self._served

    @property
    def ttft_seconds(self) -> float:
        """Time to first token at the current load, once a slot is held."""
        return self._under_load(self.options.ttft_ms)

    @property
    def tpot_seconds(self) -> float:
        """Time per further output token at the current load."""
        return self._under_load(self.options.tpot_ms)

    def models(self) -> Body:
        """The ``/v1/models`` body."""
        return model_list(self.options.model)

    def plan_generation(self, operation: Operation, body: Body) -> Generation:
        """Validate a chat or completions body and draw its output length."""
        request = parse_generation(operation, body, self.options.context_window)
        limit = request.max_tokens or self.options.context_window - request.prompt_tokens
        if request.tool is not None:  # the call's arguments are its output
            call_tokens = estimate_tokens(request.tool.name + request.tool.arguments)
            return Generation(request, min(limit, call_tokens), "tool_calls")
        drawn = self._draw_output_tokens()
        if drawn >= limit or request.ignore_eos:
            return Generation(request, limit, "length")
        return Generation(request, drawn, "stop")

    def plan_embedding(self, body: Body) -> EmbeddingRequest:
        """Validate an embeddings body."""
        return parse_embedding(body)

    async def complete(self, generation: Generation) -> Body:
        """Generate the whole answer and return it as one body with usage."""
        shape = completion_shape(generation.request.operation, generation.request.model)
        async with aclosing(self._tokens(generation)) as tokens:
            text = "".join([token async for token in tokens])
        call = generation.request.tool
        if call is not None and isinstance(shape, ChatShape):
            return shape.tool_call(_call_id(shape), call.name, call.arguments,
                                   self._usage(generation))
        return shape.whole(text, generation.finish_reason, self._usage(generation))


    async def embed(self, request: EmbeddingRequest) -> Body:
        """Embed every input as a deterministic unit vector derived from its text."""
        dimension = request.dimensions or self.options.embedding_dimension
        async with self._slots.hold():
            await asyncio.sleep(self.ttft_seconds)
        self._served += 1
        vectors = [unit_vector(text, dimension) for text in request.inputs]
        return embedding_list(request.model, vectors, request.encoding_format,
                              request.prompt_tokens)

    async def wait_idle(self) -> None:
        """Return once nothing runs and nothing waits."""
        await self._slots.wait_idle()

    async def stream(self, generation: Generation) -> AsyncGenerator[Body, None]:
        """Generate the answer as stream chunks, the usage chunk last when it was asked for."""
        shape = completion_shape(generation.request.operation, generation.request.model)
        opening = shape.opening()
        call = generation.request.tool
        async with aclosing(self._tokens(generation)) as tokens:
            async for token in tokens:
                if opening is not None:
                    yield opening  # sent with the first token, as real servers do
                    opening = None
                if call is None:
                    yield shape.piece(token)
        if call is not None and isinstance(shape, ChatShape):
            for piece in shape.tool_call_pieces(_call_id(shape), call.name, call.arguments):
                yield piece
        yield shape.closing(generation.finish_reason)
        if generation.request.include_usage:
            yield shape.usage_chunk(self._usage(generation))

    async def _tokens(self, generation: Generation) -> AsyncGenerator[str, None]:
        words = iter(generation.words) if generation.words is not None else filler_words()
        async with self._slots.hold():
            await asyncio.sleep(self.ttft_seconds)
            for index in range(generation.output_tokens):
                if index:
                    await asyncio.sleep(self.tpot_seconds)
                yield next(words)
        self._served += 1

    def _under_load(self, base_ms: float) -> float:
        # The sequence asking is one of the busy ones; only the others slow it down.
        others = max(0, self._slots.busy - 1)
        return base_ms / 1000 * (1 + self.options.load_factor * others / self.options.slots)

    def _draw_output_tokens(self) -> int:
        sigma = self.options.output_spread
        mu = math.log(self.options.mean_output_tokens) - sigma * sigma / 2
        return max(1, round(self._rng.lognormvariate(mu, sigma)))

    def _usage(self, generation: Generation) -> Body:
        prompt_tokens = generation.request.prompt_tokens
        cached = int(prompt_tokens * self.options.cached_prompt_share)
        return usage(prompt_tokens, generation.output_tokens, cached)


def _call_id(shape: CompletionShape) -> str:
    """A tool call's id, from its response's."""
    return "call_" + shape.id.rpartition("-")[2]


def unit_vector(text: str, dimension: int) -> list[float]:
    """A unit vector that depends only on ``text`` and ``dimension``."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    components = [rng.gauss(0.0, 1.0) for _ in range(dimension)]
    norm = math.sqrt(sum(c * c for c in components)) or 1.0
    return [c / norm for c in components]
