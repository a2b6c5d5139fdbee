"""The ``simulated`` backend: a deployment answered in-process by a SimulatedModel (no network)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from switchgear.backends.base import Body
from switchgear.config import DeploymentConfig
from switchgear.errors import UpstreamConnectError
from switchgear.exchange import Operation
from switchgear.simulator.model import SimulatedModel
from switchgear.simulator.options import ModelOptions


class SimulatedBackend:
    """A Backend with a simulated model server's timing, queueing and answers, in this process.

    Configured by the deployment's ``simulated`` section; the model's name is the deployment's
    ``model`` (or its name) and its context window the deployment's ``context_window``.
    """

    def __init__(self, config: DeploymentConfig) -> None:
        self.name = config.name
        self._model = SimulatedModel(
            ModelOptions.of_deployment(
                config.simulated, config.model or config.name, config.context_window
            )
        )
        self._closed = False

    @property
    def model(self) -> SimulatedModel:
        """The simulated model behind this backend (its live counters)."""
        return self._model

    async def start(self) -> None:
        """Open for requests (there is nothing to acquire)."""
        self._closed = False

    async def complete(self, operation: Operation, body: Body, tier: str = "standard") -> Body:
        """Answer one non-streaming request after the simulated time."""
        self._refuse_when_closed()
        if operation is Operation.EMBEDDINGS:
            return await self._model.embed(self._model.plan_embedding(body))
        return await self._model.complete(self._model.plan_generation(operation, body))

    async def stream(
        self, operation: Operation, body: Body, tier: str = "standard"
    ) -> AsyncGenerator[Body, None]:
        """Answer one streaming request chunk by chunk, at the simulated pace."""
        self._refuse_when_closed()
        generation = self._model.plan_generation(operation, {**body, "stream": True})
        async with aclosing(self._model.stream(generation)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def check(self) -> None:
        """Raise UpstreamConnectError once closed; a simulated server is otherwise always up."""
        self._refuse_when_closed()

    async def aclose(self) -> None:
        """Refuse new requests and return once those in flight are answered."""
        self._closed = True
        await self._model.wait_idle()

    def _refuse_when_closed(self) -> None:
        if self._closed:
            raise UpstreamConnectError(f"deployment {self.name!r} is closed")
