"""Passive health of a deployment: outlier ejection with growing backoff, half-open probes, and
the peak-EWMA latency the latency-aware policies read."""

from __future__ import annotations

import math
from enum import StrEnum

from switchgear.config import OutlierConfig

#: Seconds over which an old latency observation loses most of its weight.
EWMA_DECAY_SECONDS = 5.0
#: The share of its traffic a just-readmitted deployment starts its slow start with.
SLOW_START_FLOOR = 0.1
#: Seconds over which an unrefreshed latency fades (a 10x slower deployment looks as fast as
#: the others again after about 2.3 of these without traffic, and is measured afresh).
IDLE_DECAY_SECONDS = 10.0


class State(StrEnum):
    """Where a deployment stands."""

    HEALTHY = "healthy"
    EJECTED = "ejected"
    PROBING = "probing"


class PeakEwma:
    """An exponentially weighted moving average that jumps up at once to a slower observation
    (Finagle's peak EWMA): a deployment that slows down is noticed on its next answer."""

    def __init__(self) -> None:
        self.value: float | None = None
        self._at = 0.0

    def current(self, now: float) -> float | None:
        """The value as of ``now``: it decays while nothing is observed, so a deployment that
        was slow and got no traffic since is tried again after a while (Finagle does the same)."""
        if self.value is None:
            return None
        return self.value * math.exp(-max(0.0, now - self._at) / IDLE_DECAY_SECONDS)

    def observe(self, seconds: float, now: float) -> None:
        """Fold in one latency observation."""
        if self.value is None or seconds > self.value:
            self.value = seconds
        else:
            keep = math.exp(-(now - self._at) / EWMA_DECAY_SECONDS)
            self.value = self.value * keep + seconds * (1 - keep)
        self._at = now


class ErrorWindow:
    """Requests and failures over the last ``window`` seconds, in one-second buckets."""

    def __init__(self, window: float) -> None:
        self.size = max(1, math.ceil(window))
        self._seconds = [-1] * self.size
        self._requests = [0] * self.size
        self._failures = [0] * self.size

    def add(self, failed: bool, now: float) -> None:
        """Count one finished attempt."""
        second = int(now)
        slot = second % self.size
        if self._seconds[slot] != second:
            self._seconds[slot], self._requests[slot], self._failures[slot] = second, 0, 0
        self._requests[slot] += 1
        self._failures[slot] += failed

    def totals(self, now: float) -> tuple[int, int]:
        """(requests, failures) within the window."""
        oldest = int(now) - self.size
        requests = failures = 0
        for slot, second in enumerate(self._seconds):
            if second > oldest:
                requests += self._requests[slot]
                failures += self._failures[slot]
        return requests, failures

    def clear(self) -> None:
        """Forget everything (after readmission the past no longer counts)."""
        self._seconds = [-1] * self.size


