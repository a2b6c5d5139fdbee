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

from switchgear.admission.budgets import Budget, Budgets
from switchgear.admission.keys import NO_LIMITS, ApiKey, KeyLimits, KeyRing, Role
from switchgear.admission.limits import Limit, Limiter, Reservation
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
        key = await self.verify(token)
        if key is not None and key.role not in CALLERS:
            raise PermissionDenied(f"A {key.role.value} key cannot call models.")
        return key


def identify(exchange: Exchange, key: ApiKey | None) -> None:
    """Fill in the Exchange's principal and priority tier from the caller's verified ``key``
    (None in open mode); a model outside the key's scopes is a 403."""
    principal = exchange.principal
    if key is not None:
        if not key.allows(exchange.model):
            raise PermissionDenied(f"This key may not call the model '{exchange.model}'.",
                                   param="model")
        exchange.principal = Principal(tenant=key.tenant, key_id=key.key_id, user=principal.user,
                                       feature=principal.feature or key.feature,
                                       role=key.role.value)
    default_tier = key.tier if key is not None else "standard"
    exchange.priority = effective_tier(default_tier, exchange.requested_priority)


@dataclass(frozen=True, slots=True)
class _Applying:
    """The limits and budgets of one (key, tenant, model), worked out with the key's own
    limits ``own``."""

    own: KeyLimits
    limits: tuple[Limit, ...]
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
            found = self._applying[remembered] = _Applying(
                own, tuple(self.applicable(exchange)), tuple(self.applicable_budgets(exchange)))
        return found

    async def admit(self, exchange: Exchange) -> None:
        """Refuse a request over budget; take it from its limits, or raise a 429 with
        Retry-After and the ``x-ratelimit-*`` headers."""
        applying = self._quotas_of(exchange)
        budgets, limits = applying.budgets, applying.limits
        if budgets:
            await self.budgets.check(budgets)
        if not limits:
            return
        decision = await self.limiter.acquire(limits, estimated_tokens(exchange))
        if not decision.allowed:
            raise decision.error()
        exchange.reservation = decision.reservation
        exchange.response_headers.extend(decision.headers())

    def settle(self, exchange: Exchange) -> None:
        """A Recorder step: swap the reserved tokens for the ones really used and add the cost
        to the budgets (in the background: the answer is already on its way)."""
        reservation = exchange.reservation
        exchange.reservation = None
        budgets = self._quotas_of(exchange).budgets if exchange.cost else ()
        if not isinstance(reservation, Reservation) and not budgets:
            return
        task = asyncio.get_running_loop().create_task(self._settle(
            reservation if isinstance(reservation, Reservation) else None,
            exchange.usage.total_tokens, budgets, exchange.cost))
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
        await self.quotas.admit(exchange)
        exchange.admitted = time.time()
        return await self.next_stage(exchange)
