"""The SLO monitor: evaluates every SLO from the request log on an interval, off the hot path.

The request log is shared by replicas and survives restarts, so every replica computes the same
figures, and a restarted gateway picks up where it was. Each SLO keeps its counts per time bucket
in memory: loaded whole at the first evaluation, then only the newest minutes are queried again
(records arrive up to the record writer's lag late). After each evaluation the figures are
published to the SLO gauges on /metrics (telemetry/metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from switchgear.config import ConfigError
from switchgear.sections.durations import format_duration
from switchgear.sections.slo import Severity, SLOConfig, SLOSection
from switchgear.slo.alerts import (
    FIRING,
    OK,
    AlertState,
    AlertStates,
    WebhookNotifier,
    alert_message,
)
from switchgear.slo.budget import BucketSeries, budget_remaining, burn_rate
from switchgear.slo.sli import bucket_query
from switchgear.store.base import RecordStore
from switchgear.store.migrations import Dialect
from switchgear.telemetry.metrics import SLOFigures, SLOSeries

log = logging.getLogger("switchgear.slo")

#: Buckets in the shortest window an SLO looks at (its resolution).
BUCKETS_PER_SHORTEST_WINDOW = 10
#: Seconds of the newest records queried again at each evaluation, for records written late.
RESETTLE_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One SLO at one time: requests and bad ones over its window, the error budget left, the
    burn rate per policy window (by its unscaled name, e.g. ``5m``) and which severities' burn
    conditions hold."""

    at: float
    requests: int
    bad: int
    budget_remaining: float
    burn_rates: dict[str, float]
    conditions: dict[Severity, bool]


class SLOTracker:
    """One SLO's counts per bucket, kept up to date from the request log, and its evaluation."""

    def __init__(self, objective: SLOConfig, time_scale: float, dialect: Dialect) -> None:
        self.objective = objective
        self.scale = time_scale
        policy = objective.alerting.policy
        self.windows = sorted({*(rule.long for rule in policy), *(rule.short for rule in policy)})
        span = max(objective.window, *self.windows) * time_scale
        width = min(objective.window, *self.windows) * time_scale / BUCKETS_PER_SHORTEST_WINDOW
        self.series = BucketSeries(width, span)
        self.query = bucket_query(objective, dialect, width)
        self.span = span
        self.loaded = False

    async def refresh(self, store: RecordStore, now: float) -> None:
        """Query the records of the buckets that may have changed since the last refresh."""
        lookback = self.span if not self.loaded else min(self.span, RESETTLE_SECONDS)
        first = self.series.bucket(now - lookback)
        # One bucket early: the SQL's and Python's bucket of a time at a boundary may differ.
        rows = await store.rows(self.query.sql, self.query.params((first - 1) * self.series.width))
        self.series.advance(now)
        self.series.replace(first, rows)
        self.loaded = True

    def _burn_rate(self, seconds: float) -> float:
        total, bad = self.series.window(seconds * self.scale)
        return burn_rate(bad, total, self.objective.error_budget)

    def evaluate(self, now: float) -> Evaluation:
        """The SLO's figures from the counts as they stand."""
        budget = self.objective.error_budget
        total, bad = self.series.window(self.objective.window * self.scale)
        burns = {seconds: self._burn_rate(seconds) for seconds in self.windows}
        conditions: dict[Severity, bool] = {}
        for rule in self.objective.alerting.policy:
            holds = burns[rule.long] > rule.burn_rate and burns[rule.short] > rule.burn_rate
            conditions[rule.severity] = conditions.get(rule.severity, False) or holds
        return Evaluation(now, total, bad, budget_remaining(bad, total, budget),
                          {format_duration(seconds): rate for seconds, rate in burns.items()},
                          conditions)


