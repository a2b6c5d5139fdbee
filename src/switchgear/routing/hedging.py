"""Hedged requests (Dean and Barroso, "The Tail at Scale"): when an attempt has not answered
within the alias's recent tail, a second one goes to another deployment and the first answer
wins. This module keeps the tail: the p95 of an alias's recent times to first token."""

from __future__ import annotations

from collections import deque

from switchgear.percentiles import nearest_rank

#: Recent answers the tail is taken over.
SAMPLES = 256
#: Answers needed before there is a tail to hedge after.
MIN_SAMPLES = 20
#: The tail is recomputed after this many more answers (a sort of at most SAMPLES numbers).
REFRESH_EVERY = 32
PERCENTILE = 95


class TailLatency:
    """The nearest-rank p95 of an alias's last ``SAMPLES`` times to first token, refreshed every
    ``REFRESH_EVERY`` answers, so observing costs an append and a count."""

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=SAMPLES)
        self._until_refresh = MIN_SAMPLES
        #: Seconds; None until ``MIN_SAMPLES`` answers were seen.
        self.p95: float | None = None

    def observe(self, seconds: float) -> None:
        """Note one answer's time to first token."""
        self._recent.append(seconds)
        self._until_refresh -= 1
        if self._until_refresh <= 0:
            self._until_refresh = REFRESH_EVERY
            self.p95 = nearest_rank(sorted(self._recent), PERCENTILE)
