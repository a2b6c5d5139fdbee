"""Admit: an unidentified request is refused where keys are required; budgets and rate limits are
taken before the next stage runs, and a request over them goes no further."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import NextStage, chained, config, make_exchange

from switchgear.admission.budgets import (
    Budget,
    BudgetAlert,
    BudgetExceeded,
    InProcessBudgets,
    Period,
)
from switchgear.admission.keys import KeyRing
from switchgear.admission.limits import InProcessLimiter, RateLimitExceeded, Reservation
from switchgear.errors import AuthenticationFailed
from switchgear.exchange import Principal
from switchgear.pipeline.admit import Admit, Authenticator, Quotas
from switchgear.store import open_store


def admit(after: NextStage, authenticator: Authenticator | None = None,
          **limits: Any) -> Admit:
    """Admit with in-process limits and budgets from a ``limits:`` section, open unless an
    ``authenticator`` is given, chained to ``after``."""
    quotas = Quotas(InProcessLimiter(), InProcessBudgets(), config(limits=limits).limits)
    return chained(Admit(authenticator or Authenticator(None), quotas), after)


def keys_required(tmp_path: Path) -> Authenticator:
    """An authenticator over a key ring: keys are required (the ring is never read here)."""
    return Authenticator(KeyRing(open_store(f"sqlite:///{tmp_path}/keys.db")))


def headers(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Response headers as text, by name."""
    return {name.decode(): value.decode() for name, value in pairs}


async def test_in_open_mode_an_anonymous_request_is_admitted() -> None:
    after = NextStage()
    exchange = make_exchange()
    await admit(after)(exchange)
    assert after.calls == 1 and after.seen[0].admitted is not None
    assert exchange.response_headers == [] and exchange.reservation is None  # no limit applies


async def test_an_unidentified_request_is_refused_where_keys_are_required(
        tmp_path: Path) -> None:
    after = NextStage()
    stage = admit(after, keys_required(tmp_path))
    exchange = make_exchange()
    with pytest.raises(AuthenticationFailed) as refused:
        await stage(exchange)
    assert refused.value.status == 401
    assert after.calls == 0 and exchange.admitted is None
    identified = make_exchange(principal=Principal(tenant="acme", key_id="k1"))
    await stage(identified)
    assert after.exchanges == [identified]


async def test_rate_limits_are_taken_and_a_request_over_them_is_a_429_with_headers() -> None:
    after = NextStage()
    stage = admit(after, tenants={"acme": {"rpm": 2}})
    admitted = [make_exchange(principal=Principal(tenant="acme")) for _ in range(2)]
    for exchange in admitted:
        await stage(exchange)
        assert isinstance(exchange.reservation, Reservation)
    assert [headers(e.response_headers)["x-ratelimit-remaining-requests"]
            for e in admitted] == ["1", "0"]
    over = make_exchange(principal=Principal(tenant="acme"))
    with pytest.raises(RateLimitExceeded) as refused:
        await stage(over)
    error = refused.value
    assert error.status == 429 and error.retry_after is not None and error.retry_after > 0
    assert headers(list(error.headers))["x-ratelimit-limit-requests"] == "2"
    assert headers(list(error.headers))["x-ratelimit-remaining-requests"] == "0"
    assert after.calls == 2 and over.admitted is None and over.reservation is None
    await stage(make_exchange(principal=Principal(tenant="globex")))  # another tenant's own
    assert after.calls == 3


async def test_a_request_over_its_budget_is_refused_before_the_next_stage() -> None:
    after = NextStage()
    stage = admit(after, budgets={"tenants": {"acme": {"daily": 1.0}}})
    spender = make_exchange(principal=Principal(tenant="acme"))
    await stage(spender)
    spender.cost = 1.0
    stage.quotas.settle(spender)  # the Recorder step, once the request has ended
    await stage.quotas.aclose()  # the settlement runs in the background
    with pytest.raises(BudgetExceeded) as refused:
        await stage(make_exchange(principal=Principal(tenant="acme")))
    assert refused.value.status == 429 and refused.value.code == "insufficient_quota"
    assert after.calls == 1


async def test_in_process_quotas_admit_and_settle_at_once() -> None:
    """This process's own limits and budgets take and settle without awaiting anything: the
    spend counts as soon as the request is recorded, with nothing left running."""
    after = NextStage()
    stage = admit(after, tenants={"acme": {"tpm": 1000}},
                  budgets={"tenants": {"acme": {"daily": 1.0}}})
    quotas = stage.quotas
    assert quotas.immediate
    spender = make_exchange(principal=Principal(tenant="acme"))
    quotas.admit_now(spender)
    assert isinstance(spender.reservation, Reservation)
    spender.cost = 1.0
    quotas.settle(spender)
    assert spender.reservation is None and not quotas._settling
    with pytest.raises(BudgetExceeded):
        quotas.admit_now(make_exchange(principal=Principal(tenant="acme")))
    free = make_exchange(principal=Principal(tenant="acme"))
    free.cost = -1.0  # a cost below zero counts nowhere
    quotas.settle(free)
    assert after.calls == 0


class SharedBudgets:
    """Budgets kept elsewhere, as Redis's are (here in-process underneath): awaited."""

    def __init__(self) -> None:
        self.inner = InProcessBudgets()

    async def check(self, budgets: Sequence[Budget]) -> None:
        await self.inner.check(budgets)

    async def add(self, budgets: Sequence[Budget], cost: float) -> list[BudgetAlert]:
        return await self.inner.add(budgets, cost)

    async def spent(self, budget: Budget) -> dict[Period, float]:
        return await self.inner.spent(budget)


async def test_shared_quotas_are_awaited_and_settled_in_the_background() -> None:
    after = NextStage()
    budgets = SharedBudgets()
    limits = config(limits={"budgets": {"tenants": {"acme": {"daily": 1.0}}}}).limits
    stage = chained(Admit(Authenticator(None), Quotas(InProcessLimiter(), budgets, limits)),
                    after)
    assert not stage.quotas.immediate
    with pytest.raises(RuntimeError, match="in-process"):
        stage.quotas.admit_now(make_exchange())
    spender = make_exchange(principal=Principal(tenant="acme"))
    await stage(spender)
    spender.cost = 1.0
    stage.quotas.settle(spender)
    assert stage.quotas._settling  # in the background
    await stage.quotas.aclose()
    assert (await budgets.spent(Budget("tenant:acme")))[Period.DAY] == 1.0
    with pytest.raises(BudgetExceeded):
        await stage(make_exchange(principal=Principal(tenant="acme")))
    assert after.calls == 1
