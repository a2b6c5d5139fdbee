"""Parsing W3C traceparent headers: what the spec accepts, and everything else refused; the
trace ids the gateway begins."""

from __future__ import annotations

import time

import pytest

from switchgear.config import TelemetryConfig
from switchgear.exchange import Exchange, Operation
from switchgear.telemetry.tracing import Tracer, format_traceparent, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.mark.parametrize(("header", "parsed"), [
    (f"00-{TRACE}-{PARENT}-01", (TRACE, PARENT, True)),
    (f"00-{TRACE}-{PARENT}-00", (TRACE, PARENT, False)),
    (f"00-{TRACE}-{PARENT}-03", (TRACE, PARENT, True)),     # other flag bits: still sampled
    (f"cc-{TRACE}-{PARENT}-01-future", (TRACE, PARENT, True)),  # a later version may add fields
])
def test_valid_headers(header: str, parsed: tuple[str, str, bool]) -> None:
    assert parse_traceparent(header.encode()) == parsed


@pytest.mark.parametrize("header", [
    "", "garbage", f"00-{TRACE}-{PARENT}", f"00-{TRACE}-{PARENT}-01-extra",
    f"ff-{TRACE}-{PARENT}-01", f"00-{TRACE.upper()}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01",
    f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE[:-1]}-{PARENT}-01", f"00-{TRACE}-{PARENT}-1",
    f"0-{TRACE}-{PARENT}-01", f"00-{TRACE}-{PARENT}-zz", "00-" + "x" * 600,
])
def test_invalid_headers_are_ignored(header: str) -> None:
    assert parse_traceparent(header.encode()) is None


def test_format_round_trips() -> None:
    assert parse_traceparent(format_traceparent(TRACE, PARENT, True).encode()) == (
        TRACE, PARENT, True)
    assert format_traceparent(TRACE, PARENT, False) == f"00-{TRACE}-{PARENT}-00"


def _begun(tracer: Tracer, traceparent: bytes | None = None) -> Exchange:
    exchange = Exchange(request_id="req_1", operation=Operation.CHAT, body={}, model="m",
                        stream=False)
    tracer.begin(exchange, traceparent)
    return exchange


def test_traces_begun_here_are_valid_unique_and_sort_by_time() -> None:
    """A trace the gateway begins is a valid W3C trace id whose first 13 digits are the time,
    so the request log's trace_id index grows at its end; the client's trace is kept as sent."""
    tracer = Tracer(TelemetryConfig())
    issued = []
    for _ in range(3):
        issued += [_begun(tracer).trace_id for _ in range(2_000)]
        time.sleep(0.002)
    assert all(parse_traceparent(format_traceparent(one, PARENT, True).encode())
               for one in issued)
    assert len(set(issued)) == len(issued)
    stamps = [int(one[:13], 16) for one in issued]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] / 1e6 - time.time()) < 5
    assert max(issued[:2_000]) < min(issued[-2_000:])
    assert _begun(tracer, f"00-{TRACE}-{PARENT}-01".encode()).trace_id == TRACE
