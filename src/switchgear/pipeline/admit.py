"""Admission: who is asking (API key → tenant, role, scopes) and may they call this model —
checked by the gateway through ``Authenticator.caller`` (before the body is read) and
``identify`` (once the model is known) — then the Admit stage: are they within budget, and do
they fit their rate limits (tokens reserved now, settled with the real usage and cost when the
request ends). Priority tiers are the next stage, Prioritize.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from switchgear.admission.budgets import Budget, Budgets, InProcessBudgets
from switchgear.admission.keys import NO_LIMITS, ApiKey, KeyLimits, KeyRing, Role
from switchgear.admission.limits import (
    Decision,
    InProcessLimiter,
    Limit,
    Limiter,
    LimitPlan,
    Reservation,
)
from switchgear.admission.tiers import effective_tier
from switchgear.config import BudgetValues, LimitsConfig
from switchgear.errors import AuthenticationFailed, Overloaded, PermissionDenied
from switchgear.exchange import Exchange, Principal
from switchgear.pipeline import Reply, Stage
from switchgear.pipeline.route import estimated_tokens
from switchgear.store.base import StoreUnavailable
from switchgear.store.redis import StateUnavailable

log = logging.getLogger("switchgear.admission")

#: Roles whose keys may call models.
CALLERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.CLIENT})
#: How many (key, tenant, model)s ``Quotas`` remembers the limits and budgets of (then it
#: starts over): a bound on memory however many keys call.
REMEMBERED_QUOTAS = 4096


class Authenticator:
    """Turns a bearer token into a verified key (or refuses), for the OpenAI and admin APIs."""

    def __init__(self, keys: KeyRing | None) -> None:
        self.keys = keys

    @property
    def open(self) -> bool:
        """True when no key is required (loopback-only zero-setup mode)."""
        return self.keys is None

    async def verify(self, token: str | None) -> ApiKey | None:
        """The key for ``token``; None in open mode. A store outage is a 503, never a 401."""
        if self.keys is None:
            return None
        if not token:
            raise AuthenticationFailed("You didn't provide an API key. Send it in the "
                                       "Authorization header as 'Bearer YOUR_KEY'.")
        try:
            key = await self.keys.verify(token)
        except StoreUnavailable:
            raise Overloaded("API keys cannot be checked right now; try again shortly.",
                             retry_after=1) from None
        if key is None:
            shown = token[:7] + "****" if len(token) > 11 else "****"
            raise AuthenticationFailed(f"Incorrect API key provided: {shown}.")
        return key

    async def caller(self, token: str | None) -> ApiKey | None:
        """The key for ``token`` if it may call models (None in open mode): the gateway asks
        this before it reads a body, so nobody without a good key costs a parse."""
        keys = self.keys
        key = keys.remembered(token) if keys is not None and token else None
        if key is None:
            key = await self.verify(token)
        if key is not None and key.role not in CALLERS:
            raise PermissionDenied(f"A {key.role.value} key cannot call models.")
        return key


def identify(exchange: Exchange, key: ApiKey | None) -> None:
    """Fill in the Exchange's principal and priority tier from the caller's verified ``key``
    (None in open mode); a model outside the key's scopes is a 403."""
    if key is None:
        exchange.priority = effective_tier("standard", exchange.requested_priority)
        return
    if not key.allows(exchange.model):
        raise PermissionDenied(f"This key may not call the model '{exchange.model}'.",
                               param="model")
    principal = exchange.principal
    exchange.principal = Principal(key.tenant, key.key_id, principal.user,
                                   principal.feature or key.feature, key.role.value)
    exchange.priority = effective_tier(key.tier, exchange.requested_priority)


@dataclass(frozen=True, slots=True)
class _Applying:
    """The limits (planned: None when none applies) and budgets of one (key, tenant, model),
    worked out with the key's own limits ``own``."""

    own: KeyLimits
    plan: LimitPlan | None
    budgets: tuple[Budget, ...]


