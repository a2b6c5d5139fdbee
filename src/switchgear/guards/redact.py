"""Redaction: what must never be stored or passed on as written — email addresses, phone numbers,
payment card numbers (Luhn-checked), national ID numbers and API keys or bearer tokens — replaced
by a marker naming what was there."""

from __future__ import annotations

import re
from collections.abc import Sequence

CARD = "[REDACTED:card]"

#: (marker, pattern), tried in order at each place: secrets first, so a key that looks like
#: digits is reported as a key, then cards, national IDs, emails and phone numbers.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("[REDACTED:api_key]", re.compile(
        r"\b(?:sk|sg|pk|rk)-[A-Za-z0-9_\-]{12,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{20,}"
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("[REDACTED:bearer]", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}")),
    (CARD, re.compile(r"\b(?:\d[ -]?){12,18}\d\b")),
    # US social security numbers and UK national insurance numbers.
    ("[REDACTED:national_id]", re.compile(
        r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"
        r"|\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")),
    ("[REDACTED:email]", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")),
    ("[REDACTED:phone]", re.compile(
        r"(?<![\w/])\+?\d{1,3}?[ .\-]?\(?\d{2,4}\)?[ .\-]?\d{3,4}[ .\-]?\d{3,4}(?![\w/])")),
)

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


#: What every pattern needs somewhere in the text (a digit, an @, a key's or a bearer token's
#: opening): text without any of it — most prose — is passed in one search instead of six.
HINTS = re.compile(r"[0-9@]|(?i:bearer)|\b(?:sk|sg|pk|rk)-|AKIA|\bgh[pousr]_|\bxox")


def pii_spans(text: str) -> list[Span]:
    """Where ``text`` holds personal data or secrets: (start, end, marker), in order, never
    overlapping (an earlier pattern wins a contested place)."""
    if HINTS.search(text) is None:
        return []
    found: list[Span] = []
    for marker, pattern in PATTERNS:
        for match in pattern.finditer(text):
            if marker == CARD and not _luhn(re.sub(r"\D", "", match.group())):
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
