"""Gather the scorecard's evidence: the config (the live version in the store when there is one),
the request log over a window, keys, config changes and the audit trail (SQLite or PostgreSQL),
and an optional `switchgear plan --json` file. Only reads; a SQLite file that does not exist is
not created."""

from __future__ import annotations

import json
from pathlib import Path

from switchgear.config import Config, ConfigError
from switchgear.governance.audit import chain
from switchgear.governance.secret import AuditKey
from switchgear.governance.verify import verify
from switchgear.governance.versions import ConfigVersions, serving_config
from switchgear.scorecard.evidence import (
    Counts,
    Evidence,
    FeatureCost,
    GovernanceFacts,
    PlanFacts,
    RecordFacts,
    config_facts,
    plan_facts,
)
from switchgear.store import RecordStore, StoreUnavailable, missing_sqlite_file, read_store
from switchgear.store.base import redact_url
from switchgear.store.migrations import placeholders

#: Feature tags listed with their cost (the most expensive first).
TOP_FEATURES = 5


class EvidenceError(Exception):
    """Evidence named by the user cannot be read: the store, or the plan file."""


def gather(config: Config, window_s: float, now: float, source: str,
           plan_path: Path | None = None) -> Evidence:
    """The evidence for ``config`` (read from ``source``) over the ``window_s`` seconds before
    ``now``; EvidenceError when the store or the plan cannot be read. Runs its own event loop."""
    plan = read_plan(plan_path) if plan_path is not None else None
    url = config.store.url
    if (missing := missing_sqlite_file(url)) is not None:
        note = f"no record store at {missing}: no records or governance"
        return Evidence(config=config_facts(config, source),
                        records=RecordFacts(window_s=window_s), plan=plan, notes=(note,))
    try:
        return read_store(url, lambda store: from_store(store, config, window_s, now, source, plan))
    except StoreUnavailable as error:
        raise EvidenceError(f"cannot read the store {redact_url(url)}: {error}") from None


def read_plan(path: Path) -> PlanFacts:
    """The facts of the plan JSON at ``path``; EvidenceError when it is unreadable."""
    try:
        return plan_facts(json.loads(path.read_text()), str(path))
    except OSError as error:
        raise EvidenceError(f"{path}: cannot read: {error.strerror}") from None
    except ValueError as error:
        raise EvidenceError(f"{path}: not JSON: {error}") from None


async def from_store(store: RecordStore, config: Config, window_s: float, now: float,
                     source: str, plan: PlanFacts | None) -> Evidence:
    """The evidence from an open ``store`` (the CLI's own, or a running gateway's) for
    ``config`` (read from ``source``) over the ``window_s`` seconds before ``now``."""
    notes: list[str] = []
    live = await ConfigVersions(store).get()
    if live is not None:
        try:
            served = serving_config(live.config, config, f"config version {live.version}")
        except ConfigError as error:
            notes.append(f"the live config version does not load ({error}); scored {source}")
        else:
            if served.scorecard != config.scorecard:
                notes.append(f"the scorecard section of {source} differs from the live one's; "
                             "the live one is scored (propose the change to score yours)")
            config, source = served, f"config version {live.version} (live, from the store)"
    governance = await _governance(store, config, now)
    if governance.audit_note:
        notes.append(governance.audit_note)
    return Evidence(config=config_facts(config, source),
                    records=await _records(store, now - window_s, now, window_s),
                    governance=governance, plan=plan, notes=tuple(notes))


#: One pass over the window's requests: counts of each fact.
RECORD_COUNTS = """SELECT count(*),
  sum(CASE WHEN status = 200 THEN 1 ELSE 0 END),
  sum(CASE WHEN feature IS NOT NULL THEN 1 ELSE 0 END),
  sum(CASE WHEN status = 200 AND (cost > 0 OR saved_cost > 0) THEN 1 ELSE 0 END),
  sum(CASE WHEN cache_status IS NOT NULL THEN 1 ELSE 0 END),
  sum(CASE WHEN cache_status = 'hit' THEN 1 ELSE 0 END),
  sum(CASE WHEN config_version IS NOT NULL THEN 1 ELSE 0 END),
  sum(CASE WHEN busy_s IS NOT NULL THEN 1 ELSE 0 END)
FROM request_log WHERE {window}"""


