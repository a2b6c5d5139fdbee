"""The cost report across retention: once the store's maintenance folds the rows older than
``store.retention_days`` into hourly rollups and removes them, a report over the whole window
gives the same requests, tokens and money as before, and says which part came from rollups;
a tenant's name, however hostile, keeps its requests."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from ledger_support import at, ledger_config, record, write

from switchgear.cli.admin_client import admin_call
from switchgear.cli.cost import render_html, render_table
from switchgear.config import Config, StoreConfig
from switchgear.ledger.cost import PriceBook
from switchgear.ledger.focus import focus_export
from switchgear.ledger.report import cost_report
from switchgear.ledger.rollup import folded, total
from switchgear.store.base import RecordStore
from switchgear.store.maintenance import StoreMaintenance
from switchgear.store.queries import DAY, Period
from switchgear.store.records import RequestRecord
from switchgear.store.retention import ROLLUP_TABLE, rows_dropped_before

from servers import gateway

DAYS = [at("2026-03-01T00:00:00") + number * DAY for number in range(10)]
NOW = at("2026-03-10T12:00:00")
#: With 3 days kept at NOW, the rows before this go.
CUTOFF = at("2026-03-07T00:00:00")
HOSTILE = "o'hara\"; DROP TABLE request_log_hourly; --%_\\ é😀"
DIMENSIONS = ("tenant", "feature", "model", "deployment", "day")


def ledger(config: Config) -> list[RequestRecord]:
    """Five requests a day: two tenants and a hostile one, an API and a self-hosted box, a
    failure, a cache hit; at hours that split days and hours."""
    kinds: list[tuple[float, str, str, dict[str, Any]]] = [
        (9.0, "acme", "chat", {"feature": "search", "cached": 300}),
        (9.5, "globex", "local", {"busy_s": 30.0}),
        (13.25, HOSTILE, "chat", {"feature": HOSTILE}),
        (23.5, "acme", "chat", {"status": 503}),
        (23.75, "globex", "local", {"busy_s": 5.0, "feature": "batch"}),
    ]
    records = []
    for index, day in enumerate(DAYS):
        for kind, (hour, tenant, alias, fields) in enumerate(kinds):
            when = datetime.fromtimestamp(day + hour * 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            made = record(config, index * 10 + kind, when, tenant, alias, **fields)
            if kind == 0:
                made = replace(made, cache_status="hit", saved_cost=0.01)
            records.append(made)
    return records


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    """Every figure the rollups must keep, flattened: totals, lines, chart points, and each
    deployment's use and instance time (not its peaks: those come from rows)."""
    flat: dict[str, float | None] = {}
    for line in [report["total"], *report["lines"]]:
        for name, value in line.items():
            if name != "key":
                flat[f"line.{line['key']}.{name}"] = value
    for group, points in report["chart"]["series"].items():
        for start, cost in points:
            flat[f"chart.{group}.{start}"] = cost
    for deployment in report["deployments"] or ():
        for name in ("requests", "tokens", "token_cost", "instance_cost", "instance_time_cost",
                     "idle_cost", "utilization"):
            flat[f"deployment.{deployment['deployment']}.{name}"] = deployment[name]
    return flat


def same(after: dict[str, float | None], before: dict[str, float | None]) -> bool:
    """The same figures, numbers equal but for float rounding."""
    return after.keys() == before.keys() and all(
        (a is None) == (b is None) and (a is None or a == pytest.approx(b, rel=1e-9, abs=1e-12))
        for a, b in ((after[name], before[name]) for name in after))


def charges(text: str) -> list[tuple[tuple[str, ...], float, float]]:
    """A FOCUS export's rows as (what is charged, quantity, cost), in order."""
    return [((row["ChargePeriodStart"], row["SubAccountId"], row["ResourceId"],
              row["ChargeDescription"], row["Tags"]),
             float(row["ConsumedQuantity"] or 0), float(row["BilledCost"]))
            for row in csv.DictReader(io.StringIO(text))]


async def reports(store: RecordStore, config: Config, period: Period
                  ) -> dict[str, dict[str, Any]]:
    """The report by each dimension, and one for the hostile tenant alone."""
    made = {by: await cost_report(store, config, period, by, "tenant") for by in DIMENSIONS}
    made["hostile"] = await cost_report(store, config, period, "day", "feature", HOSTILE)
    return made


