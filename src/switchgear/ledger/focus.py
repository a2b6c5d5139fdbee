"""The ledger as a FinOps FOCUS dataset (CSV): one row per UTC day, tenant, feature, deployment
and meter (input, cached input and output tokens; busy and idle instance-hours).

Columns are FOCUS 1.0's with 1.1's ``SkuMeter``; every mandatory one is present, dates are UTC
ISO 8601 with the charge period's end exclusive, and costs are plain decimals. There are no
discounts, so BilledCost = EffectiveCost = ListCost = ContractedCost.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from switchgear.config import Config, LedgerConfig, Price
from switchgear.ledger.history import PriceHistory
from switchgear.ledger.marginal import InstanceTime
from switchgear.ledger.rollup import HOUR, NONE, SERVED_ALIAS, bucket, iso, summed
from switchgear.store.base import RecordStore
from switchgear.store.queries import DAY, Period

COLUMNS: tuple[str, ...] = (
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart",
    "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName",
    "CommitmentDiscountStatus", "CommitmentDiscountType", "ConsumedQuantity", "ConsumedUnit",
    "ContractedCost", "ContractedUnitPrice", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "ListUnitPrice", "PricingCategory", "PricingQuantity", "PricingUnit", "ProviderName",
    "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType",
    "ServiceCategory", "ServiceName", "SkuId", "SkuMeter", "SkuPriceId", "SubAccountId",
    "SubAccountName", "Tags",
)

TOKENS = "1000000 Tokens"


@dataclass(frozen=True, slots=True)
class Meter:
    """What a row measures: its SkuMeter, consumed unit, pricing unit and units per price."""

    name: str
    consumed_unit: str
    pricing_unit: str
    per_price: float


INPUT = Meter("Input Tokens", "Tokens", TOKENS, 1_000_000)
CACHED = Meter("Cached Input Tokens", "Tokens", TOKENS, 1_000_000)
OUTPUT = Meter("Output Tokens", "Tokens", TOKENS, 1_000_000)
UNSPLIT = Meter("Tokens", "Tokens", TOKENS, 1_000_000)  # rows costed before migration 10
BUSY = Meter("Instance Hours", "Hours", "Hours", 1)
IDLE = Meter("Idle Instance Hours", "Hours", "Hours", 1)


def decimal(value: float) -> str:
    """A FOCUS decimal: plain notation, no exponent, no needless zeros."""
    text = f"{value:.12f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _month(moment: float) -> tuple[str, str]:
    day = datetime.fromtimestamp(moment, UTC)
    start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return iso(start.timestamp()), iso(end.timestamp())


class FocusWriter:
    """Builds the rows of one export."""

    def __init__(self, ledger: LedgerConfig, prices: dict[tuple[str, str], Price]) -> None:
        self.ledger = ledger
        self.prices = prices
        self.rows: list[dict[str, str]] = []

    def add(self, charged: Period, alias: str, deployment: str, meter: Meter, quantity: float,
            cost: float, tenant: str | None, feature: str | None) -> None:
        """One charge row (skipped when it measures nothing and costs nothing)."""
        if quantity == 0 and cost == 0:
            return
        price = self.prices.get((alias, deployment))
        unit_price = _unit_price(price, meter)
        billing_start, billing_end = _month(charged.start)
        resource = f"{alias}/{deployment}"
        tags = {"model": alias, "deployment": deployment}
        if tenant is not None:
            tags["tenant"] = tenant
        if feature is not None:
            tags["feature"] = feature
        account = tenant or self.ledger.billing_account
        self.rows.append({
            "BilledCost": decimal(cost), "EffectiveCost": decimal(cost),
            "ListCost": decimal(cost), "ContractedCost": decimal(cost),
            "BillingAccountId": self.ledger.billing_account,
            "BillingAccountName": self.ledger.billing_account,
            "BillingCurrency": self.ledger.currency,
            "BillingPeriodStart": billing_start, "BillingPeriodEnd": billing_end,
            "ChargePeriodStart": iso(charged.start), "ChargePeriodEnd": iso(charged.end),
            "ChargeCategory": "Usage", "ChargeFrequency": "Usage-Based",
            "ChargeDescription": f"{meter.name} of {alias} on {deployment}",
            "ConsumedQuantity": decimal(quantity), "ConsumedUnit": meter.consumed_unit,
            "PricingQuantity": decimal(quantity / meter.per_price),
            "PricingUnit": meter.pricing_unit, "PricingCategory": "Standard",
            "ListUnitPrice": "" if unit_price is None else decimal(unit_price),
            "ContractedUnitPrice": "" if unit_price is None else decimal(unit_price),
            "InvoiceIssuerName": self.ledger.provider, "ProviderName": self.ledger.provider,
            "PublisherName": self.ledger.provider,
            "ResourceId": resource, "ResourceName": deployment, "ResourceType": "Model Deployment",
            "ServiceCategory": "AI and Machine Learning", "ServiceName": alias,
            "SkuId": f"{resource}/{meter.name}", "SkuPriceId": f"{resource}/{meter.name}",
            "SkuMeter": meter.name, "SubAccountId": account, "SubAccountName": account,
            "Tags": json.dumps(tags, sort_keys=True),
        })

    def csv(self) -> str:
        """The rows as CSV text, header first; absent values are empty (null)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()


