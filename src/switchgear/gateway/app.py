"""The gateway's ASGI application: the OpenAI surface, health, readiness and metrics.

Told to drain (gateway/server.py does on SIGTERM), it keeps serving, but /readyz answers 503
"draining" and every response carries ``Connection: close``, so load balancers and keep-alive
clients move to other replicas before this one stops listening.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from functools import partial
from itertools import chain
from typing import Any

import orjson

from switchgear.config import ConfigError
from switchgear.errors import (
    HeadersTooLarge,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    SwitchgearError,
    internal_error,
)
from switchgear.exchange import Exchange, Operation
from switchgear.gateway.admin import AdminAPI
from switchgear.gateway.audit_admin import AuditAdmin
from switchgear.gateway.batch_api import BatchAPI
from switchgear.gateway.batches_admin import BatchesAdmin
from switchgear.gateway.changes_admin import ChangesAdmin
from switchgear.gateway.config_admin import ConfigAdmin
from switchgear.gateway.http import (
    Departure,
    Message,
    Receive,
    Scope,
    Send,
    bearer_token,
    header,
    read_json,
    send_body,
    send_error,
    send_events,
    send_json,
    wants_no_cache,
)
from switchgear.gateway.inbound import ErrorShape, InboundAPI, StreamEncoder, openai_api
from switchgear.gateway.insight_admin import InsightAdmin
from switchgear.gateway.messages import MESSAGES, TokenCounting
from switchgear.gateway.openapi import openapi_spec
from switchgear.gateway.prompts_admin import PromptsAdmin
from switchgear.gateway.records_admin import RecordsAdmin
from switchgear.gateway.requests import RequestIds, attribute, make_exchange
from switchgear.gateway.responses import ResponsesAPI
from switchgear.gateway.state import AppState
from switchgear.gateway.ui import ConsoleFiles, load_assets
from switchgear.pipeline import Body, Handler, Reply, close_stream
from switchgear.pipeline.admit import identify
from switchgear.store.base import StoreUnavailable
from switchgear.store.redis import connect_redis
from switchgear.telemetry.metrics import CONTENT_TYPE
from switchgear.telemetry.tracing import TRACE_ID_HEADER, TRACEPARENT

log = logging.getLogger("switchgear.gateway")

Endpoint = Callable[[Scope, Receive, Send, str], Awaitable[None]]

#: How long /readyz waits for each dependency before calling it unready.
READY_TIMEOUT = 2.0
#: The header that ends a keep-alive connection once its response is sent (uvicorn closes it).
CONNECTION_CLOSE = (b"connection", b"close")


class GatewayApp:
    """ASGI entry point; the lifespan starts and stops the shared state."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        #: Set by ``drain``: not ready, and every connection closes after its response.
        self.draining = False
        state.metrics.draining.set_function(lambda: float(self.draining))
        self.request_ids = RequestIds()
        self.admin = AdminAPI(state)
        config = ConfigAdmin(self.admin, state.changes, self.admin.audit)
        prompts = PromptsAdmin(self.admin)
        records = RecordsAdmin(self.admin)
        insight = InsightAdmin(self.admin)
        console = ConsoleFiles(load_assets())
        self.responses = responses = ResponsesAPI(state, self.infer)
        self.batch_api = batch_api = BatchAPI(state)
        self.max_header_bytes = state.config.server.max_header_bytes
        self.routes: dict[str, dict[str, Endpoint]] = {
            "/v1/chat/completions": {"POST": partial(self.infer, openai_api(Operation.CHAT))},
            "/v1/completions": {"POST": partial(self.infer, openai_api(Operation.COMPLETIONS))},
            "/v1/embeddings": {"POST": partial(self.infer, openai_api(Operation.EMBEDDINGS))},
            "/v1/messages": {"POST": partial(self.infer, MESSAGES)},
            "/v1/messages/count_tokens": {"POST": TokenCounting(state).count_tokens},
            "/v1/responses": {"POST": responses.create},
            **batch_api.routes(),
            "/v1/models": {"GET": self.models},
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
            "/metrics": {"GET": self.metrics},
            "/admin/routing": {"GET": self.admin.routing},
            "/admin/slo": {"GET": self.admin.slo},
            "/admin/keys": {"GET": self.admin.list_keys, "POST": self.admin.create_key},
            "/admin/records": {"GET": records.records},
            "/admin/audit": {"GET": self.admin.audit_log},
            "/admin/audit/verify": {"GET": AuditAdmin(self.admin).verify},
            "/admin/latency": {"GET": self.admin.latency},
            "/admin/cache": {"GET": self.admin.cache, "DELETE": self.admin.purge_cache},
            "/admin/cost": {"GET": self.admin.cost},
            "/admin/cost/focus": {"GET": self.admin.cost_focus},
            "/admin/quality": {"GET": self.admin.quality},
            "/admin/config": {"GET": config.show},
            "/admin/config/diff": {"GET": config.diff},
            "/admin/config/history": {"GET": config.history},
            "/admin/config/changes": {"GET": config.list_changes, "POST": config.propose},
            "/admin/config/rollback": {"POST": config.rollback},
            "/admin/changes": {"GET": ChangesAdmin(self.admin).changes},
            "/admin/prompts": {"GET": prompts.list_prompts},
            "/admin/whoami": {"GET": insight.whoami},
            "/admin/overview": {"GET": insight.overview},
            "/admin/budgets": {"GET": insight.budgets},
            "/admin/scorecard": {"GET": insight.scorecard},
            "/admin/batches": {"GET": BatchesAdmin(self.admin).batches},
            "/openapi.json": {"GET": self.openapi},
            "/ui": {"GET": console.index},
        }
        self._openapi = orjson.dumps(openapi_spec())
        #: Paths whose errors, even those refused before the endpoint (405, 431), are in
        #: another API's shape than OpenAI's.
        self.error_shapes: dict[str, ErrorShape] = {
            "/v1/messages": MESSAGES.error, "/v1/messages/count_tokens": MESSAGES.error}
        #: Paths with an id at the end: (prefix, methods).
        self.prefixed: list[tuple[str, dict[str, Endpoint]]] = [
            ("/admin/keys/", {"DELETE": self.admin.revoke_key}),
            ("/admin/config/changes/", {"GET": config.get_change, "POST": config.act}),
            ("/admin/prompts/", {"GET": prompts.show}),
            ("/admin/records/", {"GET": records.record}),
            ("/ui/", {"GET": console.asset}),
            ("/v1/responses/", {"GET": responses.retrieve, "DELETE": responses.delete}),
            *batch_api.prefixed(),
        ]

    def drain(self) -> None:
        """From now on /readyz answers 503 "draining" and every response closes its connection;
        everything else is served as before. Safe to call from a signal handler."""
        self.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.draining:
                send = partial(_closing, send)
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Start the state on start-up; stop it (draining records) on shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.state.start()
                except Exception as error:
                    if isinstance(error, ConfigError):  # its words are the whole story
                        log.error("start-up failed: %s", error)
                    else:
                        log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.responses.drain()  # stored responses still being written
                await self.state.stop()
                writer = self.state.writer
                if not writer.pending:
                    log.info("records flushed (%d written)", writer.written)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch by path and method; 404 and 405 in OpenAI's shape."""
        request_id = self.request_ids.new()
        path = scope["path"].rstrip("/") or "/"
        methods = self.routes.get(path) or next(
            (table for prefix, table in self.prefixed if path.startswith(prefix)), None)
        shape = self.error_shapes.get(path)
        try:
            if sum(map(len, chain.from_iterable(scope["headers"]))) > self.max_header_bytes:
                raise HeadersTooLarge(f"The request headers are larger than the limit of "
                                      f"{self.max_header_bytes} bytes.")
            if methods is None:
                raise NotFound(f"Unknown path: {scope['path']}")
            endpoint = methods.get(scope["method"])
            if endpoint is None:
                raise MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; "
                                       f"use {', '.join(methods)}.")
            await endpoint(scope, receive, send, request_id)
        except SwitchgearError as error:  # refused before the endpoint started its answer
            await send_error(send, error, request_id, shape=shape)
        except StoreUnavailable as error:  # an endpoint that needs the store, while it is down
            log.warning("request %s: the store is unavailable: %s", request_id, error)
            await _send_failure(send, _store_down(), request_id, error, shape)
        except Exception as error:
            log.exception("request %s failed", request_id)
            await _send_failure(send, internal_error(), request_id, error, shape)

    async def infer(self, api: InboundAPI, scope: Scope, receive: Receive, send: Send,
                    request_id: str) -> None:
        """An inference call in ``api``'s words: authenticate, translate the body to OpenAI's,
        run the pipeline, answer (JSON or events) and fail in ``api``'s shape."""
        state = self.state
        received = time.time()
        traceparent = header(scope, TRACEPARENT)
        try:
            # Authenticate first: without a good key the body is never read, parsed or checked.
            key = await state.authenticator.caller(api.credential(scope))
            body = await read_json(scope, receive, state.config.server.max_body_bytes)
            exchange = make_exchange(api.operation, await api.parse(body, key), request_id)
        except SwitchgearError as error:
            refused = self._record_refusal(api, request_id, received, traceparent, error)
            await send_error(send, error, request_id, refused.response_headers, api.error)
            return
        exchange.received = received
        exchange.api = api.name
        state.tracer.begin(exchange, traceparent)
        attribute(exchange, header(scope, b"x-switchgear-feature"),
                  header(scope, b"x-switchgear-priority"), wants_no_cache(scope))
        try:
            identify(exchange, key)
        except SwitchgearError as error:
            state.recorder.fail(exchange, error)
            await send_error(send, error, request_id, _trace_header(exchange), api.error)
            return
        serving = state.serving  # one config version serves the whole request
        exchange.config_version = serving.version
        serving.enter()
        try:
            await self._serve(api, serving.pipeline, exchange, Departure(scope, receive), send,
                              request_id)
        finally:
            serving.leave()

    async def _serve(self, api: InboundAPI, pipeline: Handler, exchange: Exchange,
                     departure: Departure, send: Send, request_id: str) -> None:
        """Run ``exchange`` through ``pipeline`` and send the answer, as JSON or events, while
        ``departure`` watches for the client leaving."""
        state = self.state
        state.metrics.in_flight.inc()
        try:
            try:
                reply: Reply | bytes | None = await _answer(pipeline, exchange, departure)
                if isinstance(reply, dict):
                    reply = await api.reply(exchange, reply)
            except SwitchgearError as error:
                state.metrics.in_flight.dec()
                await send_error(send, error, request_id, _trace_header(exchange), api.error)
                return
            except Exception:
                state.metrics.in_flight.dec()
                log.exception("request %s failed", request_id)
                await send_error(send, internal_error(), request_id, _trace_header(exchange),
                                 api.error)
                return
            if reply is None:  # the client left; the Record stage logged a 499
                state.metrics.in_flight.dec()
                return
            if isinstance(reply, dict | bytes):
                state.metrics.in_flight.dec()
                await send_json(send, 200, reply, request_id, exchange.response_headers)
                return
            try:
                await send_events(send, departure,
                                  _events(exchange, reply, api.stream(exchange)),
                                  request_id, exchange.response_headers)
            finally:
                state.metrics.in_flight.dec()
        finally:
            departure.close()

    def _record_refusal(self, api: InboundAPI, request_id: str, received: float,
                        traceparent: bytes | None, error: SwitchgearError) -> Exchange:
        """Log a request refused before it became an Exchange, so every request has its row."""
        exchange = Exchange(request_id=request_id, operation=api.operation, body={}, model="",
                            received=received, config_version=self.state.serving.version,
                            api=api.name)
        self.state.tracer.begin(exchange, traceparent)
        self.state.recorder.fail(exchange, error)
        return exchange

    async def models(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /v1/models: the aliases the caller may ask for (any alias in open mode)."""
        key = await self.state.authenticator.caller(bearer_token(scope))
        data = [{"id": alias, "object": "model", "created": 0, "owned_by": "switchgear"}
                for alias in self.state.router.aliases if key is None or key.allows(alias)]
        await send_json(send, 200, {"object": "list", "data": data}, request_id)

    async def openapi(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /openapi.json: the API's OpenAPI 3 description."""
        await send_body(send, 200, self._openapi, request_id)

    async def healthz(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /healthz: the process is alive and serving."""
        await send_json(send, 200, {"status": "ok"}, request_id)

    async def readyz(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /readyz: 200 when the store is writable, every Redis the config uses answers
        (named by its setting, never its URL) and every alias has a reachable deployment; 503
        "draining", probing nothing, once the replica drains."""
        if self.draining:
            await send_json(send, 503, {"status": "draining"}, request_id)
            return
        deployments = self.state.router.deployments()
        config = self.state.config
        redis = {name: url for name, url in (
            ("limits.state_url", config.limits.state_url),
            ("cache.url", config.cache.url if config.cache.enabled else None)) if url}
        results = await asyncio.gather(
            _probe(self.state.store.ping()),
            *(_redis_probe(url) for url in redis.values()),
            *(_probe(d.backend.check()) for d in deployments),
        )
        store, pings, checks = results[0], results[1:1 + len(redis)], results[1 + len(redis):]
        report: dict[str, Any] = {"store": store or "ok", "deployments": {}}
        if redis:
            report["redis"] = {name: problem or "ok"
                               for name, problem in zip(redis, pings, strict=True)}
        for deployment, problem in zip(deployments, checks, strict=True):
            report["deployments"][f"{deployment.alias}/{deployment.name}"] = problem or "ok"
        servable = self.state.router.servable(
            {d for d, problem in zip(deployments, checks, strict=True) if problem is None})
        report["unservable"] = sorted(alias for alias, ok in servable.items() if not ok)
        ready = store is None and not any(pings) and all(servable.values())
        report["status"] = "ready" if ready else "unready"
        await send_json(send, 200 if ready else 503, report, request_id)

    async def metrics(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /metrics: Prometheus text format."""
        await send_body(send, 200, self.state.metrics.render(), request_id,
                        content_type=CONTENT_TYPE.encode())


async def _events(exchange: Exchange, chunks: AsyncIterator[Body], encoder: StreamEncoder
                  ) -> AsyncGenerator[bytes, None]:
    """Encode a stream as ``encoder``'s server-sent events; a failure after the first byte
    becomes its failure events, and the stream ends without its clean ending."""
    try:
        async for chunk in chunks:
            for data in encoder.chunk(chunk):
                yield data
    except SwitchgearError as error:
        for data in encoder.fail(error):
            yield data
        return
    except Exception:
        log.exception("stream %s failed", exchange.request_id)
        for data in encoder.fail(internal_error()):
            yield data
        return
    finally:
        await close_stream(chunks)
    for data in await encoder.end():
        yield data


async def _answer(pipeline: Handler, exchange: Exchange, departure: Departure) -> Reply | None:
    """The pipeline's reply, or None when the client disconnected before it was ready (the
    pipeline is then cancelled, which withdraws the request from the model)."""
    try:
        return await pipeline(exchange)
    except asyncio.CancelledError:
        if not departure.left:
            raise
        departure.forgive()
        return None
    finally:
        departure.settled()


async def _closing(send: Send, message: Message) -> None:
    """``send`` ``message``, a response's start with ``Connection: close`` added."""
    if message["type"] == "http.response.start":
        message = {**message, "headers": [*message["headers"], CONNECTION_CLOSE]}
    await send(message)


def _store_down() -> SwitchgearError:
    """What a store outage becomes for the client: a 503 with Retry-After."""
    return Overloaded("The store is unavailable right now; try again shortly.", retry_after=1)


async def _send_failure(send: Send, error: SwitchgearError, request_id: str,
                        cause: Exception, shape: ErrorShape | None) -> None:
    """Answer ``error`` in OpenAI's shape (or ``shape``'s); when the endpoint had already
    started its answer, re-raise ``cause`` instead, so the server cuts the connection (a
    half-sent answer must not look whole)."""
    try:
        await send_error(send, error, request_id, shape=shape)
    except RuntimeError:  # the response had started: the server refuses a second start
        raise cause from None


def _trace_header(exchange: Exchange) -> list[tuple[bytes, bytes]]:
    """The trace id header alone (an error answer carries no other stage's headers)."""
    return [(TRACE_ID_HEADER, exchange.trace_id.encode())]


async def _probe(check: Awaitable[object]) -> str | None:
    """None when ``check`` passes in time, else what went wrong (no secrets: class and message)."""
    try:
        await asyncio.wait_for(check, READY_TIMEOUT)
    except TimeoutError:
        return "timed out"
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


async def _redis_probe(url: str) -> str | None:
    """None when the Redis at ``url`` answers PING in time, else the failure's class (its
    message would show the address)."""
    client = connect_redis(url, timeout=READY_TIMEOUT)
    try:
        problem = await _probe(client.ping())
    finally:
        await client.aclose()
    return problem and problem.split(":", 1)[0]


def build_app(state: AppState) -> GatewayApp:
    """The ASGI app over ``state``."""
    return GatewayApp(state)
