"""The simulator's HTTP face: an OpenAI-compatible model server with faults, metrics and an admin API.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (both plain or SSE-streamed),
``POST /v1/embeddings``, ``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` and
``GET``/``POST``/``PUT /admin/faults`` (read, patch, replace the faults). With an API key set,
``/v1/*`` requests need ``Authorization: Bearer <key>``. aiohttp serves it because a real
connection reset needs the transport.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import random
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from switchgear.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    SwitchgearError,
    internal_error,
)
from switchgear.exchange import Operation
from switchgear.simulator.connection import cut_connection, reset_connection
from switchgear.simulator.faults import Failure, FaultDraw, Faults
from switchgear.simulator.metrics import SimulatorMetrics
from switchgear.simulator.model import Generation, SimulatedModel
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.requests import Body

#: A cut stream ends after this many chunks (the role chunk and one piece of text).
CHUNKS_BEFORE_DISCONNECT = 2
#: Seconds ``stop`` waits for requests in flight before closing their connections.
SHUTDOWN_SECONDS = 2.0
#: The outcome of the request being handled when it has no HTTP status (reset, hang, disconnect).
_FAULT_OUTCOME: ContextVar[str | None] = ContextVar("switchgear_sim_fault_outcome", default=None)

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Unauthorized(SwitchgearError):
    """The request lacks the API key the simulator was started with."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ConnectionDropped(Exception):
    """The handler dropped the connection on purpose; there is nobody left to answer."""


class SimulatorState:
    """What one simulator holds: the model, the current faults and their RNG, metrics, the key."""

    def __init__(self, model: SimulatedModel, faults: Faults, api_key: str | None) -> None:
        self.model = model
        self.faults = faults
        self.api_key = api_key
        self.fault_rng = random.Random(model.options.seed)
        self.metrics = SimulatorMetrics(model)


STATE = web.AppKey("switchgear_sim_state", SimulatorState)


