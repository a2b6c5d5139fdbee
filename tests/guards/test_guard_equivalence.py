"""The guards' faster scans find exactly what the plain ones did: the PII pre-filters, the patterns
each skipped where what it needs is missing, the injection lookaheads and the stream redactor,
compared with the code they replaced (tests/guard_reference.py) over many generated texts — PII
at chunk boundaries, many matches, none."""

from __future__ import annotations

import random
import re

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


@pytest.mark.parametrize("pattern, letters", [
    (re.compile(BEARER.pattern.replace("][", "")), "bear"),
    (re.compile(INJECTION.pattern[:INJECTION.pattern.index(")") + 1], re.IGNORECASE),
     "idfyprs<[#"),
    (re.compile(HIDDEN_ORDERS.pattern[:HIDDEN_ORDERS.pattern.index(")") + 1], re.IGNORECASE),
     "amyn"),
])
def test_a_first_character_filter_lets_through_every_case_insensitive_match(
        pattern: re.Pattern[str], letters: str) -> None:
    """Whatever matches one of ``letters`` under re.IGNORECASE (the Kelvin sign a k, the dotless
    i an i, the long s an s, ...) also passes ``pattern``: the filters drop no match. (The case
    partners of ASCII letters are all in the Basic Multilingual Plane.)"""
    for letter in letters:
        alike = re.compile(re.escape(letter), re.IGNORECASE)
        missed = [char for char in map(chr, range(0x10000)) if alike.fullmatch(char)
                  and not pattern.match(char)]
        assert missed == [], (letter, missed)
