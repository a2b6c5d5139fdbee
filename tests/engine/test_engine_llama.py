"""The real SmolLM2 model through LlamaRunner and the batched Engine: text, usage, concurrent
streams matching solo runs, cancellation, preemption, embeddings."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import replace

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
    Interrupted,
    LlamaRunner,
    SlotFeed,
    default_model_path,
)
from switchgear.engine.scheduler import BatchScheduler
from switchgear.errors import ContextWindowExceeded

pytestmark = pytest.mark.model

N_CTX = 512
WAIT = 120.0  # seconds a whole generation may take on a slow machine before it counts as a hang
STORY = [{"role": "user", "content": "Tell me a story about a cat who learns to sail."}]
TOPICS = ["a cat", "the sea", "a robot", "winter", "bread", "a lighthouse", "trains", "the moon"]


def chat(max_tokens: int | None, stop: tuple[str, ...] = (), content: str = "",
         tier: str = "standard") -> Job:
    """A greedy (temperature 0) chat job asking for a story."""
    messages = [{"role": "user", "content": content}] if content else STORY
    sampling = SamplingParams(max_tokens, temperature=0.0, stop=stop)
    return Job(ChatRequest(messages, sampling), tier=tier)


async def run(engine: Engine, job: Job) -> tuple[str, Finished]:
    """The job's whole text and how it finished."""
    texts: list[str] = []
    async with asyncio.timeout(WAIT):
        async for event in await engine.submit(job):
            if isinstance(event, TokenDelta):
                texts.append(event.text)
            else:
                return "".join(texts), event
    raise AssertionError("the events ended without a Finished")


@pytest.fixture(scope="module")
def runner() -> Iterator[LlamaRunner]:
    runner = LlamaRunner(n_ctx=N_CTX, seed=0, max_sequences=8, kv_tokens=8 * N_CTX)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def engine(runner: LlamaRunner) -> Iterator[Engine]:
    engine = Engine(BatchScheduler(8, 8 * N_CTX, 256, keep_prefixes=True), runner)
    engine.start()
    yield engine
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


async def test_a_chat_generates_text_and_counts_usage(engine: Engine, runner: LlamaRunner) -> None:
    text, finished = await run(engine, chat(max_tokens=8))
    assert finished.finish_reason == "length"
    assert finished.usage.completion_tokens == 8
    assert finished.usage.prompt_tokens == runner.count_prompt_tokens(ChatRequest(STORY))
    assert text.strip()


async def test_a_raw_completion_continues_the_prompt(engine: Engine, runner: LlamaRunner) -> None:
    request = CompletionRequest("The capital of France is", SamplingParams(4, temperature=0.0))
    text, finished = await run(engine, Job(request))
    assert finished.usage.prompt_tokens == runner.count_tokens("The capital of France is")
    assert 0 < finished.usage.completion_tokens <= 4
    assert text.strip()


async def test_a_stop_sequence_cuts_the_text_before_it(engine: Engine) -> None:
    full, _ = await run(engine, chat(max_tokens=6))
    stop = full.split()[1]
    cut, finished = await run(engine, chat(max_tokens=6, stop=(stop,)))
    assert finished.finish_reason == "stop"
    assert cut == full[: full.index(stop)]


async def test_eight_concurrent_streams_match_the_same_prompts_run_alone(engine: Engine) -> None:
    def jobs() -> list[Job]:
        return [chat(max_tokens=32, content=f"Write two sentences about {topic}.")
                for topic in TOPICS]

    alone = [await run(engine, job) for job in jobs()]
    before = engine.stats().steps
    together = await asyncio.gather(*(run(engine, job) for job in jobs()))
    def seen(results: list[tuple[str, Finished]]) -> list[tuple[str, str, int, int]]:
        # cached_tokens depends on which slot's kept prefix a prompt lands on; the rest must match
        return [(text, f.finish_reason, f.usage.prompt_tokens, f.usage.completion_tokens)
                for text, f in results]

    assert seen(together) == seen(alone)  # same text, finish reason, usage: none cut short
    assert all(finished.usage.completion_tokens > 8 for _, finished in together)
    assert engine.stats().steps - before < sum(f.usage.completion_tokens for _, f in together)


