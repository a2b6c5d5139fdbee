"""W3C trace context for every request; OpenTelemetry spans of its stages when exported.

Every request gets a trace id, the client's (from a valid ``traceparent``) or a new one; it is
returned in ``x-trace-id``, kept in the request log, and sent upstream in each attempt's
``traceparent``. Without an exporter that costs two random numbers and a header, no SDK object,
and the upstream's parent span is the client's.

With ``telemetry.otlp_endpoint`` set, a sampled request's finished Exchange is turned into spans
when it is recorded, from the times the stages noted on it: the request (SERVER, named as the
GenAI conventions say: "{operation} {model}"), ``admission``, ``cache``, ``queue``, ``route`` and
one CLIENT span per attempt (the backend call, "{operation} {upstream model}"). They are handed
to a BatchSpanProcessor, whose thread exports them with OTLP over HTTP (protobuf): nothing on
the hot path waits for the collector.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from switchgear import __version__
from switchgear.config import TelemetryConfig
from switchgear.exchange import Exchange, Operation
from switchgear.ids import TimeOrderedIds
from switchgear.store.text import safe_line

#: The request header of a W3C trace context.
TRACEPARENT = b"traceparent"
#: The response header carrying the request's trace id (32 hex digits).
TRACE_ID_HEADER = b"x-trace-id"

#: The ``traceparent`` of the attempt being made, for the upstream request: set by the Route
#: stage before each attempt, read by the openai_http backend. A context variable, so every
#: request's task sees only its own.
OUTGOING_TRACEPARENT: ContextVar[str | None] = ContextVar("switchgear_traceparent", default=None)

#: GenAI semantic conventions' names of the operations.
OPERATION_NAMES = {Operation.CHAT: "chat", Operation.COMPLETIONS: "text_completion",
                   Operation.EMBEDDINGS: "embeddings"}
#: Request parameters reported as ``gen_ai.request.*`` attributes.
REQUEST_PARAMETERS = ("max_tokens", "temperature", "top_p", "seed", "frequency_penalty",
                      "presence_penalty")

#: Characters kept of a string attribute (or span name) that comes from a request.
ATTRIBUTE_LIMIT = 256

_HEX = frozenset("0123456789abcdef")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def _hex(text: str, length: int) -> bool:
    return len(text) == length and set(text) <= _HEX and text.strip("0") != ""


def parse_traceparent(value: bytes | None) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) of a valid W3C ``traceparent``; None otherwise."""
    if not value or len(value) > 512:
        return None
    parts = value.decode("latin-1").strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or not set(parts[0]) <= _HEX or parts[0] == "ff":
        return None
    version, trace_id, parent, flags = parts[:4]
    if (version == "00" and len(parts) != 4) or not _hex(trace_id, 32) or not _hex(parent, 16) \
            or len(flags) != 2 or not set(flags) <= _HEX:
        return None
    return trace_id, parent, bool(int(flags, 16) & 1)


def format_traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    """A version-00 ``traceparent`` value."""
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


