"""Error budgets and burn rates from request counts per time bucket."""

from __future__ import annotations

import math
from collections.abc import Iterable


def burn_rate(bad: int, total: int, error_budget: float) -> float:
    """How fast the budget burns: the bad share over the allowed share (1 spends it exactly over
    the SLO's window); 0 without requests."""
    return 0.0 if total == 0 else bad / total / error_budget


def budget_remaining(bad: int, total: int, error_budget: float) -> float:
    """The share of the window's error budget not yet spent (below 0 once overspent)."""
    return 1.0 - burn_rate(bad, total, error_budget)


class BucketSeries:
    """Requests and bad requests per bucket of ``width`` seconds, for the last ``span`` seconds.

    Buckets are dense from the oldest kept to the newest, so a window's sums are two slices.
    """

    def __init__(self, width: float, span: float) -> None:
        self.width = width
        self.length = math.ceil(span / width) + 1
        self.end = 0  # bucket number after the newest bucket
        self.total: list[int] = []
        self.bad: list[int] = []

    def bucket(self, at: float) -> int:
        """The bucket number of time ``at``."""
        return math.floor(at / self.width)

    def advance(self, now: float) -> None:
        """Make the bucket of ``now`` the newest, dropping buckets older than the span."""
        end = self.bucket(now) + 1
        grow = min(end - self.end, self.length) if self.total else self.length
        if grow > 0:
            self.total.extend([0] * grow)
            self.bad.extend([0] * grow)
            del self.total[:-self.length], self.bad[:-self.length]
            self.end = end

    def replace(self, first: int, rows: Iterable[tuple[int, int, int]]) -> None:
        """Set the buckets from number ``first`` on to ``rows`` (bucket, requests, bad); rows of
        older buckets are ignored, a row newer than the newest bucket counts in the newest."""
        start = max(0, len(self.total) - (self.end - first))
        for position in range(start, len(self.total)):
            self.total[position] = self.bad[position] = 0
        for bucket, total, bad in rows:
            position = min(bucket, self.end - 1) - self.end + len(self.total)
            if position >= start:
                self.total[position] += int(total)
                self.bad[position] += int(bad or 0)

    def window(self, seconds: float) -> tuple[int, int]:
        """Requests and bad requests in the newest ``seconds`` (whole buckets, the newest one
        partly elapsed)."""
        count = min(len(self.total), math.ceil(seconds / self.width))
        if count == 0:
            return 0, 0
        return sum(self.total[-count:]), sum(self.bad[-count:])
