"""Strings from requests made safe to store, to use as a metric label or span attribute, and to
log: control characters (NUL first of all: PostgreSQL refuses it in text) and lone surrogates
(no UTF-8 encoder takes them) replaced, length capped. Cap first, so a 1 MB string costs a
slice, not a scan of a megabyte; a clean string is returned as it is, after one regex search."""

from __future__ import annotations

import re

#: What an unsafe character becomes.
REPLACEMENT = "\ufffd"
#: Characters no single-line value keeps: C0 and C1 controls, DEL, line and paragraph
#: separators, and lone surrogates.
UNSAFE_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: The same for text (a prompt, an answer), which keeps its tabs and line breaks.
UNSAFE_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def safe_line(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, on one line, with nothing a store, a metrics
    scraper or a log reader could choke on or be fooled by."""
    if len(value) > limit:
        value = value[:limit]
    if UNSAFE_IN_LINE.search(value) is None:
        return value
    return UNSAFE_IN_LINE.sub(REPLACEMENT, value)


def safe_text(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, keeping tabs and line breaks but no other
    control character or lone surrogate."""
    if len(value) > limit:
        value = value[:limit]
    if UNSAFE_IN_TEXT.search(value) is None:
        return value
    return UNSAFE_IN_TEXT.sub(REPLACEMENT, value)