async def test_totals_over_the_window_hold_once_retention_folds_the_old_rows(
        store_url: str, store: RecordStore) -> None:
    config = ledger_config(store_url)
    for day in DAYS:  # PostgreSQL: the partitions a store running on those days made
        await store.prepare(day)
    records = ledger(config)
    await store.write(records)
    period = Period(DAYS[0], NOW)
    prices = PriceBook.of(config).prices
    before = await reports(store, config, period)
    exported = await focus_export(store, config.ledger, prices, period)
    assert not before["tenant"]["from_rollups"]
    assert await rows_dropped_before(store) is None

    settings = StoreConfig(url=store_url, retention_days=3)
    upkeep = await StoreMaintenance(store, lambda: settings, clock=lambda: NOW).round()

    gone = [r for r in records if r.received_at < CUTOFF]
    assert upkeep.folded == len(gone) == 6 * 5
    assert await store.count() == len(records) - len(gone)
    after = await reports(store, config, period)
    for name, report in after.items():
        assert same(figures(report), figures(before[name])), name
        assert report["from_rollups"], name
    assert after["tenant"]["rollups"]["requests"] == len(gone)
    assert after["hostile"]["rollups"]["requests"] == 6
    assert after["tenant"]["rollups"]["until"] == "2026-03-07T00:00:00Z"  # 23:00 folded last
    assert after["tenant"]["rollups"]["rows_dropped_before"] == "2026-03-07T00:00:00Z"
    assert "before 2026-03-07T00:00:00Z were removed by retention" in \
        after["tenant"]["rollups"]["note"]
    assert await rows_dropped_before(store) == CUTOFF
    for rendered in (render_table(after["tenant"]), render_html(after["tenant"])):
        assert "30 requests from hourly rollups: rows received before 2026-03-07T00:00:00Z " \
               "were removed by retention" in rendered
    assert "rollups" not in render_table(before["tenant"])
    lines = {line["key"]: line for line in after["tenant"]["lines"]}
    assert lines[HOSTILE]["requests"] == len(DAYS) - 1  # the last one comes after NOW
    assert {row[0] for row in await store.rows(f"SELECT tenant FROM {ROLLUP_TABLE}")} == \
        {"acme", "globex", HOSTILE}
    assert {row[0] for row in await store.rows(f"SELECT feature FROM {ROLLUP_TABLE}")} == \
        {"search", None, HOSTILE, "batch"}
    # The FOCUS export charges the same, row for row.
    focus, focus_before = (charges(await focus_export(store, config.ledger, prices, period)),
                           charges(exported))
    assert [what for what, _, _ in focus] == [what for what, _, _ in focus_before]
    assert [number for _, *numbers in focus for number in numbers] == pytest.approx(
        [number for _, *numbers in focus_before for number in numbers])

    # Another round folds nothing more: nothing is counted twice.
    assert (await StoreMaintenance(store, lambda: settings, clock=lambda: NOW).round()).folded == 0
    again = await reports(store, config, period)
    assert same(figures(again["tenant"]), figures(before["tenant"]))


async def test_a_window_after_the_cutoff_reads_no_rollups(store_url: str,
                                                         store: RecordStore) -> None:
    config = ledger_config(store_url)
    for day in DAYS:
        await store.prepare(day)
    await store.write(ledger(config))
    recent = Period(CUTOFF, NOW)
    before = await cost_report(store, config, recent, "tenant", "tenant")
    settings = StoreConfig(url=store_url, retention_days=3)
    await StoreMaintenance(store, lambda: settings, clock=lambda: NOW).round()
    after = await cost_report(store, config, recent, "tenant", "tenant")
    assert not after["from_rollups"] and after["rollups"] is None
    assert same(figures(after), figures(before))


def test_a_gateway_applies_retention_and_its_cost_report_says_so(store_url: str) -> None:
    config = ledger_config(store_url)
    config = config.model_copy(update={"store": config.store.model_copy(
        update={"retention_days": 2})})
    now = time.time()
    records = [record(config, number, datetime.fromtimestamp(now - hours * 3600, UTC)
                      .strftime("%Y-%m-%dT%H:%M:%S"), tenant, "chat")
               for number, (hours, tenant) in enumerate(
                   [(24 * 6, "acme"), (24 * 5, HOSTILE), (24 * 4, "acme"), (1, "globex")])]
    write(store_url, records)
    window = f"/admin/cost?since={now - 7 * DAY}&until={now}"
    with gateway(config) as base_url:
        root = base_url.removesuffix("/v1")
        deadline = time.monotonic() + 30
        while not (report := admin_call(root, "GET", window))["from_rollups"]:
            assert time.monotonic() < deadline, "the maintenance task did not fold old rows"
            time.sleep(0.05)
    assert report["rollups"]["requests"] == 3
    assert report["total"]["requests"] == len(records)
    assert report["total"]["cost"] == pytest.approx(sum(r.cost for r in records))
    assert {line["key"]: line["requests"] for line in report["lines"]} == \
        {"acme": 2, HOSTILE: 1, "globex": 1}


async def test_a_rollup_hour_counts_when_it_starts_in_the_period(store_url: str,
                                                                 store: RecordStore) -> None:
    config = ledger_config(store_url)
    hour = at("2026-03-02T10:00:00")
    await store.write([record(config, 1, "2026-03-02T10:20:00", "acme", "chat")])
    assert await store.expire(at("2026-03-03T00:00:00")) == 1
    for start, end, counted in ((hour - 0.5, hour + 0.5, 1), (hour, hour + 1, 1),
                                (hour + 0.5, hour + 3600, 0), (hour - 3600, hour - 0.5, 0)):
        period = Period(start, end)
        assert (await total(store, period)).requests == counted, (start - hour, end - hour)
        part = await folded(store, period)
        assert (part.requests if part else 0) == counted, (start - hour, end - hour)
