"""The embedded engine: one worker thread that repeats step() = schedule → run → update.

The scheduler decides which job runs next, the runner executes it; the engine owns the thread
between them and the hand-over of events to the event loop. Tokens cross from the worker thread
to the awaiting coroutine through ``loop.call_soon_threadsafe`` into a per-job ``asyncio.Queue``,
so the event loop never waits on the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from switchgear.engine.job import (
    ChatRequest,
    EmbeddingRequest,
    EngineEvent,
    EngineRequest,
    Finished,
    Job,
)
from switchgear.engine.runner import Runner
from switchgear.engine.scheduler import Scheduler
from switchgear.errors import (
    ContextWindowExceeded,
    SwitchgearError,
    UpstreamConnectError,
    internal_error,
)

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Failed:
    """A job ended with an error; the coroutine awaiting it raises ``error``."""

    error: SwitchgearError


class _EventChannel:
    """Carries one job's events from the worker thread to the coroutine awaiting them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[EngineEvent | _Failed] = asyncio.Queue()

    def put(self, event: EngineEvent | _Failed) -> None:
        """Hand ``event`` to the event loop (callable from any thread)."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def get(self) -> EngineEvent | _Failed:
        """The next event, once it has arrived."""
        return await self._queue.get()


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


class Engine:
    """Runs jobs one at a time on a worker thread, in the order its scheduler decides.

    ``submit`` is the only way in; it checks the job fits the context window and returns the
    job's events: text deltas, then one ``Finished``.
    """

    def __init__(self, scheduler: Scheduler, runner: Runner) -> None:
        self._scheduler = scheduler
        self._runner = runner
        self._work_arrived = threading.Condition()
        self._channels: dict[Job, _EventChannel] = {}
        self._running: Job | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def queue_depth(self) -> int:
        """Jobs waiting to run (the running job not included)."""
        with self._work_arrived:
            return len(self._scheduler)

    @property
    def busy(self) -> bool:
        """Whether a job is running now."""
        return self._running is not None

    @property
    def alive(self) -> bool:
        """Whether the engine has started, is not stopping, and its worker thread runs."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._work, name="switchgear-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish the running job, fail the waiting ones with a retryable error, end the thread."""
        with self._work_arrived:
            self._stopping = True
            abandoned = [self._channels.pop(job) for job in self._scheduler.drain()]
            self._work_arrived.notify_all()
        for channel in abandoned:
            channel.put(_Failed(UpstreamConnectError("the embedded engine stopped")))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def submit(self, job: Job) -> JobEvents:
        """Queue ``job``; return its events. Raises ``ContextWindowExceeded`` when it cannot fit.

        Closing the events before the end (the client went away) cancels the job.
        """
        if not self.alive:
            raise UpstreamConnectError("the embedded engine is not running")
        await asyncio.to_thread(self._check_fits, job.request)
        channel = _EventChannel(asyncio.get_running_loop())
        with self._work_arrived:
            if self._stopping:
                raise UpstreamConnectError("the embedded engine is stopping")
            self._channels[job] = channel
            self._scheduler.add(job)
            self._work_arrived.notify()
        return JobEvents(job, channel, self._withdraw)

    def step(self) -> bool:
        """One engine step: schedule a job, run it, hand over its outcome.

        Blocks until a job waits; returns False once the engine stops and nothing is left.
        """
        scheduled = self._schedule()
        if scheduled is None:
            return False
        job, channel = scheduled
        outcome = self._run(job, channel)
        self._update(job, channel, outcome)
        return True

    def _work(self) -> None:
        while self.step():
            pass

    def _schedule(self) -> tuple[Job, _EventChannel] | None:
        with self._work_arrived:
            while (job := self._scheduler.next()) is None:
                if self._stopping:
                    return None
                self._work_arrived.wait()
            self._running = job
            return job, self._channels[job]

    def _run(self, job: Job, channel: _EventChannel) -> Finished | _Failed:
        try:
            return self._runner.run(job, channel.put)
        except SwitchgearError as error:
            return _Failed(error)
        except Exception:
            _log.exception("the embedded engine failed a job")
            return _Failed(internal_error())

    def _update(self, job: Job, channel: _EventChannel, outcome: Finished | _Failed) -> None:
        channel.put(outcome)
        with self._work_arrived:
            self._running = None
            self._channels.pop(job, None)

    def _withdraw(self, job: Job) -> None:
        with self._work_arrived:
            self._scheduler.cancel(job)
            self._channels.pop(job, None)

    def _check_fits(self, request: EngineRequest) -> None:
        n_ctx = self._runner.n_ctx
        if isinstance(request, EmbeddingRequest):
            longest = max(map(self._runner.count_tokens, request.inputs), default=0)
            if longest > n_ctx:
                raise ContextWindowExceeded(
                    f"This model's maximum context length is {n_ctx} tokens, however you "
                    f"requested {longest} tokens in one input.",
                    param="input",
                )
            return
        prompt_tokens = self._runner.count_prompt_tokens(request)
        prompt_param = "messages" if isinstance(request, ChatRequest) else "prompt"
        if prompt_tokens >= n_ctx:
            raise ContextWindowExceeded(
                f"This model's maximum context length is {n_ctx} tokens. However, your "
                f"{prompt_param} resulted in {prompt_tokens} tokens.",
                param=prompt_param,
            )
        max_tokens = request.sampling.max_tokens
        if max_tokens is not None and prompt_tokens + max_tokens > n_ctx:
            raise ContextWindowExceeded(
                f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {prompt_param}, "
                f"{max_tokens} for the completion). Please reduce the length of the "
                f"{prompt_param} or of max_tokens.",
                param="max_tokens",
            )
