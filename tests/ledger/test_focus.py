"""The FOCUS export against the spec's column rules, on SQLite and PostgreSQL: every mandatory
column, types and formats, charge periods inside billing periods with exclusive ends, and
BilledCost per charge period equal to the ledger (idle instance time on rows of its own)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections import defaultdict
from decimal import Decimal

from ledger_support import at, ledger_config, record, write

from switchgear.ledger.cost import PriceBook
from switchgear.ledger.focus import focus_export
from switchgear.ledger.rollup import iso
from switchgear.store import open_store
from switchgear.store.queries import Period
from switchgear.store.records import RequestRecord

#: FOCUS 1.0's mandatory columns, plus SkuMeter (1.1) and the ones the issue names.
MANDATORY = {
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription",
    "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost", "EffectiveCost",
    "InvoiceIssuerName", "ListCost", "PricingQuantity", "PricingUnit", "ProviderName",
    "PublisherName", "ServiceCategory", "ServiceName", "ConsumedQuantity", "ConsumedUnit",
    "ResourceId", "SkuMeter", "Tags", "SubAccountId", "SkuId", "ChargeFrequency",
}
NOT_NULL = MANDATORY - {"ChargeClass", "ConsumedQuantity", "ConsumedUnit", "PricingQuantity",
                        "Tags", "SkuId", "ResourceId", "SubAccountId", "SkuMeter"}
DECIMALS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ConsumedQuantity",
            "PricingQuantity", "ListUnitPrice", "ContractedUnitPrice")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
PLAIN_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
#: Noon on the last day of January to six in the morning on the first of February.
PERIOD = Period(at("2026-01-31T12:00:00"), at("2026-02-01T06:00:00"))


def ledger(store_url: str) -> list[RequestRecord]:
    config = ledger_config(store_url)
    records = [
        record(config, 1, "2026-01-31T13:00:00", "acme", "chat", feature="search", cached=400),
        record(config, 2, "2026-01-31T14:00:00", "acme", "chat", feature="search"),
        record(config, 3, "2026-01-31T15:00:00", "globex", "local", busy_s=1800),
        record(config, 4, "2026-01-31T16:00:00", "globex", "chat", status=500),
        record(config, 5, "2026-02-01T01:00:00", "acme", "local", busy_s=3600, feature="chat"),
        record(config, 6, "2026-02-01T02:00:00", "globex", "chat", cached=1000),
        record(config, 7, "2026-01-31T11:59:59", "acme", "chat"),  # before the period
        record(config, 8, "2026-02-01T06:00:00", "acme", "chat"),  # at its end: excluded
    ]
    write(store_url, records)
    return records


def export(store_url: str, tenant: str | None = None) -> list[dict[str, str]]:
    config = ledger_config(store_url)

    async def run() -> str:
        store = open_store(store_url)
        await store.open()
        try:
            return await focus_export(store, config.ledger, PriceBook.of(config).prices, PERIOD,
                                      tenant)
        finally:
            await store.close()

    text = asyncio.run(run())
    return list(csv.DictReader(io.StringIO(text)))


def test_the_focus_export_follows_the_column_rules(store_url: str) -> None:
    records = ledger(store_url)
    rows = export(store_url)
    assert rows and set(rows[0]) >= MANDATORY
    for row in rows:
        for column in NOT_NULL:
            assert row[column] != "", (column, row)
        for column in DECIMALS:
            assert row[column] == "" or PLAIN_DECIMAL.match(row[column]), (column, row[column])
        for column in ("ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart",
                       "BillingPeriodEnd"):
            assert ISO.match(row[column]), (column, row[column])
        # ISO 8601 UTC strings order as times: start < end, the charge inside its billing month
        assert row["ChargePeriodStart"] < row["ChargePeriodEnd"]
        assert row["BillingPeriodStart"] <= row["ChargePeriodStart"]
        assert row["ChargePeriodEnd"] <= row["BillingPeriodEnd"]
        assert row["BilledCost"] == row["EffectiveCost"] == row["ListCost"]
        assert row["ChargeCategory"] == "Usage" and row["ChargeClass"] == ""
        assert row["BillingCurrency"] == "USD"
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert isinstance(json.loads(row["Tags"]), dict)
        if row["ConsumedUnit"] == "Tokens":
            assert row["PricingUnit"] == "1000000 Tokens"
            assert Decimal(row["PricingQuantity"]) * 1_000_000 == Decimal(row["ConsumedQuantity"])
    # the charge periods are the period's UTC days, cut to it, each end exclusive
    periods = {(r["ChargePeriodStart"], r["ChargePeriodEnd"]) for r in rows}
    assert periods == {("2026-01-31T12:00:00Z", "2026-02-01T00:00:00Z"),
                       ("2026-02-01T00:00:00Z", "2026-02-01T06:00:00Z")}
    months = {r["ChargePeriodStart"][:10]: (r["BillingPeriodStart"], r["BillingPeriodEnd"])
              for r in rows}
    assert months == {"2026-01-31": ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
                      "2026-02-01": ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z")}
    assert {r["SkuMeter"] for r in rows} == {"Input Tokens", "Cached Input Tokens",
                                             "Output Tokens", "Instance Hours",
                                             "Idle Instance Hours"}

    # BilledCost per charge period equals the ledger's requests of that day ...
    billed: dict[str, Decimal] = defaultdict(Decimal)
    idle: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        into = idle if row["SkuMeter"] == "Idle Instance Hours" else billed
        into[row["ChargePeriodStart"][:10]] += Decimal(row["BilledCost"])
    inside = [r for r in records if PERIOD.start <= r.received_at < PERIOD.end]
    for day, spent in billed.items():
        ledger_sum = sum(r.cost for r in inside if _day(r) == day)
        assert round(spent, 2) == round(Decimal(ledger_sum), 2), day
    assert round(sum(billed.values()), 6) == round(Decimal(sum(r.cost for r in inside)), 6)
    # ... and the idle rows are the box's instance time nobody used: 2 instances at 4 an hour
    box_used = {"2026-01-31": 1800 / 4 / 3600 * 4.0, "2026-02-01": 3600 / 4 / 3600 * 4.0}
    assert round(idle["2026-01-31"], 6) == round(Decimal(2 * 12 * 4.0 - box_used["2026-01-31"]), 6)
    assert round(idle["2026-02-01"], 6) == round(Decimal(2 * 6 * 4.0 - box_used["2026-02-01"]), 6)

    # tokens consumed per meter add up to the recorded usage
    cached = sum(Decimal(r["ConsumedQuantity"]) for r in rows
                 if r["SkuMeter"] == "Cached Input Tokens")
    assert cached == sum(r.cached_tokens or 0 for r in inside)


def test_a_tenant_export_has_its_rows_only_and_no_idle_time(store_url: str) -> None:
    ledger(store_url)
    rows = export(store_url, tenant="globex")
    assert rows and {r["SubAccountId"] for r in rows} == {"globex"}
    assert "Idle Instance Hours" not in {r["SkuMeter"] for r in rows}
    assert all(json.loads(r["Tags"])["tenant"] == "globex" for r in rows)


def _day(record: RequestRecord) -> str:
    return iso(record.received_at)[:10]
