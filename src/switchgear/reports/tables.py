"""Plain-text tables for the CLI's reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """A value as a table cell: ``-`` for nothing."""
    return "-" if value is None else str(value)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """``rows`` (the first is the header) as lines of left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]
