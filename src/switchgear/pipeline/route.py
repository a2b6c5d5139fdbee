"""The Route stage: send the request to a deployment, and to another if the first fails early."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from switchgear.backends.base import Body
from switchgear.errors import Overloaded, SwitchgearError, UpstreamProtocolError
from switchgear.exchange import Attempt, Exchange
from switchgear.pipeline import Reply
from switchgear.routing.deployment import Deployment
from switchgear.routing.router import Router


class Route:
    """Tries the router's plan in order; a retryable failure before the first byte moves on."""

    def __init__(self, router: Router, max_attempts: int = 2) -> None:
        self.router = router
        self.max_attempts = max_attempts

    async def __call__(self, exchange: Exchange) -> Reply:
        candidates = [d for d in self.router.plan(exchange.model) if d.has_room]
        if not candidates:
            raise Overloaded(f"Every deployment of '{exchange.model}' is at its concurrency "
                             "limit; try again shortly.", retry_after=1)
        error: SwitchgearError | None = None
        for deployment in candidates[: self.max_attempts]:
            try:
                return await self._attempt(exchange, deployment)
            except SwitchgearError as failure:
                if not failure.retryable:
                    raise
                error = failure
        assert error is not None
        raise error

    async def _attempt(self, exchange: Exchange, deployment: Deployment) -> Reply:
        body = {**exchange.body, "model": deployment.upstream_model}
        if exchange.stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        attempt = Attempt(deployment.name, started=time.time())
        exchange.attempts.append(attempt)
        deployment.in_flight += 1
        try:
            if exchange.stream:
                chunks = deployment.backend.stream(exchange.operation, body)
                try:
                    first = await anext(chunks)
                except StopAsyncIteration:
                    raise UpstreamProtocolError("The model server ended the stream "
                                                "before sending anything.") from None
                reply: Reply = self._relay(first, chunks, deployment, attempt)
            else:
                reply = await deployment.backend.complete(exchange.operation, body)
                deployment.in_flight -= 1
                attempt.outcome = "ok"
                attempt.latency = time.time() - attempt.started
        except SwitchgearError as failure:
            deployment.in_flight -= 1
            attempt.outcome, attempt.error = "error", failure.kind
            attempt.latency = time.time() - attempt.started
            raise
        except BaseException:
            deployment.in_flight -= 1
            raise
        exchange.deployment = deployment.name
        return reply

    @staticmethod
    async def _relay(first: Body, rest: AsyncIterator[Body], deployment: Deployment,
                     attempt: Attempt) -> AsyncIterator[Body]:
        """Yield the stream on; the deployment's slot is released however the stream ends."""
        try:
            yield first
            async for chunk in rest:
                yield chunk
            attempt.outcome = "ok"
        except SwitchgearError as failure:
            attempt.outcome, attempt.error = "error", failure.kind
            raise
        finally:
            attempt.latency = time.time() - attempt.started
            deployment.in_flight -= 1
            aclose = getattr(rest, "aclose", None)
            if aclose is not None:
                await aclose()
