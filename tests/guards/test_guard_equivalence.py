"""The guards' faster scans find exactly what the plain ones did: the PII pre-filters, the patterns
each skipped where what it needs is missing, the injection lookaheads and the stream redactor,
compared with the code they replaced (tests/guard_reference.py) over many generated texts — PII
at chunk boundaries, many matches, none."""

from __future__ import annotations

import random
import re
from itertools import product

import pytest

from guard_reference import (
    REFERENCE_HIDDEN_ORDERS,
    REFERENCE_HINTS,
    REFERENCE_INJECTION,
    generated,
    pieces_of,
    reference_spans,
    reference_stream,
)
from switchgear.exchange import Exchange, Operation
from switchgear.guards.checks import HIDDEN_ORDERS, INJECTION, Pii
from switchgear.guards.redact import BEARER, hinted, pii_spans
from switchgear.guards.stream import StreamRedactor


def exchange() -> Exchange:
    return Exchange(request_id="r", operation=Operation.CHAT, body={}, model="chat")


def test_pii_is_found_where_it_was_found_before() -> None:
    for text in generated(3000, seed=1):
        assert hinted(text) == (REFERENCE_HINTS.search(text) is not None), text
        assert pii_spans(text) == reference_spans(text), text


def test_injection_is_found_where_it_was_found_before() -> None:
    for text in generated(3000, seed=2):
        for new, old in ((INJECTION, REFERENCE_INJECTION),
                         (HIDDEN_ORDERS, REFERENCE_HIDDEN_ORDERS)):
            found, expected = new.search(text), old.search(text)
            assert (found and (found.span(), found.group())) == (
                expected and (expected.span(), expected.group())), text


def test_a_stream_is_released_as_it_was_before() -> None:
    rng = random.Random(3)
    for text in generated(600, seed=3):
        pieces = pieces_of(text, rng)
        redactor = StreamRedactor([Pii()], exchange(), lambda check, reason: None)
        released = [redactor.feed(piece) for piece in pieces] + [redactor.flush()]
        assert released == reference_stream(pieces)[0], pieces


def partners(char: str) -> list[str]:
    """What matches ``char`` under re.IGNORECASE (the Kelvin sign a k, the dotless i an i, the
    long s an s, ...); the case partners of ASCII letters are all in the Basic Multilingual
    Plane."""
    alike = re.compile(re.escape(char), re.IGNORECASE)
    return [other for other in map(chr, range(0x10000)) if alike.fullmatch(other)]


def test_bearer_spelt_out_in_both_cases_is_bearer_in_any_case() -> None:
    spellings = product(*map(partners, "bearer"))
    assert [word for word in map("".join, spellings) if not BEARER.fullmatch(word)] == []


@pytest.mark.parametrize("pattern, openings", [
    (INJECTION, ["ig", "di", "de", "do", "fo", "yo", "pr", "re", "sh", "<|", "[i", "##"]),
    (HIDDEN_ORDERS, ["as", "ai", "mo", "yo", "ne"]),
])
def test_a_lookahead_lets_through_every_phrasing_in_any_case(
        pattern: re.Pattern[str], openings: list[str]) -> None:
    """The lookahead in front of ``pattern`` passes each of its phrasings' openings (its first
    two characters) in any case: it drops no match."""
    lookahead = re.compile(pattern.pattern[:pattern.pattern.index("(?:")], re.IGNORECASE)
    assert [opening for opening in openings for first in partners(opening[0])
            for second in partners(opening[1]) if not lookahead.match(first + second)] == []
