"""The Route stage: try the router's plan, retrying what is retryable within the retry budget,
then the alias's fallbacks; never switch deployments after the first streamed byte. An answer's
usage is read here, once, as it arrives from the deployment.

A deployment whose ``max_concurrency`` holds across the fleet (``FleetDeployment``) has its
place taken at the start of each attempt, waiting up to the queue timeout on the fleet's
semaphore (a hedge does not wait); the place is given back however the attempt ends."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from switchgear.backends.base import Body
from switchgear.config import RetryConfig
from switchgear.errors import (
    ContextWindowExceeded,
    Overloaded,
    SwitchgearError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from switchgear.exchange import Attempt, Exchange
from switchgear.pipeline import Reply, close_stream
from switchgear.routing.budget import RetryBudget
from switchgear.routing.deployment import Deployment, FleetDeployment
from switchgear.routing.router import Router
from switchgear.sections.tiers import TIERS
from switchgear.telemetry.tracing import Tracer

T = TypeVar("T")

#: An upstream error with this code means "too long for this model": go to a fallback alias.
CONTEXT_CODE = ContextWindowExceeded.code
#: Characters per token when guessing whether a prompt fits a deployment's context window.
CHARS_PER_TOKEN = 4


def estimated_tokens(exchange: Exchange) -> int:
    """A cheap upper-side guess of prompt plus output tokens, from the body's text."""
    body = exchange.body
    text = body.get("messages") or body.get("prompt") or body.get("input") or ""
    return len(str(text)) // CHARS_PER_TOKEN + int(body.get("max_tokens") or 0)