class Tracer:
    """Gives requests and attempts their ids, and exports finished requests as spans when an
    OTLP endpoint is configured (``start`` opens the exporter, ``stop`` flushes it)."""

    def __init__(self, config: TelemetryConfig) -> None:
        self.config = config
        self.exporting = config.otlp_endpoint is not None
        self.processor: SpanProcessor | None = None
        self._random = random.Random()  # seeded from os.urandom
        self._trace_ids = TimeOrderedIds()
        self._resource: Resource | None = None
        self._scope = InstrumentationScope("switchgear", __version__)

    def span_id(self) -> str:
        """A new span id (16 hex digits, never all zeros)."""
        return f"{self._random.getrandbits(64) or 1:016x}"

    def begin(self, exchange: Exchange, traceparent: bytes | None) -> None:
        """Give ``exchange`` its trace: the client's when ``traceparent`` is valid (keeping its
        sampled flag), else a new time-ordered one (the request log's trace_id index then grows
        at its end) sampled at ``sample_ratio`` when exporting."""
        parsed = parse_traceparent(traceparent)
        if parsed is None:
            exchange.trace_id = self._trace_ids.new()
            exchange.sampled = self.exporting and self._random.random() < self.config.sample_ratio
        else:
            exchange.trace_id, exchange.parent_span_id, exchange.sampled = parsed
        exchange.span_id = self.span_id()
        exchange.response_headers.append((TRACE_ID_HEADER, exchange.trace_id.encode()))

    def attempt(self, exchange: Exchange) -> str:
        """A new attempt's span id, and the ``traceparent`` the upstream receives for it.

        Without an exporter no span is made ("" is returned): the upstream's parent is then the
        client's span (the gateway is a transparent hop) or, for a trace begun here, the
        request's own span id."""
        if self.exporting:
            span_id = parent = self.span_id()
        else:
            span_id, parent = "", exchange.parent_span_id or exchange.span_id
        OUTGOING_TRACEPARENT.set(format_traceparent(exchange.trace_id, parent, exchange.sampled))
        return span_id

    def start(self) -> None:
        """Open the OTLP exporter and its batching thread, when configured."""
        if not self.exporting or self.processor is not None:
            return
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._resource = Resource.create({"service.name": self.config.service_name})
        self.processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=self.config.otlp_endpoint))

    async def stop(self) -> None:
        """Export the spans still queued and close the exporter (in a thread: it blocks)."""
        processor, self.processor = self.processor, None
        if processor is not None:
            await asyncio.to_thread(processor.shutdown)

    def export(self, exchange: Exchange) -> None:
        """A Recorder step: hand a sampled request's spans to the exporter."""
        processor = self.processor
        if processor is None or not exchange.sampled or not exchange.trace_id:
            return
        for span in self.spans(exchange):
            processor.on_end(span)

    def spans(self, exchange: Exchange) -> Iterator[ReadableSpan]:
        """The spans of a finished exchange: the request, its stages and its attempts."""
        trace_id = int(exchange.trace_id, 16)
        done = exchange.done or exchange.received
        parent = None if exchange.parent_span_id is None else SpanContext(
            trace_id, int(exchange.parent_span_id, 16), is_remote=True, trace_flags=_SAMPLED)
        root = self._context(trace_id, exchange.span_id)
        failed = exchange.status >= 500
        model = safe_line(exchange.model, ATTRIBUTE_LIMIT)
        yield self._span(f"{OPERATION_NAMES[exchange.operation]} {model}".rstrip(),
                         root, parent, exchange.received, done, _request_attributes(exchange),
                         SpanKind.SERVER, exchange.error_type if failed else None)
        stages = (("admission", exchange.received, exchange.admitted),
                  ("cache", exchange.admitted, exchange.queued_at),
                  ("queue", exchange.queued_at, exchange.routed),
                  ("route", exchange.routed, exchange.done))
        ids = {name: self.span_id() for name, start, _ in stages if start is not None}
        for name, start, end in stages:
            if start is not None:
                yield self._span(name, self._context(trace_id, ids[name]), root, start,
                                 end or done, _stage_attributes(exchange, name))
        route = self._context(trace_id, ids["route"]) if "route" in ids else root
        operation = OPERATION_NAMES[exchange.operation]
        for number, attempt in enumerate(exchange.attempts, start=1):
            end = attempt.started + attempt.latency if attempt.outcome != "pending" else done
            upstream = safe_line(attempt.model, ATTRIBUTE_LIMIT)
            yield self._span(
                f"{operation} {upstream}", self._context(trace_id, attempt.span_id), route,
                attempt.started, end,
                {"gen_ai.operation.name": operation, "gen_ai.request.model": upstream,
                 "switchgear.deployment": attempt.deployment, "switchgear.attempt": number,
                 "switchgear.outcome": attempt.outcome,
                 **({"error.type": attempt.error} if attempt.error else {})},
                SpanKind.CLIENT, attempt.error)

    @staticmethod
    def _context(trace_id: int, span_id: str) -> SpanContext:
        return SpanContext(trace_id, int(span_id, 16), is_remote=False, trace_flags=_SAMPLED)

    def _span(self, name: str, context: SpanContext, parent: SpanContext | None, start: float,
              end: float, attributes: dict[str, Any], kind: SpanKind = SpanKind.INTERNAL,
              error: str | None = None) -> ReadableSpan:
        status = Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET)
        return ReadableSpan(name, context, parent, self._resource, attributes, kind=kind,
                            status=status, start_time=int(start * 1e9), end_time=int(end * 1e9),
                            instrumentation_scope=self._scope)


def _request_attributes(exchange: Exchange) -> dict[str, Any]:
    """The request span's GenAI and Switchgear attributes."""
    usage, principal = exchange.usage, exchange.principal
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION_NAMES[exchange.operation],
        "gen_ai.request.model": safe_line(exchange.model, ATTRIBUTE_LIMIT),
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "http.response.status_code": exchange.status,
        "switchgear.request_id": safe_line(exchange.request_id, ATTRIBUTE_LIMIT),
        "switchgear.tenant": safe_line(principal.tenant, ATTRIBUTE_LIMIT),
        "switchgear.stream": exchange.stream,
        "switchgear.cache": exchange.cache_status,
        "switchgear.attempts": len(exchange.attempts),
    }
    for name in REQUEST_PARAMETERS:
        value = exchange.body.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[f"gen_ai.request.{name}"] = value
    served = next((a for a in reversed(exchange.attempts) if a.outcome == "ok"), None)
    if served is not None:
        attributes["gen_ai.response.model"] = served.model
    optional = {"switchgear.deployment": exchange.deployment, "switchgear.feature":
                principal.feature, "error.type": exchange.error_type}
    attributes.update((name, safe_line(value, ATTRIBUTE_LIMIT))
                      for name, value in optional.items() if value is not None)
    return attributes


def _stage_attributes(exchange: Exchange, stage: str) -> dict[str, Any]:
    if stage == "cache":
        return {"switchgear.cache": exchange.cache_status}
    if stage == "queue":
        return {"switchgear.priority": safe_line(exchange.priority or "", ATTRIBUTE_LIMIT),
                "switchgear.shed": exchange.shed,
                "switchgear.queue_wait_s": exchange.queue_wait or 0.0}
    return {}
