"""Trace context end to end: the client's traceparent reaches the upstream, comes back in
x-trace-id and is in the request log; with an OTLP endpoint, the stages' spans reach a real
OTLP/HTTP receiver on loopback with GenAI attributes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from switchgear.config import Config, parse_config
from switchgear.simulator.faults import Faults
from switchgear.simulator.server import RunningSimulator

from servers import BackgroundLoop, aiohttp_server, gateway, wait_for_record

HELLO = [{"role": "user", "content": "Say hello"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@dataclass
class Loopback:
    """A tiny aiohttp server on loopback: an OpenAI upstream that notes each request's
    ``traceparent``, and an OTLP/HTTP receiver that keeps the spans it is sent."""

    url: str = ""
    traceparents: list[str | None] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)

    async def chat(self, request: web.Request) -> web.Response:
        self.traceparents.append(request.headers.get("traceparent"))
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "tiny-1",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hello"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    async def traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
def loopback(background: BackgroundLoop) -> Iterator[Loopback]:
    server = Loopback()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.chat)
    app.router.add_post("/v1/traces", server.traces)
    with aiohttp_server(app, background) as url:
        server.url = url
        yield server


def configure(store_url: str, url: str) -> Config:
    return parse_config({
        "models": {"tiny": {"deployments": [
            {"name": "up", "backend": "openai_http", "url": url + "/v1", "model": "tiny-1"}]}},
        "routing": {"health_check_interval_s": None},
        "store": {"url": store_url, "flush_interval_ms": 20}})


def traceparent(trace_id: str, span_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


def test_the_client_trace_id_reaches_upstream_the_answer_and_the_log(
    loopback: Loopback, store_url: str
) -> None:
    config = configure(store_url, loopback.url)
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="tiny", messages=HELLO,
            extra_headers={"traceparent": traceparent(TRACE_ID, PARENT_ID)})
        assert raw.headers["x-trace-id"] == TRACE_ID
        record = wait_for_record(config.store.url, raw.headers["x-request-id"])
        assert record.trace_id == TRACE_ID
        # no exporter, so no gateway span: the upstream's parent is the client's span
        assert loopback.traceparents[-1] == traceparent(TRACE_ID, PARENT_ID)

        for sent in (None, "00-not-a-trace-01", traceparent("0" * 32, PARENT_ID)):
            headers = {} if sent is None else {"traceparent": sent}
            raw = sdk.chat.completions.with_raw_response.create(
                model="tiny", messages=HELLO, extra_headers=headers)
            new_id = raw.headers["x-trace-id"]
            assert len(new_id) == 32 and new_id != TRACE_ID and int(new_id, 16)
            _, upstream_id, _, flags = str(loopback.traceparents[-1]).split("-")
            assert upstream_id == new_id
            assert flags == "00"  # nothing is recorded without an exporter
            assert wait_for_record(config.store.url,
                                   raw.headers["x-request-id"]).trace_id == new_id


def test_an_error_answer_and_a_refused_body_carry_their_trace_id(
    loopback: Loopback, tmp_path: Path
) -> None:
    config = configure(f"sqlite:///{tmp_path}/records.db", loopback.url)
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        with pytest.raises(openai.NotFoundError) as unknown:
            sdk.chat.completions.create(model="nope", messages=HELLO, extra_headers={
                "traceparent": traceparent(TRACE_ID, PARENT_ID)})
        assert unknown.value.response.headers["x-trace-id"] == TRACE_ID
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(model="tiny", messages=[], extra_headers={
                "traceparent": traceparent(TRACE_ID, PARENT_ID)})
        assert refused.value.response.headers["x-trace-id"] == TRACE_ID
        record = wait_for_record(config.store.url, refused.value.response.headers["x-request-id"])
        assert record.trace_id == TRACE_ID


def attributes(span: Span) -> dict[str, Any]:
    def value(any_value: AnyValue) -> Any:
        return getattr(any_value, str(any_value.WhichOneof("value")))
    return {item.key: value(item.value) for item in span.attributes}


def test_spans_of_the_stages_reach_the_otlp_receiver(
    loopback: Loopback, simulators: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    broken = simulators(faults=Faults(error_rate=1.0, error_status=500))
    config = parse_config({
        "models": {"tiny": {"policy": "priority", "deployments": [
            {"name": "broken", "backend": "openai_http", "url": broken.base_url, "model": "sim"},
            {"name": "up", "backend": "openai_http", "url": loopback.url + "/v1",
             "model": "tiny-1"}]}},
        "routing": {"health_check_interval_s": None},
        "store": {"url": f"sqlite:///{tmp_path}/records.db", "flush_interval_ms": 20},
        "telemetry": {"otlp_endpoint": loopback.url, "service_name": "gw-test"}})
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        answer = sdk.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=5, temperature=0.5,
            extra_headers={"traceparent": traceparent(TRACE_ID, PARENT_ID)})
        unsampled = sdk.chat.completions.with_raw_response.create(
            model="tiny", messages=HELLO,
            extra_headers={"traceparent": traceparent("1" * 32, PARENT_ID, "00")})
        assert unsampled.headers["x-trace-id"] == "1" * 32
    # the gateway has stopped: its exporter flushed every queued span
    spans = {span.name: span for span in loopback.spans}
    assert all(span.trace_id.hex() == TRACE_ID for span in loopback.spans)
    assert set(spans) == {"chat tiny", "admission", "cache", "queue", "route", "chat sim",
                          "chat tiny-1"}
    root = spans["chat tiny"]
    assert root.parent_span_id.hex() == PARENT_ID
    assert root.kind == Span.SPAN_KIND_SERVER
    assert attributes(root).items() >= {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "tiny",
        "gen_ai.response.model": "tiny-1", "gen_ai.request.max_tokens": 5,
        "gen_ai.request.temperature": 0.5, "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 1, "http.response.status_code": 200,
        "switchgear.deployment": "up", "switchgear.attempts": 2}.items()
    assert answer.usage is not None and answer.usage.completion_tokens == 1
    for stage in ("admission", "cache", "queue", "route"):
        assert spans[stage].parent_span_id == root.span_id
    failed, served = spans["chat sim"], spans["chat tiny-1"]
    for attempt in (failed, served):
        assert attempt.kind == Span.SPAN_KIND_CLIENT
        assert attempt.parent_span_id == spans["route"].span_id
    assert attributes(failed)["error.type"] == "UpstreamStatusError"
    assert failed.status.code == failed.status.STATUS_CODE_ERROR
    assert attributes(served)["gen_ai.request.model"] == "tiny-1"
    # the upstream's parent span is the served attempt's span
    assert loopback.traceparents[0] == traceparent(TRACE_ID, served.span_id.hex())
    assert root.start_time_unix_nano <= failed.start_time_unix_nano
    assert served.end_time_unix_nano <= root.end_time_unix_nano