class DeploymentHealth:
    """Ejects a deployment on consecutive failures or a high error ratio, for a backoff that
    doubles on each ejection; after it, one probe request at a time decides readmission, and a
    readmitted deployment ramps up to its full share of traffic over ``slow_start_s`` (``share``).
    An active check that passes readmits nothing: when the ejection was the checks' own doing
    (the server did not answer them), it makes a probe due now; otherwise the backoff runs on. A
    server that answers its health endpoint but hangs on inference must get a real request
    through before it is trusted again."""

    def __init__(self, config: OutlierConfig) -> None:
        self.config = config
        self.state = State.HEALTHY
        self.consecutive_failures = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.healthy_since = 0.0
        self.reason = ""
        self.window = ErrorWindow(config.window_s)
        self.ttft = PeakEwma()
        self.total = PeakEwma()
        self._probe_out = False
        self._ejected_by_check = False
        #: When the last readmission was (None: never ejected, or the ramp is over).
        self._ramp_from: float | None = None

    def share(self, now: float) -> float:
        """The part of its traffic the deployment takes now: 1, or less while it slow-starts."""
        if self._ramp_from is None:
            return 1.0
        done = (now - self._ramp_from) / self.config.slow_start_s
        if done >= 1:
            self._ramp_from = None
            return 1.0
        return SLOW_START_FLOOR + (1 - SLOW_START_FLOOR) * done

    def available(self, now: float) -> bool:
        """Whether a request could go to this deployment now (healthy, or a probe is due)."""
        if self.state is State.HEALTHY:
            return True
        return now >= self.ejected_until and not self._probe_out

    def admit(self, now: float) -> bool:
        """Take a request now: always when healthy; when half-open, only the one probe."""
        if self.state is State.HEALTHY:
            return True
        if not self.available(now):
            return False
        self.state = State.PROBING
        self._probe_out = True
        return True

    def succeeded(self, ttft: float | None, total: float | None, now: float) -> None:
        """An attempt succeeded; a successful probe readmits the deployment."""
        self.consecutive_failures = 0
        self.window.add(False, now)
        if ttft is not None:
            self.ttft.observe(ttft, now)
        if total is not None:
            self.total.observe(total, now)
        # When ejected, this was a request sent before the ejection: only the probe (or an
        # active check) readmits, or a high error ratio would be forgiven by the next success.
        if self.state is State.PROBING:
            self._readmit(now)
        elif (self.state is State.HEALTHY and self.ejections
              and now - self.healthy_since > self.config.max_ejection_s):
            self.ejections = 0  # healthy for long enough: the next ejection starts short again

    def failed(self, now: float, reason: str, retry_after: float | None = None) -> None:
        """An attempt failed; eject when the deployment looks like an outlier."""
        self.consecutive_failures += 1
        self.window.add(True, now)
        if self.state is State.EJECTED:
            return  # a request sent before the ejection: it must not eject again, for longer
        if self.state is State.PROBING:
            self._eject(now, f"probe failed: {reason}")
        elif retry_after:
            self._eject(now, f"asked to back off: {reason}", retry_after)
        elif self.consecutive_failures >= self.config.consecutive_failures:
            self._eject(now, f"{self.consecutive_failures} consecutive failures: {reason}")
        else:
            requests, failures = self.window.totals(now)
            if requests >= self.config.min_requests and failures / requests >= self.config.error_ratio:
                self._eject(now, f"error ratio {failures / requests:.0%} over {requests} "
                                 f"requests: {reason}")

    def released(self) -> None:
        """A probe ended without a verdict (the client left): let another one go."""
        self._probe_out = False

    def check_failed(self, now: float, reason: str) -> None:
        """An active health check failed: eject now (or stay ejected, with a longer backoff)."""
        if self.state is State.HEALTHY or now >= self.ejected_until:
            self._eject(now, f"health check failed: {reason}")
            self._ejected_by_check = True

    def check_passed(self, now: float) -> bool:
        """An active health check passed: a deployment the checks ejected gets its probe now (a
        real request readmits it, never the check alone). Whether that shortened its ejection."""
        if (self.state is not State.EJECTED or not self._ejected_by_check
                or now >= self.ejected_until):
            return False
        self.ejected_until = now
        return True

    def error_ratio(self, now: float) -> float:
        """Failures over requests in the window (0 when idle)."""
        requests, failures = self.window.totals(now)
        return failures / requests if requests else 0.0

    def _eject(self, now: float, reason: str, seconds: float | None = None) -> None:
        backoff = self.config.base_ejection_s * 2 ** self.ejections
        self.ejections += 1
        self.state = State.EJECTED
        self.ejected_until = now + min(seconds or backoff, self.config.max_ejection_s)
        self.reason = reason
        self._probe_out = False
        self._ejected_by_check = False

    def _readmit(self, now: float) -> None:
        self.state = State.HEALTHY
        self.healthy_since = now
        self._ramp_from = now if self.config.slow_start_s else None
        self.consecutive_failures = 0
        self.reason = ""
        self._probe_out = False
        self.window.clear()
