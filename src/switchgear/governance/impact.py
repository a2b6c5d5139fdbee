"""What changed, and what moved: each applied config version beside the p95 latency, error rate
and cost per request of the requests received just before and just after it.

Each side is ``window`` seconds long, cut short where the neighbouring version on that side was
applied (so a side shows one config version's traffic), and the after side ends now at the
latest; rates make sides of different lengths comparable. The figures are the request
log's, by the SQL the ledger and the latency report use on SQLite and PostgreSQL: requests and
failures (status 400 or more, as the cost report counts them: a template change that breaks
its callers shows as 400s) and cost from ``ledger.rollup.total``, p95 as a nearest-rank
percentile of end-to-end seconds of the successful requests (``telemetry.latency``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from switchgear.governance.versions import ConfigVersion, ConfigVersions
from switchgear.ledger.rollup import total
from switchgear.prompts.versions import changed_templates, templates_of
from switchgear.store.base import RecordStore
from switchgear.store.queries import Period
from switchgear.telemetry.latency import latency_percentile

#: Each side's length when none is asked for, in seconds.
DEFAULT_WINDOW = 1800.0
#: The percentile of latency shown.
PERCENTILE = 95


@dataclass(frozen=True, slots=True)
class Side:
    """The requests received in one window beside a change: how many, how many failed, the
    p95 of the successful ones' end-to-end seconds, and what they cost."""

    since: float
    until: float
    requests: int = 0
    errors: int = 0
    p95_s: float | None = None
    cost: float = 0.0

    @property
    def error_rate(self) -> float | None:
        """Failed / requests (None without requests)."""
        return self.errors / self.requests if self.requests else None

    @property
    def cost_per_request(self) -> float | None:
        """Cost / requests (None without requests)."""
        return self.cost / self.requests if self.requests else None

    def report(self) -> dict[str, Any]:
        """As JSON."""
        return {**asdict(self), "error_rate": self.error_rate,
                "cost_per_request": self.cost_per_request}


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """One applied config version: who, when, what, and the sides around it."""

    version: int
    applied_at: float
    applied_by: str
    kind: str
    change_id: str | None
    author: str | None
    reviewer: str | None
    message: str
    sections: list[str]
    #: Templates it added or changed (their new version) or removed (None).
    prompts: dict[str, int | None]
    before: Side
    after: Side

    def report(self) -> dict[str, Any]:
        """As JSON."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["before"], data["after"] = self.before.report(), self.after.report()
        return data


async def side(store: RecordStore, since: float, until: float, tenant: str | None) -> Side:
    """The figures of the requests received from ``since`` to ``until`` (of one tenant,
    unless None)."""
    if not until > since:
        return Side(since, max(since, until))
    period = Period(since, until)
    line = await total(store, period, tenant)
    p95 = await latency_percentile(store, period, tenant, PERCENTILE)
    return Side(since, until, line.requests, line.failed, p95, line.cost)


async def applied_changes(versions: ConfigVersions, store: RecordStore, since: float,
                          until: float, window: float = DEFAULT_WINDOW,
                          tenant: str | None = None) -> list[AppliedChange]:
    """Every version applied by a change from ``since`` on, oldest first, with its sides."""
    applied = [v for v in await versions.applied_since(since) if v.applied_at < until]
    result = []
    for index, version in enumerate(applied):
        if version.change_id is None:  # the config file's seed: no change, no before
            continue
        previous = await versions.get(version.version - 1)
        following = (applied[index + 1] if index + 1 < len(applied)
                     else await versions.get(version.version + 1))
        result.append(await _applied(store, version, previous, following, until, window,
                                     tenant, versions))
    return result


async def _applied(store: RecordStore, version: ConfigVersion, previous: ConfigVersion | None,
                   following: ConfigVersion | None, until: float, window: float,
                   tenant: str | None, versions: ConfigVersions) -> AppliedChange:
    at = version.applied_at
    start = max(at - window, previous.applied_at if previous else -math.inf)
    end = min(at + window, following.applied_at if following else math.inf, until)
    change = await versions.change(version.change_id) if version.change_id else None
    kind = ("rollback" if change and change.rollback_of else
            "break-glass" if version.break_glass else "apply")
    prompts = changed_templates(templates_of(previous.config) if previous else {},
                                templates_of(version.config), version.prompt_versions)
    return AppliedChange(
        version.version, at, version.applied_by, kind, version.change_id,
        change.author if change else None, change.reviewer if change else None,
        change.message if change else "",
        change.sections.split(",") if change and change.sections else [], prompts,
        await side(store, start, at, tenant), await side(store, at, end, tenant))