async def _records(store: RecordStore, since: float, until: float, window_s: float
                   ) -> RecordFacts:
    """The window's facts. Every query has the same end: with an open end, requests arriving
    between the total's query and the tiers' made the tiers add up to more than it (102%)."""
    start, end = placeholders(store.dialect, 2).split(", ")
    window, bounds = f"received_at >= {start} AND received_at < {end}", (since, until)
    counts = [int(value or 0) for value in
              (await store.rows(RECORD_COUNTS.format(window=window), bounds, report=True))[0]]
    requests, succeeded, with_feature, costed, judged, hits, versioned, timed = counts
    features = await store.rows(
        "SELECT feature, count(*), sum(cost) FROM request_log "
        f"WHERE {window} AND feature IS NOT NULL "
        f"GROUP BY feature ORDER BY sum(cost) DESC, feature LIMIT {TOP_FEATURES}", bounds,
        report=True)
    return RecordFacts(
        window_s=window_s, requests=requests, succeeded=succeeded, with_feature=with_feature,
        costed=costed, cache_judged=judged, cache_hits=hits, versioned=versioned,
        instance_timed=timed,
        by_tier=await _counts(store, "request_log", "priority", window, bounds),
        feature_costs=tuple(FeatureCost(name, int(count), float(cost or 0.0))
                            for name, count, cost in features),
        guard_actions=await _counts(store, "request_log", "guard_action", window, bounds),
    )


async def _counts(store: RecordStore, table: str, column: str, where: str,
                  params: tuple[object, ...]) -> Counts:
    """How many rows of ``table`` matching ``where`` hold each ``column`` value (not null or
    empty: a request refused before admission has no tier)."""
    rows = await store.rows(
        f"SELECT {column}, count(*) FROM {table} WHERE {where} AND {column} <> '' "
        f"GROUP BY {column} ORDER BY count(*) DESC, {column}", params)
    return tuple((str(name), int(count)) for name, count in rows)


async def _governance(store: RecordStore, config: Config, now: float) -> GovernanceFacts:
    mark = placeholders(store.dialect, 1)
    active = f"revoked_at IS NULL AND (expires_at IS NULL OR expires_at > {mark})"
    scoped = await store.rows(f"SELECT count(*) FROM api_keys WHERE {active} AND scopes <> '[]'",
                              (now,))
    changes = (await store.rows(
        "SELECT sum(CASE WHEN review = 'approved' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN rollback_of IS NOT NULL AND status = 'applied' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN break_glass AND status = 'applied' AND review IS NULL "
        "THEN 1 ELSE 0 END) FROM config_changes"))[0]
    versions = (await store.rows("SELECT count(*) FROM config_versions"))[0][0]
    entries, intact, note = await _audit(store, config)
    return GovernanceFacts(
        keys_by_role=await _counts(store, "api_keys", "role", active, (now,)),
        scoped_keys=int(scoped[0][0]),
        audit_entries=entries, audit_intact=intact, audit_note=note,
        config_versions=int(versions),
        reviewed_changes=int(changes[0] or 0), rollbacks=int(changes[1] or 0),
        unreviewed_break_glass=int(changes[2] or 0))


async def _audit(store: RecordStore, config: Config) -> tuple[int, bool | None, str]:
    """The trail's length, whether it verifies (None: no key to check it with), and why not."""
    entries = await chain(store)
    try:
        secret = AuditKey.of(config, serving=False).load(create=False)
    except ConfigError as error:
        return len(entries), None, f"audit trail not checked: {error}"
    verdict = verify(entries, secret)
    if verdict.wrong_key is not None:  # not the trail's key: nothing is known about the trail
        return len(entries), None, f"audit trail not checked: {verdict.wrong_key}"
    note = "" if verdict.tampering is None else f"audit trail TAMPERED: {verdict.tampering}"
    return len(entries), verdict.intact, note

