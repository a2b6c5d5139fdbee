"""The real SmolLM2 model through LlamaRunner and the Engine: text, usage, cancel, embeddings."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import aclosing

import pytest

from switchgear.engine.engine import Engine
from switchgear.engine.job import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Finished,
    Job,
    SamplingParams,
    TokenDelta,
)
from switchgear.engine.runner import (
    SMOLLM2_FILE,
    LlamaRunner,
    Runner,
    TokenSink,
    default_model_path,
)
from switchgear.engine.scheduler import FifoScheduler
from switchgear.errors import ContextWindowExceeded

pytestmark = pytest.mark.model

N_CTX = 512
WAIT = 120.0  # seconds a whole generation may take on a slow machine before it counts as a hang
STORY = [{"role": "user", "content": "Tell me a story about a cat who learns to sail."}]


def chat(max_tokens: int | None, stop: tuple[str, ...] = ()) -> Job:
    """A greedy (temperature 0) chat job asking for a story."""
    return Job(ChatRequest(STORY, SamplingParams(max_tokens, temperature=0.0, stop=stop)))


class RecordingRunner(Runner):
    """The real runner, with every job's outcome kept so tests can see how a job ended."""

    def __init__(self, runner: LlamaRunner) -> None:
        self.inner = runner
        self.outcomes: dict[int, Finished] = {}

    @property
    def n_ctx(self) -> int:
        return self.inner.n_ctx

    def count_prompt_tokens(self, request: ChatRequest | CompletionRequest) -> int:
        return self.inner.count_prompt_tokens(request)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def run(self, job: Job, emit: TokenSink) -> Finished:
        finished = self.inner.run(job, emit)
        self.outcomes[id(job)] = finished
        return finished

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def runner() -> Iterator[LlamaRunner]:
    runner = LlamaRunner(n_ctx=N_CTX, seed=0)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def recording_engine(runner: LlamaRunner) -> Iterator[tuple[RecordingRunner, Engine]]:
    recorder = RecordingRunner(runner)
    engine = Engine(FifoScheduler(), recorder)
    engine.start()
    yield recorder, engine
    asyncio.run(engine.stop())


def test_the_default_model_is_the_smollm2_file_from_its_wheel() -> None:
    path = default_model_path()
    assert path.name == SMOLLM2_FILE
    assert path.is_file()


def test_the_chat_prompt_is_counted_after_the_chat_template(runner: LlamaRunner) -> None:
    bare = runner.count_tokens("Hi")
    templated = runner.count_prompt_tokens(ChatRequest([{"role": "user", "content": "Hi"}]))
    # SmolLM2's template adds a default system message and role markers around the text.
    assert templated > bare + 10


def test_a_chat_generates_text_token_by_token_and_counts_usage(runner: LlamaRunner) -> None:
    job = chat(max_tokens=8)
    deltas: list[TokenDelta] = []
    finished = runner.run(job, deltas.append)
    assert finished.finish_reason == "length"
    assert finished.usage.completion_tokens == 8
    assert finished.usage.prompt_tokens == runner.count_prompt_tokens(ChatRequest(STORY))
    assert len(deltas) >= 2
    assert "".join(delta.text for delta in deltas).strip()


def test_a_raw_completion_continues_the_prompt(runner: LlamaRunner) -> None:
    request = CompletionRequest("The capital of France is", SamplingParams(4, temperature=0.0))
    deltas: list[TokenDelta] = []
    finished = runner.run(Job(request), deltas.append)
    assert finished.usage.prompt_tokens == runner.count_tokens("The capital of France is")
    assert 0 < finished.usage.completion_tokens <= 4
    assert "".join(delta.text for delta in deltas).strip()


def test_a_stop_sequence_cuts_the_text_before_it(runner: LlamaRunner) -> None:
    deltas: list[TokenDelta] = []
    runner.run(chat(max_tokens=6), deltas.append)
    full = "".join(delta.text for delta in deltas)
    stop = full.split()[1]
    cut: list[TokenDelta] = []
    finished = runner.run(chat(max_tokens=6, stop=(stop,)), cut.append)
    assert finished.finish_reason == "stop"
    assert "".join(delta.text for delta in cut) == full[: full.index(stop)]


def test_a_cancelled_job_stops_at_the_next_token(runner: LlamaRunner) -> None:
    job = chat(max_tokens=200)
    deltas: list[TokenDelta] = []

    def emit(delta: TokenDelta) -> None:
        deltas.append(delta)
        if len(deltas) == 3:
            job.cancel()

    finished = runner.run(job, emit)
    assert finished.finish_reason == "stop"
    assert finished.usage.completion_tokens < 10
    assert len(deltas) == 3


def test_embeddings_are_one_unit_vector_per_input(runner: LlamaRunner) -> None:
    inputs = ("a cat sat on the mat", "interest rates rose again")
    finished = runner.run(Job(EmbeddingRequest(inputs)), lambda delta: None)
    assert finished.embeddings is not None
    first, second = finished.embeddings
    assert len(first) == len(second) > 0
    assert math.isclose(math.fsum(x * x for x in first), 1.0, rel_tol=1e-3)
    assert first != second
    assert finished.usage.prompt_tokens == sum(map(runner.count_tokens, inputs))


async def test_concurrent_jobs_all_finish_in_full(
    recording_engine: tuple[RecordingRunner, Engine],
) -> None:
    _, engine = recording_engine

    async def run_one(job: Job) -> tuple[list[str], Finished]:
        texts, finished = [], None
        async for event in await engine.submit(job):
            if isinstance(event, TokenDelta):
                texts.append(event.text)
            else:
                finished = event
        assert finished is not None
        return texts, finished

    jobs = [chat(max_tokens=6) for _ in range(3)]
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*(run_one(job) for job in jobs))
    for texts, finished in results:
        assert finished.finish_reason == "length"
        assert finished.usage.completion_tokens == 6
        assert 2 <= len(texts) <= 6


async def test_leaving_a_generation_early_stops_it(
    recording_engine: tuple[RecordingRunner, Engine],
) -> None:
    recorder, engine = recording_engine
    job = chat(max_tokens=200)
    async with asyncio.timeout(WAIT):
        events = await engine.submit(job)
        async with aclosing(events):
            first_two = [await anext(events), await anext(events)]
        assert all(isinstance(event, TokenDelta) for event in first_two)
        while id(job) not in recorder.outcomes:  # noqa: ASYNC110 - set by the engine's thread
            await asyncio.sleep(0.01)
    assert recorder.outcomes[id(job)].usage.completion_tokens < 200


async def test_a_chat_too_long_for_the_window_is_refused(
    recording_engine: tuple[RecordingRunner, Engine],
) -> None:
    _, engine = recording_engine
    too_long = Job(ChatRequest([{"role": "user", "content": "word " * N_CTX}]))
    with pytest.raises(ContextWindowExceeded) as refused:
        await engine.submit(too_long)
    assert refused.value.param == "messages"
    with pytest.raises(ContextWindowExceeded) as refused:
        await engine.submit(chat(max_tokens=N_CTX))
    assert refused.value.param == "max_tokens"