class Quotas:
    """Which rate limits and budgets apply to a request; takes it from them at admission and
    settles its real tokens and cost when it ends. A key's own limits (``keys``) replace the
    config's per-key ones, value by value."""

    def __init__(self, limiter: Limiter, budgets: Budgets, config: LimitsConfig,
                 on_close: Callable[[], Awaitable[None]] | None = None,
                 keys: KeyRing | None = None) -> None:
        self.limiter = limiter
        self.budgets = budgets
        self.config = config
        self.on_close = on_close
        self.keys = keys
        self._settling: set[asyncio.Task[None]] = set()
        self._applying: dict[tuple[str | None, str, str], _Applying] = {}
        #: The limiter and budgets when both are this process's own, which admit and settle
        #: without awaiting anything (``admit_now``); None when they are shared (Redis).
        self._local = ((limiter, budgets) if isinstance(limiter, InProcessLimiter)
                       and isinstance(budgets, InProcessBudgets) else None)

    @property
    def immediate(self) -> bool:
        """Whether ``admit_now`` may be used: the limits and budgets are this process's own."""
        return self._local is not None

    def _own(self, key_id: str) -> KeyLimits:
        return NO_LIMITS if self.keys is None else self.keys.limits(key_id)

    def applicable_budgets(self, exchange: Exchange) -> list[Budget]:
        """The key's and the tenant's budgets, where configured."""
        return self.budgets_for(exchange.principal.key_id, exchange.principal.tenant)

    def budgets_for(self, key_id: str | None, tenant: str) -> list[Budget]:
        """The budgets of key ``key_id`` (None: no key) and of ``tenant``, where configured."""
        config = self.config.budgets
        budgets = []
        if key_id is not None:
            own, values = self._own(key_id), config.per_key or BudgetValues()
            daily = values.daily if own.daily is None else own.daily
            monthly = values.monthly if own.monthly is None else own.monthly
            if daily is not None or monthly is not None:
                budgets.append(Budget(f"key:{key_id}", daily, monthly, values.soft))
        shared = config.tenants.get(tenant)
        if shared is not None:
            budgets.append(Budget(f"tenant:{tenant}", shared.daily, shared.monthly, shared.soft))
        return budgets

    def applicable(self, exchange: Exchange) -> list[Limit]:
        """The key's, the tenant's and the model's limits, where configured."""
        config, principal = self.config, exchange.principal
        limits = []
        if principal.key_id is not None:
            own = self._own(principal.key_id)
            rpm, tpm = own.rpm or config.per_key.rpm, own.tpm or config.per_key.tpm
            if rpm or tpm:
                limits.append(Limit(f"key:{principal.key_id}", rpm, tpm))
        for kind, name, table in (("tenant", principal.tenant, config.tenants),
                                  ("model", exchange.model, config.models)):
            values = table.get(name)
            if values is not None:
                limits.append(Limit(f"{kind}:{name}", values.rpm, values.tpm))
        return limits

    def _quotas_of(self, exchange: Exchange) -> _Applying:
        """``applicable`` and ``applicable_budgets`` of ``exchange``, worked out once per
        key, tenant and model while the key's own limits stay the same (the config's cannot
        change: each config version has its own Quotas)."""
        principal = exchange.principal
        key_id = principal.key_id
        own = NO_LIMITS if key_id is None else self._own(key_id)
        remembered = (key_id, principal.tenant, exchange.model)
        found = self._applying.get(remembered)
        if found is None or found.own is not own:
            if len(self._applying) >= REMEMBERED_QUOTAS:
                self._applying.clear()
            limits = self.applicable(exchange)
            found = self._applying[remembered] = _Applying(
                own, LimitPlan(limits) if limits else None,
                tuple(self.applicable_budgets(exchange)))
        return found

    async def admit(self, exchange: Exchange) -> None:
        """Refuse a request over budget; take it from its limits, or raise a 429 with
        Retry-After and the ``x-ratelimit-*`` headers."""
        applying = self._quotas_of(exchange)
        if applying.budgets:
            await self.budgets.check(applying.budgets)
        if applying.plan is not None:
            _taken(exchange, await self.limiter.take(applying.plan, estimated_tokens(exchange)))

    def admit_now(self, exchange: Exchange) -> None:
        """``admit`` where the limits and budgets are this process's own (``immediate``),
        without awaiting anything."""
        if self._local is None:
            raise RuntimeError("admit_now needs in-process limits and budgets")
        limiter, budgets = self._local
        applying = self._quotas_of(exchange)
        if applying.budgets:
            budgets.check_now(applying.budgets)
        if applying.plan is not None:
            _taken(exchange, limiter.take_now(applying.plan, estimated_tokens(exchange)))

    def settle(self, exchange: Exchange) -> None:
        """A Recorder step: swap the reserved tokens for the ones really used and add the cost
        to the budgets (here and now when they are this process's own, else in the background:
        the answer is already on its way). A cost below zero counts nowhere."""
        reservation = exchange.reservation
        exchange.reservation = None
        if not isinstance(reservation, Reservation):
            reservation = None
        budgets = self._quotas_of(exchange).budgets if exchange.cost > 0 else ()
        if reservation is None and not budgets:
            return
        if self._local is not None:  # nothing to wait for: settled here and now
            limiter, counters = self._local
            if reservation is not None:
                limiter.settle_now(reservation, exchange.usage.total_tokens)
            if budgets:
                counters.add_now(budgets, exchange.cost)
            return
        task = asyncio.get_running_loop().create_task(self._settle(
            reservation, exchange.usage.total_tokens, budgets, exchange.cost))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, reservation: Reservation | None, used: int,
                      budgets: tuple[Budget, ...], cost: float) -> None:
        try:
            if reservation is not None:
                await self.limiter.settle(reservation, used)
            if budgets:
                await self.budgets.add(budgets, cost)
        except StateUnavailable:
            log.warning("could not settle a finished request's tokens and cost: shared state "
                        "unavailable")

    async def aclose(self) -> None:
        """Wait for settlements still running, then release the shared state (at shutdown)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        if self.on_close is not None:
            await self.on_close()


def _taken(exchange: Exchange, decision: Decision) -> None:
    """Hold what ``decision`` reserved for ``exchange`` and add its headers; 429 if refused."""
    if not decision.allowed:
        raise decision.error()
    exchange.reservation = decision.reservation
    exchange.response_headers.extend(decision.headers())


class Admit(Stage):
    """Takes the request from its rate limits and budgets. The gateway has already
    authenticated the caller (``Authenticator.caller``, before the body was read) and
    ``identify``-ed the Exchange; one that reaches here unidentified while keys are required
    is refused, never admitted."""

    def __init__(self, authenticator: Authenticator, quotas: Quotas) -> None:
        self.authenticator = authenticator
        self.quotas = quotas

    async def __call__(self, exchange: Exchange) -> Reply:
        if exchange.principal.key_id is None and not self.authenticator.open:
            raise AuthenticationFailed("You didn't provide an API key. Send it in the "
                                       "Authorization header as 'Bearer YOUR_KEY'.")
        quotas = self.quotas
        if quotas.immediate:
            quotas.admit_now(exchange)
        else:
            await quotas.admit(exchange)
        exchange.admitted = time.time()
        return await self.next_stage(exchange)
