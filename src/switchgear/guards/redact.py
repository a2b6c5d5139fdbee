"""Redaction: what must never be stored as written — email addresses, phone numbers, payment
card numbers and API keys or bearer tokens — replaced by a marker naming what was there."""

from __future__ import annotations

import re

CARD = "[REDACTED:card]"

#: (marker, pattern), applied in order: secrets first, so a key that looks like digits is
#: reported as a key, then cards (checked with Luhn), emails and phone numbers.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("[REDACTED:api_key]", re.compile(
        r"\b(?:sk|sg|pk|rk)-[A-Za-z0-9_\-]{12,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{20,}"
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("[REDACTED:bearer]", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}")),
    (CARD, re.compile(r"\b(?:\d[ -]?){12,18}\d\b")),
    ("[REDACTED:email]", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")),
    ("[REDACTED:phone]", re.compile(
        r"(?<![\w/])\+?\d{1,3}?[ .\-]?\(?\d{2,4}\)?[ .\-]?\d{3,4}[ .\-]?\d{3,4}(?![\w/])")),
)


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    """A card number only if its digits pass the Luhn check (order numbers are left alone)."""
    return CARD if _luhn(re.sub(r"\D", "", match.group())) else match.group()


def redact(text: str) -> str:
    """``text`` with every email, phone number, card number and key replaced by a marker."""
    for marker, pattern in PATTERNS:
        text = pattern.sub(_card if marker == CARD else marker, text)
    return text