async def test_a_shared_prompt_prefix_is_read_once_and_counted_as_cached(engine: Engine) -> None:
    # The engine keeps each freed slot's KV; SmolLM2's template starts every chat with the same
    # system message, so a later chat in that slot reads only what follows it.
    await run(engine, chat(4, content="Name a colour."))
    before = engine.stats().fed_tokens
    text, second = await run(engine, chat(4, content="Name a fruit."))
    # Fed: the prompt after the cached prefix, then each generated token but the last (at
    # finish_reason "length"; at "stop", the last too: the end-of-text token came after it).
    fed = engine.stats().fed_tokens - before
    decoded = second.usage.completion_tokens - (second.finish_reason == "length")
    assert second.usage.cached_tokens >= 20
    assert fed - decoded == second.usage.prompt_tokens - second.usage.cached_tokens
    fresh = Engine(BatchScheduler(1, 2 * N_CTX, 256), LlamaRunner(n_ctx=N_CTX, max_sequences=1,
                                                                   kv_tokens=2 * N_CTX))
    fresh.start()
    try:
        assert await run(fresh, chat(4, content="Name a fruit.")) == (
            text, Finished(second.finish_reason, replace(second.usage, cached_tokens=0)))
    finally:
        await fresh.stop()


async def test_a_cancelled_stream_frees_its_slot_at_once(engine: Engine) -> None:
    before = engine.stats().generated_tokens
    events = await engine.submit(chat(max_tokens=400))
    async with asyncio.timeout(WAIT), aclosing(events):
        first_two = [await anext(events), await anext(events)]
    assert all(isinstance(event, TokenDelta) for event in first_two)
    async with asyncio.timeout(WAIT):
        while engine.stats().busy_slots:  # noqa: ASYNC110 - the engine's thread frees it
            await asyncio.sleep(0.01)
    assert engine.stats().generated_tokens - before < 100
    assert engine.stats().kv_used == 0


@pytest.mark.parametrize("keep_prefixes", [False, True])
async def test_preempted_batch_streams_resume_to_the_same_text(keep_prefixes: bool) -> None:
    # With keep_prefixes the urgent prompt reuses the preempted stream's cells for the part it
    # shares (the chat template's system prompt) and the rest of them are cut.
    runner = LlamaRunner(n_ctx=N_CTX, seed=0, max_sequences=2, kv_tokens=2 * N_CTX)
    engine = Engine(BatchScheduler(2, 2 * N_CTX, 256, keep_prefixes=keep_prefixes), runner)
    engine.start()
    try:
        prompts = [f"Write a poem about {topic}." for topic in TOPICS[:2]]
        hello = await run(engine, chat(4, content="Say hello.", tier="interactive"))
        alone = [await run(engine, chat(48, content=prompt, tier="batch")) for prompt in prompts]
        batch = [asyncio.create_task(run(engine, chat(48, content=prompt, tier="batch")))
                 for prompt in prompts]
        async with asyncio.timeout(WAIT):
            while engine.stats().busy_slots < 2:  # noqa: ASYNC110 - set by the engine's thread
                await asyncio.sleep(0.01)
        urgent = await run(engine, chat(4, content="Say hello.", tier="interactive"))
        assert urgent[0] == hello[0]
        # The same text (what of the prompt came from kept cells may differ: cached_tokens).
        assert [(await task)[0] for task in batch] == [text for text, _ in alone]
        assert engine.stats().preemptions >= 1
    finally:
        await engine.stop()
        runner.close()


