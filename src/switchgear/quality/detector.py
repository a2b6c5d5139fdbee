"""The change detector: per key, the recent window against the baseline window; a signal has
shifted when it moved in its worse direction (``WORSE``) beyond its margin AND the move is
significant (Fisher's exact test for rates, Welch's test for the mean output length, one-sided
at the configured confidence).

Both conditions keep it quiet at baseline: the margin ignores small real changes, the test
ignores large-looking changes that thin windows produce by chance. Only worse counts: an
improvement, or the recovery after a bad spell (whose baseline still holds the spell), is shown in
the report but raises nothing. The exact test matters: rare events (a 5% rate over a few hundred
answers) have a skewed count, and the normal approximation of the two-proportion z-test raised
false alarms far more often than its confidence promised. With ``min_samples`` answers per window
or more, Welch's statistic is compared with the normal distribution (a large-sample
approximation of Student's t; answer lengths are not that skewed).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist
from types import MappingProxyType
from typing import Any

from switchgear.background import Background
from switchgear.config import QualityConfig
from switchgear.quality.signals import RATES, Key, QualitySignals, Tally
from switchgear.routing.router import Router
from switchgear.telemetry.metrics import GatewayMetrics

log = logging.getLogger("switchgear.quality")

#: Which way each signal gets worse: up (+1) or down (-1).
WORSE: Mapping[str, int] = MappingProxyType({
    "refusal_rate": 1, "empty_rate": 1, "schema_valid_rate": -1, "guard_flag_rate": 1,
    "length_cut_rate": 1, "output_tokens": -1})


@dataclass(frozen=True, slots=True)
class Shift:
    """A signal that got worse: its value in the baseline and the recent window, and the
    p-value of a move at least that large by chance."""

    signal: str
    baseline: float
    recent: float
    p_value: float

    def describe(self) -> str:
        """One line for logs and rollback reasons."""
        if self.signal == "output_tokens":
            moved = f"mean output tokens {self.baseline:.1f} → {self.recent:.1f}"
        else:
            moved = f"{self.signal} {self.baseline:.1%} → {self.recent:.1%}"
        chance = f"p = {self.p_value:.1e}" if self.p_value >= 1e-15 else "p < 1e-15"
        return f"{moved} ({chance})"


#: A key, its recent and baseline windows, and the shifts between them.
Comparison = tuple[Key, Tally, Tally, list[Shift]]


def rate_shift(signal: str, recent: tuple[int, int], baseline: tuple[int, int], margin: float,
               alpha: float) -> Shift | None:
    """A shift of the rate hits/out-of, or None: worse by more than ``margin`` (absolute) and
    significant at ``alpha`` by Fisher's exact test (one-sided)."""
    (hits_r, n_r), (hits_b, n_b) = recent, baseline
    p_r, p_b = hits_r / n_r, hits_b / n_b
    worse = WORSE[signal]
    if worse * (p_r - p_b) <= margin:
        return None
    # Count the bad answers: hits when more is worse, misses when fewer is.
    bad_r, bad_b = (hits_r, hits_b) if worse > 0 else (n_r - hits_r, n_b - hits_b)
    p_value = hypergeometric_tail(bad_r, bad_r + bad_b, n_r, n_r + n_b)
    return Shift(signal, p_b, p_r, p_value) if p_value < alpha else None


