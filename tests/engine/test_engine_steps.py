"""The engine's step loop with a fake runner: batching, cancellation, stop, errors, limits,
priority.

The runner is a fake on purpose: these tests are about the engine deciding and handing over,
and a fake lets a step be held so the queue can be observed. The real model is exercised in
test_engine_llama.py.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing

import pytest

from switchgear.engine.engine import Engine
from switchgear.engine.job import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    EngineEvent,
    Finished,
    Job,
    SamplingParams,
    TokenDelta,
)
from switchgear.engine.runner import Interrupted, Runner, SlotFeed
from switchgear.engine.scheduler import BatchScheduler
from switchgear.errors import (
    ContextWindowExceeded,
    SwitchgearError,
    UpstreamConnectError,
    UpstreamError,
)
from switchgear.exchange import Usage

WAIT = 10.0  # seconds any single wait in these tests may take before it counts as a hang
GENERATED = 1000  # token ids from here on are generated: 1000 + their position


class FakeRunner(Runner):
    """Words are tokens; the token sampled after position p is ``GENERATED + p + 1``, whose text
    is "t{n} " for the n-th generated token, so a stream shows whether any token was lost or
    repeated (across a preemption too).

    A step feeding a prompt with the word "hold" waits for ``release`` (or ``interrupt``, which
    stops it with ``Interrupted``); "fail" raises an
    UpstreamError and "crash" a ValueError. Each step's feeds are recorded, and the first words
    of each prompt as it starts.
    """

    def __init__(self, n_ctx: int = 64, step_seconds: float = 0.0) -> None:
        self._n_ctx = n_ctx
        self.step_seconds = step_seconds
        self.release = threading.Event()
        self.stop = threading.Event()
        self.words: list[str] = []
        self.started: list[str] = []
        self.steps: list[list[SlotFeed]] = []
        self.prompt_lengths: dict[int, int] = {}
        self.open: set[int] = set()
        self.copies: list[tuple[int, int]] = []

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def prompt_tokens(self, request: ChatRequest | CompletionRequest) -> list[int]:
        if isinstance(request, ChatRequest):
            text = " ".join(m["content"] for m in request.messages)
        else:
            text = request.prompt
        return [self._word(word) for word in text.split()]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def open_slot(self, slot: int, sampling: SamplingParams, keep: int = 0) -> None:
        self.open.add(slot)

    def drop_slot(self, slot: int) -> None:
        self.open.discard(slot)

    def copy_slot(self, source: int, target: int) -> None:
        self.copies.append((source, target))
        self.prompt_lengths[target] = self.prompt_lengths.get(source, 0)

    def decode(self, feeds: Sequence[SlotFeed]) -> list[int | None]:
        assert all(feed.slot in self.open for feed in feeds)
        self.steps.append(list(feeds))
        time.sleep(self.step_seconds)
        prompts = [feed for feed in feeds if feed.position == 0]
        for feed in prompts:
            words = [self.words[token] for token in feed.tokens if token < GENERATED]
            self.prompt_lengths[feed.slot] = len(words)
            self.started.append(" ".join(words))
        said = {self.words[token] for feed in prompts for token in feed.tokens
                if token < GENERATED}
        if "hold" in said:
            deadline = time.monotonic() + WAIT
            while not self.release.wait(0.001):
                assert time.monotonic() < deadline
                if self.stop.is_set():
                    self.stop.clear()
                    raise Interrupted
        if "fail" in said:
            raise UpstreamError("the fake model failed")
        if "crash" in said:
            raise ValueError("secret internals")
        return [GENERATED + feed.position + len(feed.tokens) - self.prompt_lengths[feed.slot]
                if feed.sample else None for feed in feeds]

    def interrupt(self) -> None:
        self.stop.set()

    def resume(self) -> None:
        self.stop.clear()

    def piece(self, token: int) -> bytes:
        return f"t{token - GENERATED} ".encode()

    def is_end(self, token: int) -> bool:
        return False

    def embed(self, request: EmbeddingRequest) -> Finished:
        return Finished("stop", Usage(len(request.inputs), 0), embeddings=[[1.0]])

    def close(self) -> None:
        pass

    def _word(self, word: str) -> int:
        if word not in self.words:
            self.words.append(word)
        return self.words.index(word)


def completion(prompt: str, max_tokens: int | None = 3) -> Job:
    return Job(CompletionRequest(prompt, SamplingParams(max_tokens=max_tokens)))


async def collect(events: AsyncIterator[EngineEvent]) -> list[EngineEvent]:
    return [event async for event in events]


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - the state is set by the engine's thread
            await asyncio.sleep(0.005)


def make_engine(max_sequences: int = 4, kv_tokens: int = 1000,
                runner: FakeRunner | None = None) -> tuple[FakeRunner, Engine]:
    runner = runner or FakeRunner()
    return runner, Engine(BatchScheduler(max_sequences, kv_tokens, step_tokens=64), runner)


def texts(events: list[EngineEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TokenDelta))


@pytest.fixture
async def runner_and_engine() -> AsyncIterator[tuple[FakeRunner, Engine]]:
    runner, engine = make_engine()
    engine.start()
    yield runner, engine
    runner.release.set()
    async with asyncio.timeout(WAIT):
        await engine.stop()


async def test_a_job_streams_its_deltas_then_finishes(
    runner_and_engine: tuple[FakeRunner, Engine],
) -> None:
    _, engine = runner_and_engine
    async with asyncio.timeout(WAIT):
        events = await collect(await engine.submit(completion("one two", max_tokens=3)))
    assert events[:-1] == [TokenDelta("t0 "), TokenDelta("t1 "), TokenDelta("t2 ")]
    assert events[-1] == Finished("length", Usage(2, 3))
    stats = engine.stats()
    assert stats.generated_tokens == 3 and stats.steps == 3
    assert stats.fed_tokens == 2 + 1 + 1
    assert stats.busy_slots == 0 and stats.kv_used == 0
    assert 0 < stats.utilization <= 1


async def test_concurrent_jobs_share_each_step_and_none_is_cut_short(
    runner_and_engine: tuple[FakeRunner, Engine],
) -> None:
    runner, engine = runner_and_engine
    held = await engine.submit(completion("hold first", max_tokens=5))
    await wait_until(lambda: engine.busy)
    later = [await engine.submit(completion(f"prompt {n}", max_tokens=5)) for n in range(3)]
    assert engine.queue_depth == 3
    runner.release.set()
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*(collect(stream) for stream in [held, *later]))
    for events in results:
        assert texts(events) == "t0 t1 t2 t3 t4 "
        assert events[-1] == Finished("length", events[-1].usage)  # type: ignore[union-attr]
    assert max(len(step) for step in runner.steps) == 4  # four sequences in one batch
    assert len({feed.slot for step in runner.steps for feed in step}) == 4
    await wait_until(lambda: not engine.busy)
    assert engine.queue_depth == 0


async def test_a_new_job_joins_the_batch_while_others_decode() -> None:
    runner, engine = make_engine(max_sequences=2)
    engine.start()
    try:
        running = await engine.submit(completion("hold running", max_tokens=20))
        await wait_until(lambda: engine.busy)
        joining = await engine.submit(completion("joins now", max_tokens=2))
        runner.release.set()
        async with asyncio.timeout(WAIT):
            joined = await collect(joining)
            ran = await collect(running)
        assert texts(joined) == "t0 t1 " and len(texts(ran).split()) == 20
        second = runner.steps[1]  # the running decode and the new prompt in one batch
        assert [(feed.position, len(feed.tokens)) for feed in second] == [(2, 1), (0, 2)]
    finally:
        await engine.stop()


async def test_a_job_waits_for_a_free_slot_and_runs_once_one_is_freed() -> None:
    runner, engine = make_engine(max_sequences=1)
    engine.start()
    try:
        first = await engine.submit(completion("hold first", max_tokens=2))
        await wait_until(lambda: engine.busy)
        second = await engine.submit(completion("second", max_tokens=2))
        assert engine.queue_depth == 1 and engine.stats().busy_slots == 1
        runner.release.set()
        async with asyncio.timeout(WAIT):
            await collect(first)
            await collect(second)
        assert runner.started == ["hold first", "second"]
        assert max(len(step) for step in runner.steps) == 1
    finally:
        await engine.stop()


async def test_a_job_abandoned_while_waiting_never_runs() -> None:
    runner, engine = make_engine(max_sequences=1)
    engine.start()
    try:
        held = await engine.submit(completion("hold"))
        await wait_until(lambda: engine.busy)
        abandoned = await engine.submit(completion("abandoned"))
        kept = await engine.submit(completion("kept"))
        assert engine.queue_depth == 2
        await abandoned.aclose()
        assert engine.queue_depth == 1
        runner.release.set()
        async with asyncio.timeout(WAIT):
            await collect(held)
            await collect(kept)
        assert runner.started == ["hold", "kept"]
    finally:
        await engine.stop()


async def test_leaving_a_running_job_early_frees_its_slot_at_once() -> None:
    runner, engine = make_engine(max_sequences=1)
    engine.start()
    try:
        job = completion("endless", max_tokens=None)
        events = await engine.submit(job)
        async with asyncio.timeout(WAIT), aclosing(events):
            received = [await anext(events) for _ in range(3)]
        assert all(isinstance(event, TokenDelta) for event in received)
        assert job.cancelled.is_set()
        async with asyncio.timeout(WAIT):
            after = await collect(await engine.submit(completion("after", max_tokens=2)))
        assert after[-1] == Finished("length", Usage(1, 2))
        assert runner.open == set()  # the slot's KV and sampler were dropped
        assert engine.stats().busy_slots == 0
    finally:
        await engine.stop()


async def test_interactive_work_preempts_batch_work_which_resumes_where_it_was() -> None:
    # Steps of 2 ms leave the batch streams hundreds of steps to go when the urgent job comes.
    _, engine = make_engine(max_sequences=2, runner=FakeRunner(n_ctx=500, step_seconds=0.002))
    engine.start()
    try:
        batch = [Job(CompletionRequest(f"batch {n}", SamplingParams(max_tokens=400)), tier="batch")
                 for n in range(2)]
        streams = [await engine.submit(job) for job in batch]
        async with asyncio.timeout(WAIT):
            for stream in streams:
                await anext(stream)
            urgent = Job(CompletionRequest("urgent", SamplingParams(max_tokens=3)),
                         tier="interactive")
            answer = await collect(await engine.submit(urgent))
            rest = await asyncio.gather(*(collect(stream) for stream in streams))
        assert texts(answer) == "t0 t1 t2 "
        assert engine.stats().preemptions >= 1
        for events in rest:  # every token once, in order, across the preemption
            assert "t0 " + texts(events) == "".join(f"t{n} " for n in range(400))
            assert events[-1] == Finished("length", Usage(2, 400))
    finally:
        await engine.stop()


@pytest.mark.parametrize("tier", ["interactive", "standard", "batch"])
async def test_higher_tier_work_interrupts_a_batch_step_in_progress(tier: str) -> None:
    # The batch job's prompt step holds until released; a higher-tier job stops that step at
    # once (it runs again later, nothing lost) and gets its first token while it would still hold.
    runner, engine = make_engine(max_sequences=2)
    engine.start()
    try:
        held = await engine.submit(Job(CompletionRequest("hold batch", SamplingParams(max_tokens=3)),
                                       tier="batch"))
        await wait_until(lambda: engine.busy)
        newcomer = await engine.submit(Job(CompletionRequest("new work", SamplingParams(max_tokens=2)),
                                           tier=tier))
        async with asyncio.timeout(WAIT):
            if tier != "batch":
                assert await anext(newcomer) == TokenDelta("t0 ")
                assert not runner.release.is_set()
            runner.release.set()
            rest = await collect(newcomer)
            batch = await collect(held)
        assert texts(batch) == "t0 t1 t2 "
        interrupted = 0 if tier == "batch" else 1
        assert engine.stats().interrupted_steps == interrupted
        assert runner.started.count("hold batch") == 1 + interrupted  # read again after the stop
        assert rest[-1] == Finished("length", Usage(2, 2))
    finally:
        await engine.stop()


async def test_stop_finishes_the_running_job_and_fails_the_waiting_ones() -> None:
    runner, engine = make_engine(max_sequences=1)
    engine.start()
    running = await engine.submit(completion("hold running", max_tokens=4))
    await wait_until(lambda: engine.busy)
    waiting = await engine.submit(completion("waiting"))
    stopping = asyncio.create_task(engine.stop())
    async with asyncio.timeout(WAIT):
        with pytest.raises(UpstreamConnectError):
            await collect(waiting)
        runner.release.set()
        events = await collect(running)
        await stopping
    assert events[-1] == Finished("length", Usage(2, 4))
    assert runner.started == ["hold running"]
    assert not engine.alive
    with pytest.raises(UpstreamConnectError):
        await engine.submit(completion("too late"))


async def test_a_runner_error_reaches_the_caller_and_the_engine_goes_on(
    runner_and_engine: tuple[FakeRunner, Engine],
) -> None:
    _, engine = runner_and_engine
    async with asyncio.timeout(WAIT):
        with pytest.raises(UpstreamError, match="fake model failed"):
            await collect(await engine.submit(completion("fail")))
        with pytest.raises(SwitchgearError) as crashed:
            await collect(await engine.submit(completion("crash")))
        after = await collect(await engine.submit(completion("after", max_tokens=1)))
    assert crashed.value.status == 500
    assert "secret" not in crashed.value.message
    assert after[-1] == Finished("length", Usage(1, 1))


async def test_a_prompt_longer_than_the_context_window_is_refused(
    runner_and_engine: tuple[FakeRunner, Engine],
) -> None:
    runner, engine = runner_and_engine
    long_chat = Job(ChatRequest([{"role": "user", "content": "word " * 64}]))
    with pytest.raises(ContextWindowExceeded) as refused:
        await engine.submit(long_chat)
    assert refused.value.param == "messages"
    with pytest.raises(ContextWindowExceeded) as refused:
        await engine.submit(completion("word " * 64))
    assert refused.value.param == "prompt"
    assert runner.started == []


async def test_a_completion_that_would_overflow_the_window_is_refused(
    runner_and_engine: tuple[FakeRunner, Engine],
) -> None:
    _, engine = runner_and_engine
    with pytest.raises(ContextWindowExceeded) as refused:
        await engine.submit(completion("four words of prompt", max_tokens=61))
    assert refused.value.param == "max_tokens"
    assert refused.value.code == "context_length_exceeded"
    async with asyncio.timeout(WAIT):
        fits = await collect(await engine.submit(completion("four words of prompt", 60)))
    assert fits[-1] == Finished("length", Usage(4, 60))


async def test_a_request_larger_than_the_whole_kv_cache_is_refused_not_left_waiting() -> None:
    _runner, engine = make_engine(kv_tokens=20)
    engine.start()
    try:
        with pytest.raises(ContextWindowExceeded) as refused:
            await engine.submit(completion("four words of prompt", max_tokens=17))
        assert "maximum context length is 20 tokens" in refused.value.message
        async with asyncio.timeout(WAIT):
            fits = await collect(await engine.submit(completion("four words of prompt", 16)))
        assert fits[-1] == Finished("length", Usage(4, 16))
    finally:
        await engine.stop()


async def test_an_engine_not_started_refuses_work() -> None:
    _, engine = make_engine()
    with pytest.raises(UpstreamConnectError):
        await engine.submit(completion("early"))
    with pytest.raises(UpstreamConnectError):
        await engine.embed(EmbeddingRequest(("early",)))


async def test_a_running_engine_shortens_the_gil_switch_interval_and_restores_it() -> None:
    before = sys.getswitchinterval()
    engine = Engine(BatchScheduler(2, 100, step_tokens=64), FakeRunner(), switch_interval_s=0.0005)
    engine.start()
    try:
        assert sys.getswitchinterval() == pytest.approx(min(0.0005, before))
    finally:
        await engine.stop()
    assert sys.getswitchinterval() == before
