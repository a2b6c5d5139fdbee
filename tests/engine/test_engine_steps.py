"""The engine's step loop with a fake runner: fairness, cancellation, stop, errors, limits.

The runner is a fake on purpose: these tests are about the engine deciding and handing over,
and a fake lets a job be held mid-run so the queue can be observed. The real model is exercised
in test_engine_llama.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import pytest

from switchgear.engine.engine import Engine
from switchgear.engine.job import (
    ChatRequest,
    CompletionRequest,
    EngineEvent,
    Finished,
    Job,
    SamplingParams,
    TokenDelta,
)
from switchgear.engine.runner import Runner, TokenSink
from switchgear.engine.scheduler import FifoScheduler
from switchgear.errors import (
    ContextWindowExceeded,
    SwitchgearError,
    UpstreamConnectError,
    UpstreamError,
)
from switchgear.exchange import Usage

WAIT = 10.0  # seconds any single wait in these tests may take before it counts as a hang


class FakeRunner(Runner):
    """Emits "t0 t1 ..." up to max_tokens (forever without one), one word per token.

    A prompt starting with "hold" waits for ``release`` first; "fail" raises an UpstreamError and
    "crash" a ValueError. Every job's prompt is recorded when it starts, every outcome when done.
    """

    def __init__(self, n_ctx: int = 64) -> None:
        self._n_ctx = n_ctx
        self.release = threading.Event()
        self.started: list[str] = []
        self.finished: dict[str, Finished] = {}

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def count_prompt_tokens(self, request: ChatRequest | CompletionRequest) -> int:
        if isinstance(request, ChatRequest):
            return sum(len(m["content"].split()) for m in request.messages)
        return len(request.prompt.split())

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def run(self, job: Job, emit: TokenSink) -> Finished:
        assert isinstance(job.request, CompletionRequest)
        prompt = job.request.prompt
        self.started.append(prompt)
        if prompt.startswith("hold"):
            assert self.release.wait(WAIT)
        if prompt.startswith("fail"):
            raise UpstreamError("the fake model failed")
        if prompt.startswith("crash"):
            raise ValueError("secret internals")
        limit = job.request.sampling.max_tokens
        generated = 0
        while limit is None or generated < limit:
            if job.cancelled.wait(0.001 if limit is None else 0):
                break
            emit(TokenDelta(f"t{generated} "))
            generated += 1
        reason = "length" if generated == limit else "stop"
        finished = Finished(reason, Usage(self.count_prompt_tokens(job.request), generated))
        self.finished[prompt] = finished
        return finished

    def close(self) -> None:
        pass


def completion(prompt: str, max_tokens: int | None = 3) -> Job:
    return Job(CompletionRequest(prompt, SamplingParams(max_tokens=max_tokens)))


async def collect(events: AsyncIterator[EngineEvent]) -> list[EngineEvent]:
    return [event async for event in events]


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - the state is set by the engine's thread
            await asyncio.sleep(0.005)


@pytest.fixture
async def runner_and_engine() -> AsyncIterator[tuple[FakeRunner, Engine]]:
    runner = FakeRunner()
    engine = Engine(FifoScheduler(), runner)
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


async def test_waiting_jobs_run_in_arrival_order_and_none_is_cut_short(
    runner_and_engine: tuple[FakeRunner, Engine],
) -> None:
    runner, engine = runner_and_engine
    prompts = ["hold first", "second", "third", "fourth"]
    streams = []
    for prompt in prompts:
        streams.append(await engine.submit(completion(prompt, max_tokens=5)))
        if prompt == "hold first":
            await wait_until(lambda: engine.busy)
    assert engine.queue_depth == 3
    runner.release.set()
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*(collect(stream) for stream in streams))
    assert runner.started == prompts
    for events in results:
        deltas = [event for event in events if isinstance(event, TokenDelta)]
        assert len(deltas) == 5
        assert events[-1] == Finished("length", events[-1].usage)  # type: ignore[union-attr]
    await wait_until(lambda: not engine.busy)
    assert engine.queue_depth == 0


async def test_a_job_abandoned_while_waiting_never_runs(
    runner_and_engine: tuple[FakeRunner, Engine],
) -> None:
    runner, engine = runner_and_engine
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


async def test_leaving_a_running_job_early_stops_its_generation(
    runner_and_engine: tuple[FakeRunner, Engine],
) -> None:
    runner, engine = runner_and_engine
    job = completion("endless", max_tokens=None)
    events = await engine.submit(job)
    async with asyncio.timeout(WAIT), aclosing(events):
        received = [await anext(events) for _ in range(3)]
    assert all(isinstance(event, TokenDelta) for event in received)
    assert job.cancelled.is_set()
    await wait_until(lambda: "endless" in runner.finished)
    assert runner.finished["endless"].finish_reason == "stop"
    async with asyncio.timeout(WAIT):
        after = await collect(await engine.submit(completion("after", max_tokens=2)))
    assert isinstance(after[-1], Finished)


async def test_stop_finishes_the_running_job_and_fails_the_waiting_ones() -> None:
    runner = FakeRunner()
    engine = Engine(FifoScheduler(), runner)
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


async def test_an_engine_not_started_refuses_work() -> None:
    engine = Engine(FifoScheduler(), FakeRunner())
    with pytest.raises(UpstreamConnectError):
        await engine.submit(completion("early"))
