"""Experiments: an alias split between variant aliases by weight, sticky per user or key, and the
canary guard that rolls a canary back by itself when it does worse than its baseline.

A guard sees only its own replica's traffic, so a rollback is also handed to ``on_roll_back``:
the gateway makes it a config version with the canary's weight at 0 (governance/canary.py), which
every replica adopts and a restart keeps. A canary whose weight is 0 starts rolled back."""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections import deque
from collections.abc import Callable

from switchgear.config import ModelConfig
from switchgear.exchange import Exchange
from switchgear.percentiles import nearest_rank

log = logging.getLogger("switchgear.routing")

#: The guard re-evaluates after this many new canary observations (cheap between).
EVALUATE_EVERY = 10
#: Told of each rollback: the alias, the variant rolled back and why.
RollBack = Callable[[str, str, str], None]


class Experiment:
    """Chooses the variant of an alias for each request."""

    def __init__(self, alias: str, config: ModelConfig, on_roll_back: RollBack | None = None,
                 rolled_back: str | None = None) -> None:
        """``rolled_back``: why the canary was rolled back, when this replica knows (kept from
        the config version before); a canary at weight 0 is rolled back whether known or not."""
        self.alias = alias
        self.variants = [variant.model for variant in config.variants]
        self.weights = [variant.weight for variant in config.variants]
        self.sticky = config.sticky
        self.on_roll_back = on_roll_back
        canary = next((v for v in config.variants if v.canary), None)
        self.guard = CanaryGuard(self, canary.model, config) if canary else None
        if canary is not None and canary.weight == 0 and self.guard is not None:
            self.guard.rolled_back = rolled_back or "rolled back in the config (weight 0)"

    def choose(self, exchange: Exchange, rng: random.Random) -> str:
        """The variant for this request: a hash of its user or key when sticky, else random."""
        key = exchange.principal.key_id if self.sticky == "key" else exchange.principal.user
        if self.sticky == "user":
            key = key or _user_field(exchange)
        point = (zlib.crc32(key.encode()) / 2**32 if self.sticky != "none" and key
                 else rng.random())
        total = sum(self.weights)
        for variant, weight in zip(self.variants, self.weights, strict=True):
            point -= weight / total
            if point < 0:
                return variant
        return next(v for v, w in zip(self.variants, self.weights, strict=True) if w > 0)

    def roll_back(self, variant: str, reason: str) -> None:
        """Send no more traffic to ``variant``."""
        self.weights[self.variants.index(variant)] = 0.0
        log.warning("canary %s of %s rolled back: %s", variant, self.alias, reason)
        if self.on_roll_back is not None:
            self.on_roll_back(self.alias, variant, reason)


def _user_field(exchange: Exchange) -> str | None:
    user = exchange.body.get("user")
    return user if isinstance(user, str) else None


class CanaryGuard:
    """Compares the canary's error rate and p95 latency with the baseline's over a window."""

    def __init__(self, experiment: Experiment, canary: str, config: ModelConfig) -> None:
        self.experiment = experiment
        self.canary = canary
        self.settings = config.canary_guard
        self.samples: dict[bool, deque[tuple[float, bool, float]]] = {True: deque(), False: deque()}
        self.rolled_back: str | None = None
        self._since_evaluation = 0

    def observe(self, exchange: Exchange) -> None:
        """Count a finished request of this experiment."""
        if self.rolled_back is not None or exchange.variant is None:
            return
        is_canary = exchange.variant == self.canary
        now = time.monotonic()
        # A request a retry saved counts as failed: retries would otherwise hide a canary whose
        # server fails (and costs them). A client's error (4xx) is nobody's variant's fault.
        saved = exchange.status < 400 and any(a.outcome == "error" for a in exchange.attempts)
        ok = exchange.status < 500 and not saved
        self.samples[is_canary].append((now, ok, exchange.latency or 0.0))
        if is_canary:
            self._since_evaluation += 1
            if self._since_evaluation >= EVALUATE_EVERY:
                self._since_evaluation = 0
                self._evaluate(now)

    def _evaluate(self, now: float) -> None:
        for window in self.samples.values():
            while window and window[0][0] < now - self.settings.window_s:
                window.popleft()
        canary, baseline = self.samples[True], self.samples[False]
        if min(len(canary), len(baseline)) < self.settings.min_samples:
            return
        canary_errors, baseline_errors = _error_rate(canary), _error_rate(baseline)
        canary_p95, baseline_p95 = _p95(canary), _p95(baseline)
        reason = None
        if canary_errors > baseline_errors + self.settings.error_rate_margin:
            reason = (f"error rate {canary_errors:.1%} against the baseline's "
                      f"{baseline_errors:.1%} (margin {self.settings.error_rate_margin:.1%}) "
                      f"over {len(canary)} and {len(baseline)} requests")
        elif canary_p95 > baseline_p95 * (1 + self.settings.p95_margin):
            reason = (f"p95 latency {canary_p95 * 1000:.0f} ms against the baseline's "
                      f"{baseline_p95 * 1000:.0f} ms (margin {self.settings.p95_margin:.0%}) "
                      f"over {len(canary)} and {len(baseline)} requests")
        if reason is not None:
            self.trip(reason)

    def trip(self, reason: str) -> None:
        """Roll the canary back for ``reason`` (its own comparison, or the quality detector's)."""
        if self.rolled_back is None:
            self.rolled_back = reason
            self.experiment.roll_back(self.canary, reason)


def _error_rate(samples: deque[tuple[float, bool, float]]) -> float:
    return sum(not ok for _, ok, _ in samples) / len(samples)


def _p95(samples: deque[tuple[float, bool, float]]) -> float:
    return nearest_rank(sorted(latency for _, _, latency in samples), 95)
