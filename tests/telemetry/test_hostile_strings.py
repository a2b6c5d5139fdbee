"""Request strings in labels and span attributes: capped, control characters replaced."""

from __future__ import annotations

from switchgear.config import TelemetryConfig
from switchgear.exchange import Exchange, Operation, Principal
from switchgear.telemetry.metrics import (
    LABEL_LIMIT,
    OTHER,
    UNKNOWN,
    BoundedLabel,
    GatewayMetrics,
)
from switchgear.telemetry.tracing import ATTRIBUTE_LIMIT, Tracer


def hostile_exchange(model: str) -> Exchange:
    exchange = Exchange(request_id="req-1", operation=Operation.CHAT, body={}, model=model,
                        principal=Principal(tenant="acme", feature="f\x00eat\nure" * 100))
    exchange.done = exchange.received + 0.01
    return exchange


def test_labels_are_capped_cleaned_and_bounded() -> None:
    label = BoundedLabel(2)
    assert label("a\x00b\nc") == "a\ufffdb\ufffdc"
    assert label("x" * 10_000) == "x" * LABEL_LIMIT
    assert label("x" * 20_000) == "x" * LABEL_LIMIT  # the same value once cut: no new one
    assert label("third") == OTHER


def test_a_model_that_is_no_alias_is_unknown_and_never_named() -> None:
    metrics = GatewayMetrics(max_label_values=100)
    observe = metrics.observer(["sim"])
    for model in ("m" * 1_000_000, "evil\x00model", "sim"):
        observe(hostile_exchange(model))
    text = metrics.render().decode()
    assert 'model="unknown"' in text and 'model="sim"' in text and UNKNOWN == "unknown"
    assert "mmmm" not in text and "evil" not in text and "\x00" not in text
    assert len(text) < 100_000


def test_span_attributes_and_names_are_capped_and_cleaned() -> None:
    tracer = Tracer(TelemetryConfig())
    exchange = hostile_exchange("evil\x00\r\n" + "m" * 1_000_000)
    tracer.begin(exchange, None)
    spans = list(tracer.spans(exchange))
    request = spans[0]
    assert request.attributes is not None
    model = request.attributes["gen_ai.request.model"]
    assert isinstance(model, str) and len(model) == ATTRIBUTE_LIMIT
    assert model.startswith("evil\ufffd\ufffd\ufffdmmm")
    feature = request.attributes["switchgear.feature"]
    assert isinstance(feature, str) and "\x00" not in feature and "\n" not in feature
    assert len(request.name) <= ATTRIBUTE_LIMIT + 20 and "\x00" not in request.name
