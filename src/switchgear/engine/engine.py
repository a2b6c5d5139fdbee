"""The embedded engine: one worker thread that repeats step() = schedule → run → update.

The scheduler decides which sequences advance this step, the runner feeds them to the model in
one batch; the engine owns the thread between them, turns sampled tokens into text and hands the
events over to the event loop. Tokens cross from the worker thread to the awaiting coroutines
into per-job ``asyncio.Queue``s, all of a step's events in one ``loop.call_soon_threadsafe``
(each such call writes to the loop's wake-up socket, and every system or ctypes call lets go of
the GIL, which the worker may then wait for behind the event loop), so the event loop never
waits on the model and the model waits on the event loop as little as it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from switchgear.engine.job import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    EngineEvent,
    Finished,
    Job,
    TokenDelta,
)
from switchgear.engine.runner import Interrupted, Runner, SlotFeed
from switchgear.engine.scheduler import BATCH_RANK, BatchScheduler, Plan, Sequence
from switchgear.engine.stats import EngineStats, StepCounters
from switchgear.engine.text import StopSequenceText
from switchgear.errors import (
    ContextWindowExceeded,
    SwitchgearError,
    UpstreamConnectError,
    internal_error,
)
from switchgear.exchange import Usage

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Failed:
    """A job ended with an error; the coroutine awaiting it raises ``error``."""

    error: SwitchgearError


class _EventChannel:
    """Carries one job's events from the worker thread to the coroutine awaiting them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._queue: asyncio.Queue[EngineEvent | _Failed] = asyncio.Queue()

    def put(self, event: EngineEvent | _Failed) -> None:
        """Hand ``event`` to the event loop (callable from any thread)."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
            self.loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def deliver(self, event: EngineEvent | _Failed) -> None:
        """Queue ``event`` for the awaiting coroutine (on the event loop's thread)."""
        self._queue.put_nowait(event)

    async def get(self) -> EngineEvent | _Failed:
        """The next event, once it has arrived."""
        return await self._queue.get()


_Delivery = list[tuple[_EventChannel, EngineEvent | _Failed]]


class _Outbox:
    """The events the worker thread produces between two flushes, handed to each event loop
    in one call."""

    def __init__(self) -> None:
        self._events: _Delivery = []

    def put(self, channel: _EventChannel, event: EngineEvent | _Failed) -> None:
        """Keep ``event`` for ``channel`` until the next ``flush``."""
        self._events.append((channel, event))

    def flush(self) -> None:
        """Hand every kept event over, one ``call_soon_threadsafe`` per event loop."""
        if not self._events:
            return
        by_loop: dict[asyncio.AbstractEventLoop, _Delivery] = {}
        for channel, event in self._events:
            by_loop.setdefault(channel.loop, []).append((channel, event))
        self._events = []
        for loop, events in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
                loop.call_soon_threadsafe(_deliver, events)


def _deliver(events: _Delivery) -> None:
    for channel, event in events:
        channel.deliver(event)


class JobEvents:
    """One job's events, in order: text deltas, then one ``Finished`` (or the job's error raised).

    ``aclose`` before the end (the client went away) cancels the job: taken out of the queue if
    it waits, stopped at the next token if it runs.
    """

    def __init__(
        self, job: Job, channel: _EventChannel, withdraw: Callable[[Job], None]
    ) -> None:
        self._job = job
        self._channel = channel
        self._withdraw = withdraw
        self._ended = False

    def __aiter__(self) -> JobEvents:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._ended:
            raise StopAsyncIteration
        event = await self._channel.get()
        if isinstance(event, _Failed):
            self._ended = True
            raise event.error
        self._ended = isinstance(event, Finished)
        return event

    async def aclose(self) -> None:
        """Stop listening; cancels the job unless it has already ended."""
        if not self._ended:
            self._ended = True
            self._withdraw(self._job)


class _Stream:
    """What the engine keeps for one running sequence: where its events go and its text so far."""

    def __init__(self, channel: _EventChannel, stop: tuple[str, ...]) -> None:
        self.channel = channel
        self.text = StopSequenceText(stop)


class Engine:
    """Runs generations batched on a worker thread, as its scheduler decides.

    ``submit`` is the way in for chat and completions: it checks the job can ever fit and returns
    its events (text deltas, then one ``Finished``). ``embed`` answers embeddings beside it.
    """

    def __init__(self, scheduler: BatchScheduler, runner: Runner,
                 switch_interval_s: float | None = None) -> None:
        self._scheduler = scheduler
        self._runner = runner
        self._switch_interval_s = switch_interval_s
        self._previous_switch_interval_s = sys.getswitchinterval()
        self._lock = threading.Condition()
        self._streams: dict[Sequence, _Stream] = {}
        self._sequences: dict[Job, Sequence] = {}
        self._open_slots: dict[int, Sequence] = {}  # the worker thread's own
        self._outbox = _Outbox()  # the worker thread's own
        self._counters = StepCounters()
        self._batch_only_step = False  # the step running now feeds only batch-tier sequences
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def queue_depth(self) -> int:
        """Sequences waiting for a slot (new or preempted)."""
        with self._lock:
            return self._scheduler.waiting

    @property
    def busy(self) -> bool:
        """Whether any sequence holds a slot now."""
        with self._lock:
            return bool(self._scheduler.running)

    @property
    def alive(self) -> bool:
        """Whether the engine has started, is not stopping, and its worker thread runs."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def window(self) -> int:
        """The most tokens (prompt and completion) one sequence may ever hold."""
        return min(self._runner.n_ctx, self._scheduler.kv_tokens)

    def stats(self) -> EngineStats:
        """Slots, queue, KV-cache use and the step counters since the engine started."""
        with self._lock:
            running = self._scheduler.running
            return self._counters.snapshot(
                busy_slots=len(running), slots=self._scheduler.max_sequences,
                waiting=self._scheduler.waiting, kv_used=self._scheduler.kv_used,
                kv_tokens=self._scheduler.kv_tokens, now=time.monotonic())

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is not None:
            return
        self._counters.restart(time.monotonic())
        self._previous_switch_interval_s = sys.getswitchinterval()
        if self._switch_interval_s is not None:
            # The worker retakes the GIL after each llama.cpp call; a long interval makes it wait
            # behind the event loop every time (a process-wide setting, restored at stop).
            sys.setswitchinterval(min(self._switch_interval_s, self._previous_switch_interval_s))
        self._thread = threading.Thread(target=self._work, name="switchgear-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish the running sequences, fail the waiting ones with a retryable error, end the
        thread."""
        with self._lock:
            self._stopping = True
            abandoned = [self._forget(sequence) for sequence in self._scheduler.drain()]
            self._lock.notify_all()
        for stream in abandoned:
            stream.channel.put(_Failed(UpstreamConnectError("the embedded engine stopped")))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            sys.setswitchinterval(self._previous_switch_interval_s)

    async def submit(self, job: Job) -> JobEvents:
        """Queue ``job``; return its events. Raises ``ContextWindowExceeded`` when it can never
        fit (a job that fits but finds no room waits).

        Closing the events before the end (the client went away) cancels the job.
        """
        request = job.request
        if isinstance(request, EmbeddingRequest):
            raise TypeError("embeddings go through Engine.embed")
        if not self.alive:
            raise UpstreamConnectError("the embedded engine is not running")
        prompt = await asyncio.to_thread(self._runner.prompt_tokens, request)
        sequence = Sequence(job, prompt, self._limit(request, len(prompt)))
        channel = _EventChannel(asyncio.get_running_loop())
        with self._lock:
            if self._stopping:
                raise UpstreamConnectError("the embedded engine is stopping")
            self._streams[sequence] = _Stream(channel, request.sampling.stop)
            self._sequences[job] = sequence
            self._scheduler.add(sequence)
            if self._batch_only_step and sequence.rank < BATCH_RANK:
                # Higher-tier work does not wait for a batch-tier step to end (~30 ms at 8).
                self._runner.interrupt()
                self._batch_only_step = False
            self._lock.notify()
        return JobEvents(job, channel, self._withdraw)

    async def embed(self, request: EmbeddingRequest) -> Finished:
        """Embed each input (on a thread of its own, beside the generation steps)."""
        if not self.alive:
            raise UpstreamConnectError("the embedded engine is not running")
        window = self._runner.n_ctx
        longest = max(map(self._runner.count_tokens, request.inputs), default=0)
        if longest > window:
            raise ContextWindowExceeded(
                f"This model's maximum context length is {window} tokens, however you "
                f"requested {longest} tokens in one input.",
                param="input",
            )
        return await asyncio.to_thread(self._runner.embed, request)

    def step(self) -> bool:
        """One engine step: schedule, run one batch, hand over what it produced.

        Blocks until there is work; returns False once the engine stops and nothing is left.
        """
        plan = self._schedule()
        if plan is None:
            return False
        try:
            self._execute(plan)
        finally:
            self._outbox.flush()
        return True

    def _execute(self, plan: Plan) -> None:
        started = time.monotonic()
        try:
            sampled = self._run(plan)
        except Interrupted:  # higher-tier work arrived: schedule again, it goes first
            with self._lock:
                self._counters.record_interrupted(time.monotonic() - started)
            return
        except Exception as error:  # every failure ends the batch's sequences
            self._fail_batch(plan, error)
            return
        with self._lock:
            self._counters.record(plan, time.monotonic() - started)
        for feed, token in zip(plan.feeds, sampled, strict=True):
            feed.sequence.computed += feed.count
            if token is not None:
                self._advance(feed.sequence, token)

    def _work(self) -> None:
        while self.step():
            pass

    def _schedule(self) -> Plan | None:
        with self._lock:
            while True:
                for sequence in self._scheduler.running:
                    if sequence.job.cancelled.is_set():
                        self._finish(sequence, "stop")
                plan = self._scheduler.schedule()
                if plan.feeds:
                    self._runner.resume()
                    self._batch_only_step = all(feed.sequence.rank == BATCH_RANK
                                                for feed in plan.feeds)
                    return plan
                self._outbox.flush()  # the cancelled sequences' ends
                if self._stopping and not self._scheduler.running:
                    return None
                self._lock.wait()

    def _run(self, plan: Plan) -> list[int | None]:
        runner = self._runner
        for slot in plan.preempted:
            if not self._scheduler.keep_prefixes:  # else its KV stays for the next prompt
                runner.drop_slot(slot)
            self._open_slots.pop(slot, None)
        for source, target in plan.copies:  # before any slot is trimmed for its new sequence
            runner.copy_slot(source, target)
        feeds = []
        for feed in plan.feeds:
            sequence = feed.sequence
            assert sequence.slot is not None
            if self._open_slots.get(sequence.slot) is not sequence:
                request = sequence.job.request
                assert not isinstance(request, EmbeddingRequest)
                runner.open_slot(sequence.slot, request.sampling, keep=sequence.computed)
                self._open_slots[sequence.slot] = sequence
            start = sequence.computed
            feeds.append(SlotFeed(sequence.slot, sequence.tokens[start:start + feed.count], start,
                                  feed.samples))
        return runner.decode(feeds)

    def _advance(self, sequence: Sequence, token: int) -> None:
        """Take ``token`` as ``sequence``'s next: emit its text, or end the sequence."""
        if self._runner.is_end(token):
            self._end(sequence, "stop")
            return
        sequence.tokens.append(token)
        stream = self._streams[sequence]
        if delta := stream.text.feed(self._runner.piece(token)):
            self._outbox.put(stream.channel, TokenDelta(delta))
        if stream.text.stopped:
            self._end(sequence, "stop")
        elif sequence.generated >= sequence.limit:
            self._end(sequence, "length")

    def _end(self, sequence: Sequence, reason: str) -> None:
        with self._lock:
            self._finish(sequence, reason)

    def _finish(self, sequence: Sequence, outcome: str | _Failed) -> None:
        """Free ``sequence``'s slot now and send its ``Finished`` with the finish reason
        ``outcome``, or its failure (the caller holds the lock)."""
        slot = sequence.slot
        self._scheduler.finish(sequence)
        if slot is not None and self._open_slots.get(slot) is sequence:
            del self._open_slots[slot]
            if not self._scheduler.keep_prefixes:  # else its KV stays for the next prompt
                self._runner.drop_slot(slot)
        stream = self._forget(sequence)
        if isinstance(outcome, _Failed):
            self._outbox.put(stream.channel, outcome)
            return
        if not sequence.job.cancelled.is_set() and (rest := stream.text.flush()):
            self._outbox.put(stream.channel, TokenDelta(rest))
        usage = Usage(sequence.prompt_length, sequence.generated, cached_tokens=sequence.reused)
        self._outbox.put(stream.channel, Finished(outcome, usage))

    def _fail_batch(self, plan: Plan, error: Exception) -> None:
        if isinstance(error, SwitchgearError):
            failure = _Failed(error)
        else:
            _log.error("the embedded engine failed a step", exc_info=error)
            failure = _Failed(internal_error())
        with self._lock:
            for feed in plan.feeds:
                self._finish(feed.sequence, failure)

    def _forget(self, sequence: Sequence) -> _Stream:
        self._sequences.pop(sequence.job, None)
        return self._streams.pop(sequence)

    def _withdraw(self, job: Job) -> None:
        job.cancel()
        with self._lock:
            sequence = self._sequences.get(job)
            if sequence is not None and self._scheduler.cancel(sequence):
                self._forget(sequence)
            self._lock.notify()

    def _limit(self, request: ChatRequest | CompletionRequest, prompt_tokens: int) -> int:
        """The most tokens the sequence may generate; refuses one that can never fit."""
        window = self.window
        prompt_param = "messages" if isinstance(request, ChatRequest) else "prompt"
        if prompt_tokens >= window:
            raise ContextWindowExceeded(
                f"This model's maximum context length is {window} tokens. However, your "
                f"{prompt_param} resulted in {prompt_tokens} tokens.",
                param=prompt_param,
            )
        max_tokens = request.sampling.max_tokens
        if max_tokens is None:
            return window - prompt_tokens
        if prompt_tokens + max_tokens > window:
            raise ContextWindowExceeded(
                f"This model's maximum context length is {window} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {prompt_param}, "
                f"{max_tokens} for the completion). Please reduce the length of the "
                f"{prompt_param} or of max_tokens.",
                param="max_tokens",
            )
        return max_tokens