def take_usage(exchange: Exchange, body: Body) -> None:
    """Copy the token counts of an OpenAI ``usage`` object, if the body has one (the prompt
    cache's writes as ``prompt_tokens_details.cache_write_tokens``, as the anthropic backend
    reports them)."""
    usage: Any = body.get("usage")
    if not usage:
        return
    exchange.usage.prompt_tokens = usage.get("prompt_tokens") or 0
    exchange.usage.completion_tokens = usage.get("completion_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    exchange.usage.cached_tokens = details.get("cached_tokens") or 0
    exchange.usage.cache_write_tokens = details.get("cache_write_tokens") or 0


class Route:
    """Tries deployments in the router's order and the alias's fallbacks after them."""

    def __init__(self, router: Router, retry: RetryConfig, budget: RetryBudget,
                 queue_timeout: float, tracer: Tracer) -> None:
        self.router = router
        self.tracer = tracer
        self.retry = retry
        self.budget = budget
        self.queue_timeout = queue_timeout
        self._random = random.Random()

    async def __call__(self, exchange: Exchange) -> Reply:
        exchange.routed = time.time()
        self.budget.on_request()
        try:
            return await self._route(exchange)
        finally:
            self.budget.on_routed()

    async def _route(self, exchange: Exchange) -> Reply:
        error: SwitchgearError | None = None
        try:
            if exchange.resolved_alias is None:
                raise RuntimeError("the request reached the Route stage unresolved")
            chain = self.router.chain(exchange.resolved_alias)
            for position, alias in enumerate(chain):
                for deployment in self._tries(alias, fallbacks_after=len(chain) - position - 1):
                    if len(exchange.attempts) >= self.retry.max_attempts:
                        raise error or _unavailable(alias)
                    window = deployment.config.context_window
                    if window is not None and estimated_tokens(exchange) > window:
                        error = ContextWindowExceeded(
                            f"The request is too long for '{alias}' ({window} tokens).",
                            param="messages")
                        break
                    if not deployment.has_room and not await self._room(exchange, deployment):
                        error = Overloaded(f"'{alias}' is at its concurrency limit.", retry_after=1)
                        continue
                    if not deployment.health.available(time.monotonic()):
                        continue  # ejected meanwhile: spend no retry on it
                    if exchange.attempts:
                        if not self.budget.try_retry():
                            raise error or _unavailable(alias)
                        await asyncio.sleep(self._backoff(len(exchange.attempts)))
                    if not deployment.health.admit(time.monotonic()):
                        continue
                    try:
                        return await self._try(exchange, deployment, alias)
                    except SwitchgearError as failure:
                        error = failure
                        if failure.code == CONTEXT_CODE:
                            break  # too long for this alias: its fallbacks may take it
                        if not failure.retryable:
                            raise
                        if isinstance(failure, UpstreamTimeout) and self.router.lone(alias):
                            break  # waiting on the same silent deployment again helps nobody
            raise error or _unavailable(exchange.model)
        finally:
            # A failure kept in this frame would hold it, and the Exchange, in a reference cycle
            # through its traceback: freed by the garbage collector alone, one per failed try.
            error = None

    async def _try(self, exchange: Exchange, deployment: Deployment, alias: str) -> Reply:
        """An attempt on ``deployment``, hedged when the alias asks for it; the answer, with the
        Exchange noting who gave it."""
        delay = self.router.hedge_delay(alias)
        if delay is None:
            reply = await self._attempt(exchange, deployment, self.queue_timeout)
        else:
            reply, deployment = await self._hedged(exchange, deployment, alias, delay)
        exchange.deployment = deployment.name
        exchange.served_alias = deployment.alias
        if isinstance(reply, dict):
            take_usage(exchange, reply)
        return reply

    async def _hedged(self, exchange: Exchange, first: Deployment, alias: str, delay: float
                      ) -> tuple[Reply, Deployment]:
        """``first``'s attempt and, when it has no answer (or first token) after ``delay``
        seconds, another on the next deployment that can take one: the first answer wins, the
        other is cancelled (its attempt recorded as ``cancelled``); a failure waits for the
        other attempt, and fails when both have."""
        racing = {asyncio.ensure_future(self._attempt(exchange, first, self.queue_timeout)): first}
        try:
            done, _ = await asyncio.wait(racing, timeout=delay)
            second = None if done else self._hedge_target(exchange, alias, first)
            if second is not None:
                racing[asyncio.ensure_future(self._attempt(exchange, second))] = second
            failure: BaseException | None = None
            while racing:
                done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    deployment = racing.pop(task)
                    failure = task.exception()
                    if failure is None:
                        return task.result(), deployment
            assert failure is not None  # every attempt ended, none with an answer
            raise failure
        finally:
            await _abandon(racing)

    def _hedge_target(self, exchange: Exchange, alias: str, first: Deployment
                      ) -> Deployment | None:
        """Where a hedge goes: the next deployment of the alias's plan with room, if another
        attempt is allowed (``max_attempts``, the retry budget)."""
        if len(exchange.attempts) >= self.retry.max_attempts:
            return None
        now = time.monotonic()
        for deployment in self.router.plan(alias):
            if deployment is not first and deployment.has_room:
                if self.budget.try_retry() and deployment.health.admit(now):
                    return deployment
                return None
        return None

    def _tries(self, alias: str, fallbacks_after: int) -> list[Deployment]:
        """The deployments to try for ``alias``, in order: its plan; or, when the alias has a
        single deployment, that one up to ``max_attempts`` times less an attempt for each of
        the ``fallbacks_after`` it in the chain, so a dead deployment's retries never use up
        the attempts its fallbacks need (each retry within the budget, after a jittered
        backoff)."""
        plan = self._by_room(self.router.plan(alias))
        if self.router.lone(alias):
            return plan * max(1, self.retry.max_attempts - fallbacks_after)
        return plan

    def _by_room(self, plan: list[Deployment]) -> list[Deployment]:
        """Deployments with a free slot first: a full one is waited for only as a last resort."""
        if len(plan) < 2:
            return plan
        return [d for d in plan if d.has_room] + [d for d in plan if not d.has_room]

    async def _room(self, exchange: Exchange, deployment: Deployment) -> bool:
        """Whether ``deployment`` has a free slot, waiting for one up to the queue timeout;
        the time waited counts as the request's queue wait."""
        if deployment.has_room:
            return True
        started = time.time()
        try:
            return await deployment.wait_for_room(self.queue_timeout)
        finally:
            exchange.waited(time.time() - started)

    def _backoff(self, retry: int) -> float:
        """Full-jitter exponential backoff before retry number ``retry``."""
        cap = min(self.retry.backoff_max_ms, self.retry.backoff_base_ms * 2 ** (retry - 1))
        return self._random.uniform(0, cap) / 1000

    async def _take_place(self, exchange: Exchange, deployment: FleetDeployment, wait: float
                          ) -> None:
        """Take ``deployment``'s fleet place for an attempt, waiting up to ``wait`` seconds
        (counted as queue wait); Overloaded when none came free, StateUnavailable when the
        shared state cannot answer (a probe the health check granted is handed back)."""
        started = time.time()
        try:
            taken = await deployment.take_place(wait)
        except BaseException:
            deployment.health.released()
            raise
        finally:
            exchange.waited(time.time() - started)
        if not taken:
            deployment.health.released()
            raise Overloaded(f"'{deployment.alias}' is at its concurrency limit across the "
                             "fleet.", retry_after=1)

    async def _attempt(self, exchange: Exchange, deployment: Deployment, wait: float = 0.0
                       ) -> Reply:
        """One attempt on ``deployment``; a fleet deployment's place is waited for up to
        ``wait`` seconds first."""
        body = {**exchange.body, "model": deployment.upstream_model}
        tier = exchange.priority if exchange.priority in TIERS else "standard"
        if exchange.stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        if isinstance(deployment, FleetDeployment):
            await self._take_place(exchange, deployment, wait)
        attempt = Attempt(deployment.name, started=time.time(), model=body["model"],
                          span_id=self.tracer.attempt(exchange))
        exchange.attempts.append(attempt)
        timeouts = deployment.config.timeouts
        started = time.monotonic()
        chunks: AsyncIterator[Body] | None = None
        deployment.acquire()
        try:
            if exchange.stream:
                chunks = deployment.backend.stream(exchange.operation, body, tier)
                first = await _within(anext(chunks), timeouts.ttft, deployment.name)
                ttft = time.monotonic() - started
                reply: Reply = self._relay(exchange, first, chunks, deployment, attempt, started,
                                           ttft)
            else:
                reply = await _within(deployment.backend.complete(exchange.operation, body, tier),
                                      timeouts.total, deployment.name)
                now = time.monotonic()
                ttft = now - started
                _succeeded(deployment, attempt, ttft, ttft, now)
                deployment.release()
        except StopAsyncIteration:
            failure = UpstreamProtocolError(f"Deployment '{deployment.name}' ended the stream "
                                            "before sending anything.")
            _failed(deployment, attempt, failure)
            deployment.release()
            raise failure from None
        except SwitchgearError as failure:
            _failed(deployment, attempt, failure)
            deployment.release()
            if chunks is not None:
                await close_stream(chunks)
            raise
        except BaseException:  # cancelled: the client left, or a hedge won
            attempt.outcome = "cancelled"
            deployment.health.released()
            deployment.release()
            if chunks is not None:
                await close_stream(chunks)
            raise
        self.router.first_token(deployment.alias, ttft)
        return reply

    @staticmethod
    async def _relay(exchange: Exchange, first: Body, rest: AsyncIterator[Body],
                     deployment: Deployment, attempt: Attempt, started: float, ttft: float
                     ) -> AsyncIterator[Body]:
        """Yield the stream on, each chunk within the idle timeout and all within the total;
        the deployment's slot and health are settled however the stream ends. The usage rides
        on the last chunk (``include_usage`` was asked for): it is read once the stream ends,
        from the last chunk sent on, so no chunk is looked at for it."""
        timeouts = deployment.config.timeouts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + started + timeouts.total - time.monotonic()
        watch = _Watch(deployment.name, timeouts.idle, deadline)
        settled = False
        chunk = first
        try:
            yield chunk
            while True:
                watch.begin()
                try:
                    chunk = await anext(rest)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if watch.cut():
                        raise watch.timeout() from None
                    raise
                finally:
                    watch.end()
                yield chunk
            now = time.monotonic()
            _succeeded(deployment, attempt, ttft, now - started, now)
            settled = True
        except SwitchgearError as failure:
            _failed(deployment, attempt, failure)
            settled = True
            raise
        finally:
            watch.close()
            if not settled:  # the client left, or a hedge answered first
                attempt.outcome = "cancelled"
                deployment.health.released()
            deployment.release()
            await close_stream(rest)
            take_usage(exchange, chunk)


class _Watch:
    """The time limit of each wait for a stream's next chunk (``idle`` seconds, and never past
    ``deadline`` in the event loop's clock), kept by one timer per stream rather than a timeout
    per chunk: the timer, once due, cuts the wait in progress (cancels its task, as
    ``asyncio.timeout`` does) only if that wait is due too; set for an earlier one, it is set
    again for this one, and with no wait in progress it waits for the next. A wait's own due
    time is worked out only when the timer rings (a later wait is never due sooner)."""

    __slots__ = ("_began", "_cancelling", "_cut", "_deadline", "_idle", "_loop", "_name",
                 "_task", "_timer", "_timer_due")

    def __init__(self, name: str, idle: float, deadline: float) -> None:
        self._name = name
        self._idle = idle
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._began = 0.0
        self._cut = False

    def begin(self) -> None:
        """A wait begins, in the current task (one clock read)."""
        task = asyncio.current_task(self._loop)
        assert task is not None
        self._task, self._cancelling = task, task.cancelling()
        self._began = self._loop.time()
        if self._timer is None:
            self._set_timer()

    def end(self) -> None:
        """The wait is over (a cut it ignored is taken back)."""
        if self._cut and self._task is not None:
            self._cut = False
            self._task.uncancel()
        self._task = None

    def cut(self) -> bool:
        """After a CancelledError in the wait: whether the time limit caused it (then taken
        back) and nothing else cancelled the task."""
        if not self._cut or self._task is None:
            return False
        self._cut = False
        return self._task.uncancel() <= self._cancelling

    def timeout(self) -> UpstreamTimeout:
        """The error of a wait cut by its limit."""
        return _timed_out(self._name, min(self._idle, self._deadline - self._began))

    def close(self) -> None:
        """Unset the timer (the stream is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wait_due(self) -> float:
        """When the wait in progress (or the last one) is due."""
        began = self._began
        return max(began, min(began + self._idle, self._deadline))

    def _set_timer(self) -> None:
        self._timer_due = due = self._wait_due()
        self._timer = self._loop.call_at(due, self._due_now)

    def _due_now(self) -> None:
        self._timer = None
        if self._task is None:
            return  # between waits: the next one sets the timer
        if self._timer_due < self._wait_due():
            self._set_timer()  # set for an earlier wait
            return
        self._cut = True
        self._task.cancel()


async def _within(step: Awaitable[T], seconds: float, name: str) -> T:
    """Await ``step`` for at most ``seconds``; an UpstreamTimeout after that. What
    ``asyncio.timeout`` does (the task cancelled when due, the cancellation taken back), for
    one timer and no context manager."""
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    loop = asyncio.get_running_loop()
    timer = loop.call_later(seconds, expire) if seconds > 0 else loop.call_soon(expire)
    try:
        return await step
    except asyncio.CancelledError:
        if expired:
            expired = False
            if task.uncancel() <= cancelling:
                raise _timed_out(name, seconds) from None
        raise
    finally:
        timer.cancel()
        if expired:  # due as the step ended otherwise: the cancellation is taken back all the same
            task.uncancel()


def _timed_out(name: str, seconds: float) -> UpstreamTimeout:
    return UpstreamTimeout(f"Deployment '{name}' did not answer within {seconds:g}s.")


def _succeeded(deployment: Deployment, attempt: Attempt, ttft: float, total: float, now: float
               ) -> None:
    """Settle a successful attempt that ended at ``now`` (``time.monotonic()``)."""
    attempt.outcome = "ok"
    attempt.latency = total
    deployment.health.succeeded(ttft, total, now)


def _failed(deployment: Deployment, attempt: Attempt, failure: SwitchgearError) -> None:
    attempt.outcome, attempt.error = "error", failure.kind
    attempt.latency = time.time() - attempt.started
    if failure.retryable:  # the deployment's fault; a bad request or a too-long one is not
        deployment.health.failed(time.monotonic(), failure.kind, failure.retry_after)
    else:
        deployment.health.released()


async def _abandon(racing: dict[asyncio.Task[Reply], Deployment]) -> None:
    """Cancel the attempts still racing; a stream that answered too late is started (its first
    chunk is in hand) and closed, so that it settles its slot and closes its upstream."""
    for task in racing:
        task.cancel()
    for outcome in await asyncio.gather(*racing, return_exceptions=True):
        if not isinstance(outcome, (dict, BaseException)):
            await anext(outcome, None)
            await close_stream(outcome)


def _unavailable(alias: str) -> Overloaded:
    return Overloaded(f"No deployment of '{alias}' can take the request now; try again shortly.",
                      retry_after=1)

