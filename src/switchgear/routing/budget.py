"""The retry budget: retries at most a share of requests, so a failing fleet sees no retry storm."""

from __future__ import annotations

import time

from switchgear.config import RetryConfig

#: How many retries the budget can hold in reserve, in seconds of the minimum rate (and at least
#: this many retries, and at least one per request being routed): enough for a burst, too few to
#: let a storm through.
RESERVE_SECONDS = 1.0
MIN_RESERVE = 10.0


class RetryBudget:
    """A token bucket: each request adds ``budget_ratio`` of a retry, time adds
    ``budget_min_per_second``, and each retry spends one whole token (as gRPC's retry throttling
    and Envoy's retry budget do). The bucket holds at least one retry per request being routed,
    so when a deployment dies under load every request it held can be retried elsewhere once
    (Envoy sizes its budget to active requests); the refill still caps retries over time."""

    def __init__(self, config: RetryConfig) -> None:
        self.ratio = config.budget_ratio
        self.per_second = config.budget_min_per_second
        self.reserve = max(MIN_RESERVE, self.per_second * RESERVE_SECONDS)
        self.tokens = self.reserve
        self._at = time.monotonic()
        self.requests = 0
        self.routing = 0
        self.retries = 0
        self.refused = 0

    @property
    def capacity(self) -> float:
        """The most retries the bucket holds now: the reserve, or one per request being routed."""
        return max(self.reserve, self.routing)

    def on_request(self) -> None:
        """A new request is being routed: it earns a share of a retry."""
        self.requests += 1
        self.routing += 1
        self.tokens = min(self.capacity, self.tokens + self.ratio)

    def on_routed(self) -> None:
        """A request left routing: answered, streaming, or given up on."""
        self.routing -= 1

    def try_retry(self) -> bool:
        """Spend a retry if the budget has one."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.per_second)
        self._at = now
        if self.tokens < 1:
            self.refused += 1
            return False
        self.tokens -= 1
        self.retries += 1
        return True
