"""Memory over a long run: one server loaded for a set number of requests, its resident memory
(VmRSS of its process group, from /proc) after the first tenth and at the end."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from load import WrkLoad
from processes import BenchmarkError, Endpoint, ServiceProcess

#: How much the end's RSS may exceed the first tenth's (0.05: within 5%).
RSS_GROWTH_LIMIT = 0.05
#: Longest wrk run between two progress lines.
CHUNK_S = 5
MIB = 1024 * 1024


@dataclass(frozen=True)
class RSSRun:
    """What a long run found: RSS after the first tenth and at the end, and the requests
    answered by then, with the errors and how long it took."""

    row: str
    concurrency: int
    tenth_requests: int
    tenth_rss: int
    end_requests: int
    end_rss: int
    errors: int
    seconds: float

    @property
    def growth(self) -> float:
        """The end's RSS over the first tenth's, less one (0.03: 3% more)."""
        return self.end_rss / self.tenth_rss - 1 if self.tenth_rss else math.inf

    def lines(self) -> list[str]:
        """The result and its verdict, met or MISSED."""
        verdict = "met" if self.growth <= RSS_GROWTH_LIMIT else "MISSED"
        return [
            f"RSS of {self.row} at concurrency {self.concurrency}: {self.tenth_rss / MIB:,.1f} MiB"
            f" after {self.tenth_requests:,} requests (the first tenth), {self.end_rss / MIB:,.1f}"
            f" MiB after {self.end_requests:,} ({self.growth:+.1%}; target <="
            f" {1 + RSS_GROWTH_LIMIT:.2f}x the first tenth's): {verdict};"
            f" {self.end_requests / max(self.seconds, 1e-6):,.0f} req/s over {self.seconds:,.0f} s,"
            f" {self.errors} errors.",
        ]


def chunk_seconds(remaining: int, rate: float | None) -> int:
    """How long the next wrk run should be to reach ``remaining`` more requests at ``rate``
    req/s, at most CHUNK_S (1 s while the rate is not known yet)."""
    if rate is None or rate <= 0:
        return 1
    return max(1, min(CHUNK_S, math.ceil(remaining / rate)))


def rss_run(row: str, endpoint: Endpoint, process: ServiceProcess, load: WrkLoad,
            requests: int, concurrency: int, announce: Callable[[str], None]) -> RSSRun:
    """Load ``endpoint`` in wrk runs of at most CHUNK_S seconds until ``requests`` were
    answered, reading ``process``'s RSS after each run (a progress line each) and keeping the
    reading when the first tenth was passed."""
    tenth = max(1, requests // 10)
    done = errors = 0
    rate: float | None = None
    tenth_at: tuple[int, int] | None = None
    started = time.monotonic()
    while done < requests:
        goal = tenth if tenth_at is None else requests
        seconds = chunk_seconds(goal - done, rate)
        result = load.run(endpoint, concurrency, seconds)
        if result.requests == 0:
            raise BenchmarkError(f"{row} answered no request in {seconds} s")
        done += result.requests
        errors += result.errors
        rate = result.requests_per_s
        rss = process.rss_bytes()
        if tenth_at is None and done >= tenth:
            tenth_at = (done, rss)
        announce(f"[rss] {done:,} of {requests:,} requests, {rate:,.0f} req/s, RSS"
                 f" {rss / MIB:,.1f} MiB, {errors} errors")
    assert tenth_at is not None
    return RSSRun(row, concurrency, tenth_at[0], tenth_at[1], done, process.rss_bytes(), errors,
                  time.monotonic() - started)
