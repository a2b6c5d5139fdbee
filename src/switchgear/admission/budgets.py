"""Spending budgets in currency per day and per month, per tenant or per key, kept as running
counters (never computed by scanning the request log).

``check`` runs at admission and refuses a scope whose hard limit is reached for the current day or
month (429 ``insufficient_quota``, as OpenAI answers an exhausted quota, with Retry-After until
that period ends); ``add`` runs on completion with the request's cost. Crossing the soft limit (a
fraction of the hard one) and then the hard limit each raise one alert per scope and period: a
WARNING log line and the optional ``on_alert`` callback. Periods are UTC calendar days and
months; a counter belongs to its period (its name carries the period), so a new period starts
at zero without any reset job.

Cost is known only after a request completes, so requests admitted together while a scope is
just under its hard limit may together overshoot it by their own costs; the next ``check``
refuses.

Two implementations of the ``Budgets`` protocol: ``InProcessBudgets`` and ``RedisBudgets``
(INCRBYFLOAT with expiry at the period's end, in one Lua script with the alert flags so that an
alert fires once across all replicas). A Redis failure raises ``StateUnavailable`` (503).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchgear.errors import RateLimited
from switchgear.store.redis import LuaScript, text, unavailable

logger = logging.getLogger(__name__)

#: Seconds a Redis counter outlives its period, so a replica with a slightly slow clock still
#: finds it.
EXPIRY_GRACE = 3600

AlertLevel = Literal["soft", "hard"]


class Period(StrEnum):
    """A budget period, in UTC."""

    DAY = "day"
    MONTH = "month"


def period_bounds(period: Period, now: float) -> tuple[str, float]:
    """The period containing ``now`` (epoch seconds): its id (``2024-05-01`` or ``2024-05``) and
    the epoch second it ends (UTC; integer arithmetic, no datetime: it runs on every request)."""
    day = int(now // 86400)
    year, month, date = civil_from_days(day)
    if period is Period.DAY:
        return f"{year:04d}-{month:02d}-{date:02d}", (day + 1) * 86400.0
    following = days_from_civil(year + month // 12, month % 12 + 1, 1)
    return f"{year:04d}-{month:02d}", following * 86400.0


#: Every period, in order (iterating the enum itself costs more, per request).
PERIODS = tuple(Period)


class PeriodBounds:
    """``period_bounds``, worked out once per UTC day (both periods follow from the day)."""

    __slots__ = ("_bounds", "_day")

    def __init__(self) -> None:
        self._day: int | None = None
        self._bounds: dict[Period, tuple[str, float]] = {}

    def __call__(self, period: Period, now: float) -> tuple[str, float]:
        return self.of(now)[period]

    def of(self, now: float) -> dict[Period, tuple[str, float]]:
        """Every period's bounds at ``now``."""
        day = int(now // 86400)
        if day != self._day:
            self._day, self._bounds = day, {kind: period_bounds(kind, now) for kind in PERIODS}
        return self._bounds


def civil_from_days(days: int) -> tuple[int, int, int]:
    """The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01
    (Howard Hinnant's algorithm)."""
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524
                   - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    date = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    return year_of_era + era * 400 + (month <= 2), month, date


def days_from_civil(year: int, month: int, date: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (the inverse of civil_from_days)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + date - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


@dataclass(frozen=True, slots=True)
class Budget:
    """The budget of one scope (e.g. ``tenant:acme``, ``key:k1``): hard limits per day and per
    month in currency (``None`` is unlimited) and the soft limit as a fraction of each."""

    scope: str
    daily: float | None = None
    monthly: float | None = None
    soft: float = 0.8
    #: (period, hard limit) of each period that has one, worked out once.
    hard: tuple[tuple[Period, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.soft <= 1.0:
            raise ValueError(f"budget {self.scope!r}: soft must be in (0, 1], got {self.soft}")
        for name, value in (("daily", self.daily), ("monthly", self.monthly)):
            if value is not None and value < 0:
                raise ValueError(f"budget {self.scope!r}: {name} must not be negative, got {value}")
        hard = tuple((period, limit) for period in PERIODS
                     if (limit := self.limit(period)) is not None)
        object.__setattr__(self, "hard", hard)

    def limit(self, period: Period) -> float | None:
        """The hard limit for ``period``."""
        return self.daily if period is Period.DAY else self.monthly


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A scope's spending crossed its soft or hard limit for a period (raised once per period)."""

    scope: str
    period: Period
    period_id: str
    level: AlertLevel
    spent: float
    limit: float


class BudgetExceeded(RateLimited):
    """A scope has spent its budget for the period: 429 ``insufficient_quota``, Retry-After until
    the period ends."""

    type = "insufficient_quota"
    code = "insufficient_quota"


AlertCallback = Callable[[BudgetAlert], None]


class Budgets(Protocol):
    """Running spend counters with hard stops and soft alerts."""

    async def check(self, budgets: Sequence[Budget]) -> None:
        """Raise ``BudgetExceeded`` if any budget's hard limit is reached in its current period."""
        ...

    async def add(self, budgets: Sequence[Budget], cost: float) -> list[BudgetAlert]:
        """Count ``cost`` against every budget; return (and report) the alerts it raised."""
        ...

    async def spent(self, budget: Budget) -> dict[Period, float]:
        """What the scope has spent in the current day and month."""
        ...


def _exceeded(refusals: list[tuple[Budget, Period, str, float]], now: float) -> BudgetExceeded:
    wait = max(end for _, _, _, end in refusals) - now
    names = ", ".join(f"{b.scope} ({period.value} {pid})" for b, period, pid, _ in refusals)
    return BudgetExceeded(
        f"You exceeded your budget for {names}; it resets when the period ends (UTC).",
        retry_after=max(1.0, wait),
    )


#: Alert levels by name, in the order they are raised.
_LEVELS: dict[str, AlertLevel] = {"soft": "soft", "hard": "hard"}


def _reached(budget: Budget, limit: float, spent: float) -> list[AlertLevel]:
    levels: list[AlertLevel] = []
    if spent >= budget.soft * limit:
        levels.append("soft")
    if spent >= limit:
        levels.append("hard")
    return levels


def _distinct(budgets: Sequence[Budget]) -> Iterable[Budget]:
    """One budget per scope (the last given), in the order the scopes first appear."""
    return budgets if len(budgets) < 2 else {b.scope: b for b in budgets}.values()


class _Alerts:
    """Reports alerts: one WARNING line each and the callback, whose failure is logged, not raised."""

    def __init__(self, on_alert: AlertCallback | None) -> None:
        self.on_alert = on_alert

    def report(self, alerts: list[BudgetAlert]) -> None:
        for alert in alerts:
            logger.warning(
                "budget %s limit reached: %s spent %.4f of %.4f in %s %s",
                alert.level, alert.scope, alert.spent, alert.limit, alert.period.value, alert.period_id,
            )
            if self.on_alert is not None:
                try:
                    self.on_alert(alert)
                except Exception:
                    logger.exception("budget alert callback failed")


@dataclass(slots=True)
class _Counter:
    period_id: str
    spent: float = 0.0
    alerted: set[str] = field(default_factory=set)


def _raised(budget: Budget, period: Period, counter: _Counter, limit: float) -> list[BudgetAlert]:
    """The alerts ``counter`` newly reached (each is raised once per period)."""
    alerts = []
    for level in _reached(budget, limit, counter.spent):
        if level not in counter.alerted:
            counter.alerted.add(level)
            alerts.append(BudgetAlert(budget.scope, period, counter.period_id, level,
                                      counter.spent, limit))
    return alerts


class InProcessBudgets:
    """Budget counters in a dict, for one gateway process: one counter per scope and period kind,
    replaced when its period changes."""

    def __init__(
        self, *, on_alert: AlertCallback | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._alerts = _Alerts(on_alert)
        self._clock = clock
        self._period_bounds = PeriodBounds()
        self._counters: dict[tuple[str, Period], _Counter] = {}

    def _counter(self, scope: str, period: Period, period_id: str) -> _Counter:
        counter = self._counters.get((scope, period))
        if counter is None or counter.period_id != period_id:
            counter = self._counters[(scope, period)] = _Counter(period_id)
        return counter

    async def check(self, budgets: Sequence[Budget]) -> None:
        """Raise ``BudgetExceeded`` if any budget's hard limit is reached in its current period."""
        self.check_now(budgets)

    def check_now(self, budgets: Sequence[Budget]) -> None:
        """``check``, without awaiting anything."""
        now = self._clock()
        bounds = self._period_bounds.of(now)
        counters = self._counters
        refusals = []
        for budget in budgets:
            for period, limit in budget.hard:
                period_id, end = bounds[period]
                counter = counters.get((budget.scope, period))
                spent = counter.spent if counter is not None and counter.period_id == period_id else 0.0
                if spent >= limit:
                    refusals.append((budget, period, period_id, end))
        if refusals:
            raise _exceeded(refusals, now)

    async def add(self, budgets: Sequence[Budget], cost: float) -> list[BudgetAlert]:
        """Count ``cost`` against every budget; return (and report) the alerts it raised."""
        return self.add_now(budgets, cost)

    def add_now(self, budgets: Sequence[Budget], cost: float) -> list[BudgetAlert]:
        """``add``, without awaiting anything."""
        if cost < 0:
            raise ValueError(f"cost must not be negative, got {cost}")
        bounds = self._period_bounds.of(self._clock())
        alerts: list[BudgetAlert] = []
        for budget in _distinct(budgets):
            for period in PERIODS:
                period_id = bounds[period][0]
                counter = self._counter(budget.scope, period, period_id)
                counter.spent += cost
                limit = budget.limit(period)
                if limit is not None and counter.spent >= budget.soft * limit:
                    alerts += _raised(budget, period, counter, limit)
        if alerts:
            self._alerts.report(alerts)
        return alerts

    async def spent(self, budget: Budget) -> dict[Period, float]:
        """What the scope has spent in the current day and month."""
        now = self._clock()
        out = {}
        for period in PERIODS:
            counter = self._counters.get((budget.scope, period))
            period_id, _ = self._period_bounds(period, now)
            out[period] = counter.spent if counter is not None and counter.period_id == period_id else 0.0
        return out


# KEYS: per counter i, KEYS[2i - 1] the counter and KEYS[2i] its set of alerts raised.
# ARGV[1]: the cost; per counter i: ARGV[3i - 1] expiry (epoch s), ARGV[3i] hard limit (-1 = none),
# ARGV[3i + 1] soft fraction. Returns per counter: spent after, and the alert levels newly raised
# ('' none, 'soft', 'hard' or 'soft,hard').
_ADD = LuaScript("""
local out = {}
for i = 1, #KEYS / 2 do
  local counter, alerts = KEYS[2 * i - 1], KEYS[2 * i]
  local expiry = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  local soft = tonumber(ARGV[3 * i + 1])
  local spent = redis.call('INCRBYFLOAT', counter, ARGV[1])
  redis.call('EXPIREAT', counter, expiry)
  local raised = {}
  if limit >= 0 then
    local value = tonumber(spent)
    if value >= soft * limit and redis.call('SADD', alerts, 'soft') == 1 then raised[#raised + 1] = 'soft' end
    if value >= limit and redis.call('SADD', alerts, 'hard') == 1 then raised[#raised + 1] = 'hard' end
    redis.call('EXPIREAT', alerts, expiry)
  end
  out[#out + 1] = spent
  out[#out + 1] = table.concat(raised, ',')
end
return out
""")


class RedisBudgets:
    """Budget counters in Redis, shared by every gateway replica; a period's counter expires after
    the period ends. Period boundaries follow this process's clock (UTC)."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "switchgear:budget:",
        on_alert: AlertCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._alerts = _Alerts(on_alert)
        self._clock = clock
        self._period_bounds = PeriodBounds()

    def _key(self, scope: str, period: Period, period_id: str) -> str:
        return f"{self._prefix}{scope}:{period.value}:{period_id}"

    async def _read(self, keys: list[str]) -> list[float]:
        if not keys:
            return []
        try:
            values = await self._client.mget(keys)
        except (RedisError, OSError) as error:
            raise unavailable(error) from error
        return [0.0 if value is None else float(text(value)) for value in values]

    async def check(self, budgets: Sequence[Budget]) -> None:
        """Raise ``BudgetExceeded`` if any budget's hard limit is reached in its current period.

        One MGET of the counters; raises ``StateUnavailable`` (503) if Redis cannot be reached.
        """
        now = self._clock()
        bounds = self._period_bounds.of(now)
        wanted = [(budget, period, *bounds[period], limit)
                  for budget in budgets for period, limit in budget.hard]
        spent = await self._read([self._key(b.scope, p, pid) for b, p, pid, _, _ in wanted])
        refusals = [(b, p, pid, end) for (b, p, pid, end, limit), s in zip(wanted, spent, strict=True)
                    if s >= limit]
        if refusals:
            raise _exceeded(refusals, now)

    async def add(self, budgets: Sequence[Budget], cost: float) -> list[BudgetAlert]:
        """Count ``cost`` against every budget; return (and report) the alerts it raised.

        One Lua script for all counters; raises ``StateUnavailable`` (503) if Redis cannot be reached.
        """
        if cost < 0:
            raise ValueError(f"cost must not be negative, got {cost}")
        now = self._clock()
        counters: list[tuple[Budget, Period, str]] = []
        keys: list[str] = []
        args: list[str | float | int] = [repr(float(cost))]
        bounds = self._period_bounds.of(now)
        for budget in _distinct(budgets):
            for period in PERIODS:
                period_id, end = bounds[period]
                key = self._key(budget.scope, period, period_id)
                limit = budget.limit(period)
                counters.append((budget, period, period_id))
                keys += [key, key + ":alerts"]
                hard = -1 if limit is None else repr(float(limit))
                args += [int(end) + EXPIRY_GRACE, hard, repr(budget.soft)]
        if not counters:
            return []
        reply = await _ADD(self._client, keys, args)
        alerts = []
        for i, (budget, period, period_id) in enumerate(counters):
            spent, raised = float(text(reply[2 * i])), text(reply[2 * i + 1])
            limit = budget.limit(period)
            for name in raised.split(","):
                if name in _LEVELS and limit is not None:
                    alerts.append(BudgetAlert(budget.scope, period, period_id, _LEVELS[name], spent, limit))
        self._alerts.report(alerts)
        return alerts

    async def spent(self, budget: Budget) -> dict[Period, float]:
        """What the scope has spent in the current day and month."""
        now = self._clock()
        periods = list(Period)
        keys = [self._key(budget.scope, p, self._period_bounds(p, now)[0]) for p in periods]
        return dict(zip(periods, await self._read(keys), strict=True))