def test_an_interrupted_step_leaves_no_trace_and_runs_again_to_the_same_token() -> None:
    runner = LlamaRunner(n_ctx=256, seed=0, max_sequences=2, kv_tokens=512)
    try:
        prompt = runner.prompt_tokens(chat(8, content=" ".join(TOPICS * 8)).request)
        greedy = SamplingParams(8, temperature=0.0)
        for slot in (0, 1):
            runner.open_slot(slot, greedy)
        alone = runner.decode([SlotFeed(1, prompt, 0, True)])
        # Stopped before it starts, and part-way (a prompt this long takes tens of milliseconds).
        runner.interrupt()
        with pytest.raises(Interrupted):
            runner.decode([SlotFeed(0, prompt, 0, True)])
        stopper = threading.Timer(0.005, runner.interrupt)
        stopper.start()
        with pytest.raises(Interrupted):
            runner.decode([SlotFeed(0, prompt, 0, True)])
        stopper.join()
        # The cells it wrote are gone (positions 0.. can be fed again) and the answer is the same.
        assert runner.decode([SlotFeed(0, prompt, 0, True)]) == alone
        token = alone[0]
        assert token is not None
        following = runner.decode([SlotFeed(slot, [token], len(prompt), True) for slot in (0, 1)])
        assert following[0] == following[1]
    finally:
        runner.close()


def test_a_copied_slot_continues_as_the_original_in_a_batch_listed_out_of_order() -> None:
    # The scheduler moves a kept prefix to the lowest free slot (copy_slot); the runner lists a
    # batch's slots in ascending order for llama.cpp and hands each feed its own token back.
    runner = LlamaRunner(n_ctx=256, seed=0, max_sequences=3, kv_tokens=768)
    try:
        greedy = SamplingParams(8, temperature=0.0)
        prompts = {slot: runner.prompt_tokens(chat(8, content=f"Write about {topic}.").request)
                   for slot, topic in ((2, "the sea"), (1, "trains"))}
        alone = {}
        for slot, prompt in prompts.items():
            runner.open_slot(slot, greedy)
            first = runner.decode([SlotFeed(slot, prompt, 0, True)])[0]
            assert first is not None
            alone[slot] = [first, runner.decode([SlotFeed(slot, [first], len(prompt), True)])[0]]
        assert alone[1] != alone[2]
        runner.copy_slot(2, 0)
        runner.open_slot(0, greedy, keep=len(prompts[2]) - 1)
        runner.open_slot(1, greedy, keep=len(prompts[1]) - 1)
        feeds = [SlotFeed(1, prompts[1][-1:], len(prompts[1]) - 1, True),
                 SlotFeed(0, prompts[2][-1:], len(prompts[2]) - 1, True)]
        firsts = runner.decode(feeds)
        assert firsts == [alone[1][0], alone[2][0]]
        seconds = runner.decode([SlotFeed(feed.slot, [token], feed.position + 1, True)
                                 for feed, token in zip(feeds, firsts, strict=True)
                                 if token is not None])
        assert seconds == [alone[1][1], alone[2][1]]
    finally:
        runner.close()


def test_embeddings_are_one_unit_vector_per_input(runner: LlamaRunner) -> None:
    inputs = ("a cat sat on the mat", "interest rates rose again")
    finished = runner.embed(EmbeddingRequest(inputs))
    assert finished.embeddings is not None
    first, second = finished.embeddings
    assert len(first) == len(second) > 0
    assert math.isclose(math.fsum(x * x for x in first), 1.0, rel_tol=1e-3)
    assert first != second
    assert finished.usage.prompt_tokens == sum(map(runner.count_tokens, inputs))


async def test_a_chat_too_long_for_the_window_is_refused(engine: Engine) -> None:
    too_long = Job(ChatRequest([{"role": "user", "content": "word " * N_CTX}]))
    with pytest.raises(ContextWindowExceeded) as refused:
        await engine.submit(too_long)
    assert refused.value.param == "messages"
    with pytest.raises(ContextWindowExceeded) as refused:
        await engine.submit(chat(max_tokens=N_CTX))
    assert refused.value.param == "max_tokens"
