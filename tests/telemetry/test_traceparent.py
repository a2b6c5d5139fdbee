"""Parsing W3C traceparent headers: what the spec accepts, and everything else refused."""

from __future__ import annotations

import pytest

from switchgear.telemetry.tracing import format_traceparent, parse_traceparent

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
