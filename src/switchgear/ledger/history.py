"""Which config was in force when: each deployment's price over the part of a period it existed,
from the config version history (each version in force from its ``applied_at`` until the next
one's), so that instance time is charged only while a deployment existed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from switchgear.config import Config, Price
from switchgear.ledger.cost import PriceBook
from switchgear.store.queries import Period

#: Where a deployment sits: (served alias, deployment name).
Where = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Stretch:
    """A price a deployment had, and for how many seconds of the period."""

    price: Price
    seconds: float


@dataclass(frozen=True, slots=True)
class PriceHistory:
    """Each priced deployment's stretches over a period, and how they were found (``basis``:
    one line for the report)."""

    stretches: dict[Where, tuple[Stretch, ...]]
    basis: str

    def existed_s(self, where: Where) -> float:
        """The seconds of the period the deployment existed (with a price)."""
        return sum(stretch.seconds for stretch in self.stretches.get(where, ()))

    @classmethod
    def constant(cls, prices: Mapping[Where, Price], period: Period) -> PriceHistory:
        """The live config's ``prices`` over the whole period (no version history to go by)."""
        return cls({where: (Stretch(price, period.seconds),) for where, price in prices.items()},
                   "the live config over the whole period (no config version history)")

    @classmethod
    def either(cls, versions: Sequence[tuple[float, Config]] | None,
               prices: Mapping[Where, Price], period: Period) -> PriceHistory:
        """From ``versions`` where there are any, else the live ``prices`` all along."""
        return cls.of(versions, period) if versions else cls.constant(prices, period)

    @classmethod
    def of(cls, versions: Sequence[tuple[float, Config]], period: Period) -> PriceHistory:
        """From ``versions``, (applied at, config) pairs: each in force until the next one is
        applied. The period before the first version is taken as the first's (a store's
        records may be older than its version history: it began with migration 12)."""
        if not versions:
            raise ValueError("no config versions: use PriceHistory.constant")
        ordered = sorted(versions, key=lambda version: version[0])
        starts = [period.start, *(applied for applied, _ in ordered[1:])]
        ends = [*starts[1:], period.end]
        stretches: dict[Where, list[Stretch]] = {}
        in_force = 0
        for (_, config), start, end in zip(ordered, starts, ends, strict=True):
            seconds = min(end, period.end) - max(start, period.start)
            if seconds <= 0:
                continue
            in_force += 1
            for where, price in PriceBook.of(config).prices.items():
                stretches.setdefault(where, []).append(Stretch(price, seconds))
        basis = f"config versions ({in_force} in force in the period)"
        if ordered[0][0] > period.start:
            basis += ("; before the first one was applied, its deployments are assumed "
                      "to have run")
        return cls({where: tuple(spans) for where, spans in stretches.items()}, basis)