class InferenceEndpoints:
    """The ``/v1`` endpoints, with the faults applied to every inference request."""

    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        return await self._generate(request, Operation.CHAT)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/completions``."""
        return await self._generate(request, Operation.COMPLETIONS)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/embeddings``."""
        embedding = self._state.model.plan_embedding(await _json_body(request))
        await self._suffer_faults(request, stream=False)
        return _json_response(await self._state.model.embed(embedding))

    async def models(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models``."""
        return _json_response(self._state.model.models())

    async def _generate(self, request: web.Request, operation: Operation) -> web.StreamResponse:
        generation = self._state.model.plan_generation(operation, await _json_body(request))
        draw = await self._suffer_faults(request, stream=generation.stream)
        cut = draw.failure is Failure.DISCONNECT
        generation = generation.degraded(self._state.faults.output_factor, draw.refuse)
        if generation.stream:
            return await self._stream(request, generation, cut)
        return _json_response(await self._state.model.complete(generation))

    async def _suffer_faults(self, request: web.Request, stream: bool) -> FaultDraw:
        """Apply this request's delay and failure; the draw says whether its stream is to be cut
        after a few chunks (a disconnect) or its answer is a refusal."""
        faults = self._state.faults
        draw = faults.draw(self._state.fault_rng, stream)
        if draw.delay_seconds:
            await asyncio.sleep(draw.delay_seconds)
        if draw.failure is None:
            return draw
        if draw.failure is Failure.ERROR:
            raise faults.injected_error()
        _FAULT_OUTCOME.set(draw.failure.value)
        if draw.failure is Failure.RESET:
            reset_connection(request)
            raise ConnectionDropped
        if draw.failure is Failure.HANG:
            # Never answer; the handler is cancelled when the client closes the connection.
            await asyncio.get_running_loop().create_future()
        return draw

    async def _stream(
        self, request: web.Request, generation: Generation, cut: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        sent = 0
        async with aclosing(self._state.model.stream(generation)) as chunks:
            async for chunk in chunks:
                if cut and sent == CHUNKS_BEFORE_DISCONNECT:
                    break
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                sent += 1
        if cut:
            cut_connection(request)
            return response
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


class OperatorEndpoints:
    """Health, metrics and the faults admin API."""

    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        """``GET /healthz``: always ok while the server runs."""
        return _json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        """``GET /metrics``: Prometheus text."""
        return web.Response(body=self._state.metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/faults``: the faults in force."""
        return _json_response(self._state.faults.model_dump())

    async def patch_faults(self, request: web.Request) -> web.StreamResponse:
        """``POST /admin/faults``: change the named fields, keep the others."""
        self._state.faults = self._state.faults.patched(await _json_body(request))
        return await self.get_faults(request)

    async def replace_faults(self, request: web.Request) -> web.StreamResponse:
        """``PUT /admin/faults``: the body becomes the faults; unnamed fields take defaults."""
        self._state.faults = Faults.of(await _json_body(request))
        return await self.get_faults(request)


def build_simulator_app(
    options: ModelOptions, faults: Faults | None = None, api_key: str | None = None
) -> web.Application:
    """The simulator as an aiohttp application (serve it with handler cancellation on)."""
    state = SimulatorState(SimulatedModel(options), faults or Faults(), api_key)
    app = web.Application(middlewares=[_openai_errors, _require_api_key])
    app[STATE] = state
    inference = InferenceEndpoints(state)
    operator = OperatorEndpoints(state)
    app.router.add_post("/v1/chat/completions", inference.chat)
    app.router.add_post("/v1/completions", inference.completions)
    app.router.add_post("/v1/embeddings", inference.embeddings)
    app.router.add_get("/v1/models", inference.models)
    app.router.add_get("/healthz", operator.healthz)
    app.router.add_get("/metrics", operator.metrics)
    app.router.add_get("/admin/faults", operator.get_faults)
    app.router.add_post("/admin/faults", operator.patch_faults)
    app.router.add_put("/admin/faults", operator.replace_faults)
    return app


@dataclass(slots=True)
class RunningSimulator:
    """A simulator serving on a loopback port inside the current event loop."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        """The server's root URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``) to give a client."""
        return f"{self.url}/v1"

    @property
    def state(self) -> SimulatorState:
        """The live model, faults and metrics."""
        return self.runner.app[STATE]

    async def stop(self) -> None:
        """Stop serving; requests still running after a short grace period are cut off."""
        await self.runner.cleanup()


async def start_simulator(
    options: ModelOptions,
    faults: Faults | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
) -> RunningSimulator:
    """Start serving in the running event loop; port 0 picks a free port."""
    runner = web.AppRunner(
        build_simulator_app(options, faults, api_key),
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_SECONDS,
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    return RunningSimulator(runner, host, bound_port)


def serve_simulator(
    options: ModelOptions,
    faults: Faults | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
) -> None:
    """Serve until interrupted (blocking)."""
    web.run_app(
        build_simulator_app(options, faults, api_key),
        host=host,
        port=port,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_SECONDS,
        access_log=None,
        print=None,
    )


@web.middleware
async def _openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer errors in OpenAI's shape and count every ``/v1`` request by outcome."""
    outcome = "client_closed"  # what is left when the handler is cancelled or its write fails
    reset_outcome = _FAULT_OUTCOME.set(None)
    try:
        response = await handler(request)
        outcome = str(response.status)
        return response
    except (ConnectionDropped, ConnectionError):
        return web.Response()  # never sent: aiohttp finds the transport closed
    except SwitchgearError as error:
        outcome = str(error.status)
        return _error_response(error)
    except web.HTTPException as error:
        mapped = _mapped_http_error(request, error)
        outcome = str(mapped.status)
        return _error_response(mapped)
    except Exception:
        logger.exception("simulator: unexpected error answering %s %s",
                         request.method, request.path)
        outcome = "500"
        return _error_response(internal_error())
    finally:
        if request.path.startswith("/v1/"):
            request.app[STATE].metrics.count(_FAULT_OUTCOME.get() or outcome)
        _FAULT_OUTCOME.reset(reset_outcome)


@web.middleware
async def _require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse ``/v1`` requests without the configured bearer key."""
    key = request.app[STATE].api_key
    if key and request.path.startswith("/v1/"):
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {key}".encode()):
            raise Unauthorized("Incorrect API key provided.")
    return await handler(request)


def _mapped_http_error(request: web.Request, error: web.HTTPException) -> SwitchgearError:
    if isinstance(error, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"Method {request.method} is not allowed for {request.path}.")
    if isinstance(error, web.HTTPNotFound):
        return NotFound(f"Unknown request URL: {request.method} {request.path}.")
    mapped = SwitchgearError(error.reason)
    mapped.status = error.status
    return mapped


async def _json_body(request: web.Request) -> Body:
    try:
        body: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _json_response(body: Body, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error_response(error: SwitchgearError) -> web.Response:
    response = _json_response(error.body(), error.status)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(math.ceil(error.retry_after))
    return response