def _unit_price(price: Price | None, meter: Meter) -> float | None:
    if price is None:
        return None
    return {INPUT.name: price.input_per_million, CACHED.name: price.cached_price,
            OUTPUT.name: price.output_per_million, UNSPLIT.name: None,
            BUSY.name: price.instance_per_hour, IDLE.name: price.instance_per_hour}[meter.name]


#: A day's charges of one (tenant, feature, alias, deployment), from the rows and the rollups.
CHARGE_SUMS = ("SUM(prompt_tokens - COALESCE(cached_tokens, 0))", "SUM(COALESCE(cached_tokens, 0))",
               "SUM(completion_tokens)", "SUM(COALESCE(input_cost, 0))",
               "SUM(COALESCE(cached_cost, 0))", "SUM(COALESCE(output_cost, 0))",
               "SUM(COALESCE(busy_s, 0))", "SUM(COALESCE(instance_cost, 0))", "SUM(cost)")


async def focus_export(store: RecordStore, ledger: LedgerConfig,
                       prices: dict[tuple[str, str], Price], period: Period,
                       tenant: str | None = None,
                       versions: Sequence[tuple[float, Config]] | None = None) -> str:
    """The FOCUS CSV of ``period`` (of one tenant, unless None; only the whole-platform export
    has the idle instance-hours, which belong to no tenant), charged only while a deployment
    existed by the config ``versions`` in force (as ``cost_report`` takes them; None: the live
    ``prices`` all along). Days whose rows retention removed are charged from the rollups."""
    writer = FocusWriter(ledger, prices)
    days = {int(part.start // DAY): part for part in period.days()}
    used: dict[tuple[int, str, str], tuple[float, float]] = {}
    for row in await summed(
            store, lambda source: [bucket(store.dialect, DAY, source.time), "tenant", "feature",
                                   SERVED_ALIAS, "deployment"],
            CHARGE_SUMS, period, tenant, " AND deployment IS NOT NULL"):
        number, owner, feature, alias, deployment = int(row[0]), str(row[1]), row[2], \
            str(row[3]), str(row[4])
        prompt, cached, completion, input_cost, cached_cost, output_cost, busy, instance_cost, \
            cost = (float(value or 0) for value in row[5:])
        price = prices.get((alias, deployment))
        concurrency = price.concurrency if price is not None else 1
        charged = days[number]
        parts: Iterable[tuple[Meter, float, float]] = (
            (INPUT, prompt, input_cost), (CACHED, cached, cached_cost),
            (OUTPUT, completion, output_cost),
            (BUSY, busy / concurrency / HOUR, instance_cost),
            (UNSPLIT, 0.0, cost - input_cost - cached_cost - output_cost - instance_cost))
        for meter, quantity, money in parts:
            if meter is UNSPLIT and abs(money) < 1e-12:
                continue
            writer.add(charged, alias, deployment, meter, quantity, money, owner,
                       None if feature in (None, NONE) else str(feature))
        busy_total, cost_total = used.get((number, alias, deployment), (0.0, 0.0))
        used[(number, alias, deployment)] = (busy_total + busy, cost_total + instance_cost)
    if tenant is None:
        for number, charged in days.items():
            history = PriceHistory.either(versions, prices, charged)
            for (alias, deployment), stretches in sorted(history.stretches.items()):
                hosted = [stretch for stretch in stretches if stretch.price.self_hosted]
                if not hosted:
                    continue
                busy, instance_cost = used.get((number, alias, deployment), (0.0, 0.0))
                time = InstanceTime.over(hosted, busy, instance_cost)
                hours = sum(stretch.price.instances * stretch.seconds for stretch in hosted) / HOUR
                writer.add(charged, alias, deployment, IDLE,
                           max(hours * (1 - time.utilization), 0.0), time.idle_cost, None, None)
    return writer.csv()