def hypergeometric_tail(drawn_bad: int, bad: int, drawn: int, total: int) -> float:
    """P(X ≥ drawn_bad) where X counts the bad ones among ``drawn`` of ``total`` answers,
    ``bad`` of which are bad: the chance the recent window holds that many by luck alone."""
    log_all = _log_comb(total, drawn)
    mode = (drawn + 1) * (bad + 1) // (total + 2)
    tail = 0.0
    for k in range(drawn_bad, min(bad, drawn) + 1):
        term = math.exp(_log_comb(bad, k) + _log_comb(total - bad, drawn - k) - log_all)
        tail += term
        if k > mode and term < tail * 1e-12:  # past the mode terms only shrink
            break
    return min(1.0, tail)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def mean_shift(recent: Tally, baseline: Tally, margin: float, alpha: float) -> Shift | None:
    """A shift of the mean output length, or None: worse by more than ``margin`` (relative to
    the baseline mean) and significant at ``alpha`` by Welch's test (one-sided)."""
    m_r, m_b = recent.mean_output_tokens, baseline.mean_output_tokens
    v_r, v_b = recent.output_tokens_variance, baseline.output_tokens_variance
    if m_r is None or m_b is None or v_r is None or v_b is None:
        return None
    error = math.sqrt(v_r / recent.answers + v_b / baseline.answers)
    worse = WORSE["output_tokens"]
    if error == 0 or worse * (m_r - m_b) <= margin * m_b:
        return None
    p_value = 1 - NormalDist().cdf(worse * (m_r - m_b) / error)
    return Shift("output_tokens", m_b, m_r, p_value) if p_value < alpha else None


def compare(recent: Tally, baseline: Tally, config: QualityConfig) -> list[Shift]:
    """The signals that got worse from ``baseline`` to ``recent``; a signal with fewer than
    ``min_samples`` answers to count in either window is not judged."""
    alpha = 1 - config.confidence
    margins = config.margins
    enough = config.min_samples
    shifts = []
    for signal, rate in RATES.items():
        now, before = rate(recent), rate(baseline)
        if min(now[1], before[1]) >= enough:
            shift = rate_shift(signal, now, before, getattr(margins, signal), alpha)
            if shift is not None:
                shifts.append(shift)
    if min(recent.answers, baseline.answers) >= enough:
        shift = mean_shift(recent, baseline, margins.output_tokens, alpha)
        if shift is not None:
            shifts.append(shift)
    return shifts


@dataclass(frozen=True, slots=True)
class Alert:
    """A shift in force: where, what, and since when (epoch seconds)."""

    dimension: str
    name: str
    signal: str
    since: float
    detail: str


