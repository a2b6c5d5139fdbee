"""Redaction: what must never be stored or passed on as written — email addresses, phone numbers,
payment card numbers (Luhn-checked), national ID numbers and API keys or bearer tokens — replaced
by a marker naming what was there."""

from __future__ import annotations

import re
from collections.abc import Sequence

CARD = "[REDACTED:card]"

#: "bearer" in any case, spelt out in both cases rather than matched with re.IGNORECASE, which
#: would make a search try every place instead of skipping to each b (no other character matches
#: b, e, a or r under re.IGNORECASE: tests/guards checks it).
BEARER = re.compile(r"[bB][eE][aA][rR][eE][rR]")
#: Any digit (``\d``, as the patterns mean it: Unicode's).
DIGIT = re.compile(r"\d")

#: (marker, what the pattern cannot match without, pattern), tried in order at each place:
#: secrets first, so a key that looks like digits is reported as a key, then cards, national IDs,
#: emails and phone numbers. What a pattern needs is a search the regex engine does fast (a set
#: of characters, a literal); a text without it is not scanned with the pattern.
PATTERNS: tuple[tuple[str, re.Pattern[str], re.Pattern[str]], ...] = (
    ("[REDACTED:api_key]", re.compile(r"-|_|AKIA"), re.compile(
        r"\b(?:sk|sg|pk|rk)-[A-Za-z0-9_\-]{12,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{20,}"
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("[REDACTED:bearer]", BEARER, re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}")),
    (CARD, DIGIT, re.compile(r"\b(?:\d[ -]?){12,18}\d\b")),
    # US social security numbers and UK national insurance numbers.
    ("[REDACTED:national_id]", DIGIT, re.compile(
        r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"
        r"|\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")),
    ("[REDACTED:email]", re.compile("@"), re.compile(
        r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")),
    ("[REDACTED:phone]", DIGIT, re.compile(
        r"(?<![\w/])\+?\d{1,3}?[ .\-]?\(?\d{2,4}\)?[ .\-]?\d{3,4}[ .\-]?\d{3,4}(?![\w/])")),
)
#: What is not a digit (what a card number's digits are read without).
NOT_DIGIT = re.compile(r"\D")

#: The longest stretch of text a match can need to be seen whole while streaming (a card number
#: with separators, a phone number, an email of ordinary length, a key's recognisable start).
LONGEST_MATCH = 64

Span = tuple[int, int, str]


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


#: What the text must have before any pattern is tried: a digit (any script's: the patterns'
#: ``\d`` is Unicode's) or an @, "bearer" in any case, AKIA, or a key's opening. Text without
#: any of it — most prose — is passed after a few scans the regex engine does fastest (for a
#: set of characters, a literal).
DIGIT_OR_AT = re.compile(r"[\d@]")
KEY_OPENING = re.compile(r"\b(?:sk|sg|pk|rk)-|\bgh[pousr]_|\bxox")


def hinted(text: str) -> bool:
    """Whether ``text`` has any of what the patterns need (see ``DIGIT_OR_AT``); a key's
    opening is only looked for where its -, _ or xox is."""
    return (DIGIT_OR_AT.search(text) is not None or "AKIA" in text
            or BEARER.search(text) is not None
            or (("-" in text or "_" in text or "xox" in text)
                and KEY_OPENING.search(text) is not None))


def pii_spans(text: str) -> list[Span]:
    """Where ``text`` holds personal data or secrets: (start, end, marker), in order, never
    overlapping (an earlier pattern wins a contested place)."""
    if not hinted(text):
        return []
    found: list[Span] = []
    for marker, needs, pattern in PATTERNS:
        if needs.search(text) is None:
            continue
        for match in pattern.finditer(text):
            if marker == CARD and not _luhn(NOT_DIGIT.sub("", match.group())):
                continue  # order numbers and the like are left alone
            start, end = match.span()
            if all(end <= s or start >= e for s, e, _ in found):
                found.append((start, end, marker))
    return sorted(found)


def replace_spans(text: str, spans: Sequence[Span]) -> str:
    """``text`` with each (start, end, marker) span replaced by its marker."""
    parts, last = [], 0
    for start, end, marker in spans:
        parts += [text[last:start], marker]
        last = end
    parts.append(text[last:])
    return "".join(parts)


def redact(text: str) -> str:
    """``text`` with every email, phone number, card number, national ID and key replaced."""
    return replace_spans(text, pii_spans(text))