class SLOMonitor:
    """Evaluates the SLOs every ``evaluate_every`` seconds, keeps the latest figures and alert
    states for ``report``, publishes them to ``series`` (the SLO gauges) when given, and sends
    each alert change (firing, resolved) to the SLO's webhook."""

    def __init__(self, section: SLOSection, store: RecordStore,
                 series: SLOSeries | None = None) -> None:
        self.section = section
        self.store = store
        self.series = series
        self.trackers = [SLOTracker(objective, section.time_scale, store.dialect)
                         for objective in section.objectives]
        self.webhooks = {objective.name: _webhook(objective) for objective in section.objectives}
        self.states = AlertStates(store)
        self.notifier = WebhookNotifier()
        self.latest: dict[str, Evaluation] = {}
        self.alerts: dict[tuple[str, str], AlertState] = {}
        self._prepared = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start evaluating in the background (nothing to do without SLOs); the gauges show
        this monitor's SLOs only, from its first evaluation on."""
        if self.series is not None:
            self.series.publish(())
        if self.trackers:
            self.notifier.start()
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.evaluate()
            except Exception:  # the store is down, say: keep the last figures, try again later
                log.warning("SLO evaluation failed; trying again in %gs",
                            self.section.evaluate_every, exc_info=True)
            await asyncio.sleep(self.section.evaluate_every)

    async def evaluate(self) -> None:
        """Bring every SLO up to date, then move alerts whose burn conditions changed."""
        now = time.time()
        if not self._prepared:
            await self.states.prepare([t.objective.name for t in self.trackers], now)
            self._prepared = True
        for tracker in self.trackers:
            await tracker.refresh(self.store, now)
            self.latest[tracker.objective.name] = tracker.evaluate(now)
        self.alerts = await self.states.load()
        for tracker in self.trackers:
            await self._move_alerts(tracker.objective, self.latest[tracker.objective.name])
        if self.series is not None:
            self.series.publish(self._figures(tracker.objective) for tracker in self.trackers)

    def _figures(self, objective: SLOConfig) -> SLOFigures:
        evaluation = self.latest[objective.name]
        alerts = {severity: self.alerts.get((objective.name, severity))
                  for severity in evaluation.conditions}
        firing: dict[str, bool] = {severity: state.firing for severity, state in alerts.items()
                                   if state is not None}
        return SLOFigures(objective.name, objective.target, evaluation.requests, evaluation.bad,
                          evaluation.budget_remaining, evaluation.burn_rates, firing,
                          evaluation.at)

    async def _move_alerts(self, objective: SLOConfig, evaluation: Evaluation) -> None:
        for severity, firing in evaluation.conditions.items():
            key = (objective.name, severity)
            state = self.alerts.get(key)
            if state is None or state.firing == firing:
                continue
            if not await self.states.change(objective.name, severity, firing, evaluation.at):
                continue  # another replica made this change (and notified it)
            self.alerts[key] = AlertState(FIRING if firing else OK, evaluation.at)
            log.warning("SLO %s %s alert %s", objective.name, severity,
                        "firing" if firing else "resolved")
            url = self.webhooks[objective.name]
            if url is not None:
                started = evaluation.at if firing else state.since
                self.notifier.send(url, f"{objective.name}/{severity}", alert_message(
                    _labels(objective, severity), _annotations(objective, evaluation), firing,
                    started, None if firing else evaluation.at))

    def report(self, tenant: str | None) -> dict[str, Any]:
        """The SLOs (those scoped to ``tenant`` unless None) with their latest figures."""
        objectives = [self._describe(t) for t in self.trackers
                      if tenant is None or t.objective.scope.tenant == tenant]
        return {"object": "list", "time_scale": self.section.time_scale, "data": objectives}

    def _describe(self, tracker: SLOTracker) -> dict[str, Any]:
        objective = tracker.objective
        evaluation = self.latest.get(objective.name)
        alerts = {severity: {"state": state.state, "since": state.since}
                  for (name, severity), state in self.alerts.items() if name == objective.name}
        figures: dict[str, Any] = {"evaluated_at": None}
        if evaluation is not None:
            good = evaluation.requests - evaluation.bad
            figures = {
                "evaluated_at": evaluation.at, "requests": evaluation.requests,
                "bad": evaluation.bad,
                "sli": good / evaluation.requests if evaluation.requests else None,
                "error_budget_remaining": evaluation.budget_remaining,
                "burn_rates": evaluation.burn_rates,
            }
        return {"name": objective.name, "owner": objective.owner,
                "description": objective.description,
                "indicator": objective.sli.model_dump(exclude_none=True),
                "scope": objective.scope.filters(), "target": objective.target,
                "window": format_duration(objective.window),
                "webhook": self.webhooks[objective.name] is not None,
                **figures, "alerts": alerts}

    async def stop(self) -> None:
        """Stop evaluating; send the notifications still queued."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            await self.notifier.stop()


def _webhook(objective: SLOConfig) -> str | None:
    try:
        return objective.alerting.webhook()
    except ValueError as error:
        raise ConfigError(f"slo objective {objective.name!r}: {error}") from None


def _labels(objective: SLOConfig, severity: str) -> dict[str, str]:
    return {"alertname": "SLOErrorBudgetBurn", "slo": objective.name, "severity": severity,
            "owner": objective.owner, **objective.scope.filters()}


def _annotations(objective: SLOConfig, evaluation: Evaluation) -> dict[str, str]:
    rates = ", ".join(f"{window} {rate:.2f}" for window, rate in evaluation.burn_rates.items())
    return {
        "summary": f"SLO {objective.name} is burning its error budget "
                   f"(target {objective.target:g} over {format_duration(objective.window)})",
        "description": objective.description,
        "burn_rates": rates,
        "error_budget_remaining": f"{evaluation.budget_remaining:.4f}",
    }