class ChangeDetector(Background):
    """Evaluates every key on an interval in a background task; a new shift raises an alert
    (WARNING log, ``switchgear_quality_alerts_total``, ``switchgear_quality_shift`` = 1) and,
    on a canary arm, rolls the canary back. ``report`` is the same comparison on demand.

    ``serving_router`` gives the router that serves now: the detector and its signals outlive a
    config version that leaves the quality section as it was (a canary rollback is one), so
    its windows and alerts carry on."""

    task_name = "quality-detector"

    def __init__(self, signals: QualitySignals, config: QualityConfig,
                 serving_router: Callable[[], Router], metrics: GatewayMetrics) -> None:
        self.signals = signals
        self.config = config
        self.serving_router = serving_router
        self.metrics = metrics
        self.alerts: dict[tuple[str, str, str], Alert] = {}
        self.fired = 0
        self.evaluated_at: float | None = None

    def start(self) -> None:
        """Evaluate in the background every ``evaluate_every_s``."""
        self._launch()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.evaluate_every_s)
            try:
                now = time.time()
                found = []
                # One key at a time, giving the event loop back in between: a whole evaluation
                # takes milliseconds with many keys, and requests must not wait for it.
                for comparison in self.comparisons(now):
                    found.append(comparison)
                    await asyncio.sleep(0)
                self._settle(found, now)
            except Exception:  # a bug here must not end the detector for good
                log.exception("quality evaluation failed")

    def comparisons(self, now: float) -> Iterator[Comparison]:
        """Each key's recent and baseline window and their shifts, then each canary arm's recent
        window against its baseline arms' (dimension ``canary``, name ``alias:canary``)."""
        for key in self.signals.groups():
            recent, baseline = self.signals.windows(key, now)
            yield key, recent, baseline, compare(recent, baseline, self.config)
        for alias, canary, others in self._canaries():
            arm = self.signals.windows(("served", canary), now)[0]
            rest = Tally.total(self.signals.windows(("served", other), now)[0]
                               for other in others)
            yield ("canary", f"{alias}:{canary}"), arm, rest, compare(arm, rest, self.config)

    def evaluate(self, now: float) -> None:
        """Compare every window, raise alerts for new shifts, clear those that ended, and roll
        back a canary whose arm shifted."""
        self._settle(list(self.comparisons(now)), now)

    def _settle(self, comparisons: list[Comparison], now: float) -> None:
        """Act on an evaluation's comparisons: export, raise, clear, roll back."""
        seen: set[tuple[str, str, str]] = set()
        for (dimension, name), recent, baseline, shifts in comparisons:
            for window, tally in (("recent", recent), ("baseline", baseline)):
                self._export(dimension, name, window, tally)
            for shift in shifts:
                where = (dimension, name, shift.signal)
                seen.add(where)
                if where not in self.alerts:
                    self._raise(Alert(dimension, name, shift.signal, now, shift.describe()))
        for where in [where for where in self.alerts if where not in seen]:
            del self.alerts[where]
            self.metrics.quality_shift.labels(*where).set(0)
            log.info("quality of %s %s back within margins: %s", where[0], where[1], where[2])
        self.evaluated_at = now

    def _raise(self, alert: Alert) -> None:
        self.alerts[(alert.dimension, alert.name, alert.signal)] = alert
        self.fired += 1
        self.metrics.quality_alerts.labels(alert.dimension, alert.name, alert.signal).inc()
        self.metrics.quality_shift.labels(alert.dimension, alert.name, alert.signal).set(1)
        log.warning("quality shift on %s %s: %s", alert.dimension, alert.name, alert.detail)
        if self.config.canary_rollback:
            self._roll_back_canary(alert)

    def _roll_back_canary(self, alert: Alert) -> None:
        for alias, canary, _ in self._canaries():
            if (alert.dimension == "canary" and alert.name == f"{alias}:{canary}") or (
                    alert.dimension == "served" and alert.name == canary):
                experiment = self.serving_router().routes[alias].experiment
                if experiment is not None and experiment.guard is not None:
                    experiment.guard.trip(f"quality: {alert.detail}")

    def _canaries(self) -> list[tuple[str, str, list[str]]]:
        """(alias, canary variant, other variants) of each experiment whose canary still runs."""
        found = []
        for alias, routes in self.serving_router().routes.items():
            experiment = routes.experiment
            if experiment is None or experiment.guard is None or experiment.guard.rolled_back:
                continue
            canary = experiment.guard.canary
            found.append((alias, canary, [v for v in experiment.variants if v != canary]))
        return found

    def _export(self, dimension: str, name: str, window: str, tally: Tally) -> None:
        gauge = self.metrics.quality_signal
        mean = tally.mean_output_tokens
        if mean is not None:
            gauge.labels(dimension, name, "output_tokens", window).set(mean)
        for signal, rate in RATES.items():
            hits, out_of = rate(tally)
            if out_of:
                gauge.labels(dimension, name, signal, window).set(hits / out_of)

    def report(self, now: float) -> dict[str, Any]:
        """Every key's two windows and shifts now, the alerts in force and the settings."""
        config = self.config
        return {
            "now": now,
            "evaluated_at": self.evaluated_at,
            "settings": {"recent_s": config.recent_s, "baseline_s": config.baseline_s,
                         "min_samples": config.min_samples, "confidence": config.confidence,
                         "evaluate_every_s": config.evaluate_every_s,
                         "margins": config.margins.model_dump()},
            "signals": [{"dimension": dimension, "name": name, "recent": recent.summary(),
                         "baseline": baseline.summary(),
                         "shifts": [asdict(shift) | {"detail": shift.describe()}
                                    for shift in shifts]}
                        for (dimension, name), recent, baseline, shifts in self.comparisons(now)],
            "alerts": [asdict(alert) for alert in self.alerts.values()],
            "alerts_fired": self.fired,
        }
