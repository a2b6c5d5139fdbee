"""The one percentile definition Switchgear's figures use: **nearest-rank**.

Of n values sorted ascending, the p-th percentile (0 < p <= 100) is the value at 1-based rank
⌈p·n/100⌉: always a value that was observed, never an interpolation. PostgreSQL's
``percentile_disc(p / 100)`` and numpy's ``quantile(..., method="inverted_cdf")`` are the same
definition; reports, ``switchgear bench`` and ``switchgear plan`` name it in their output.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

METHOD = "nearest-rank"


def rank(count: int, percentile: float) -> int:
    """The 1-based rank of the ``percentile``-th percentile of ``count`` sorted values (exact
    for decimal percentiles such as 99.9: no float rounding moves the rank)."""
    exact = Fraction(str(percentile)) * count / 100
    return min(count, max(1, -(-exact.numerator // exact.denominator)))


def nearest_rank(ordered: Sequence[float], percentile: float) -> float:
    """The ``percentile``-th percentile of ``ordered`` (sorted ascending, not empty)."""
    return ordered[rank(len(ordered), percentile) - 1]
