"""Durations as people and Prometheus write them: ``30d``, ``6h``, ``5m``, ``90s``, ``500ms``."""

from __future__ import annotations

import re

#: Seconds per unit, largest first (the order ``format_duration`` tries them in).
UNITS: tuple[tuple[str, float], ...] = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60),
                                        ("s", 1), ("ms", 0.001))
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration(value: object) -> float:
    """Seconds from ``"30d"``-style text or a number of seconds; ValueError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _PATTERN.match(value)):
        seconds = float(match[1]) * dict(UNITS)[match[2]]
    else:
        raise ValueError("must be a duration such as 30d, 6h, 5m, 90s or 500ms, "
                         "or a number of seconds")
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact Prometheus duration for ``seconds`` (rounded to whole milliseconds)."""
    millis = max(1, round(seconds * 1000))
    for unit, size in UNITS:
        unit_millis = round(size * 1000)
        if millis % unit_millis == 0:
            return f"{millis // unit_millis}{unit}"
    raise AssertionError("unreachable: every whole number of milliseconds is exact in ms")
