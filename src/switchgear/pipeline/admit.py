"""The Admit stage: who is asking (API key → tenant, role, scopes), may they call this model,
and do they fit their rate limits (tokens reserved now, settled when the request ends).

Budgets and priority queues join this stage as they are built (issue 4).
"""

from __future__ import annotations

import asyncio
import logging
import time

from switchgear.admission.keys import ApiKey, KeyRing, Role
from switchgear.admission.limits import Limit, Limiter, Reservation
from switchgear.admission.state import StateUnavailable
from switchgear.config import LimitsConfig
from switchgear.errors import AuthenticationFailed, Overloaded, PermissionDenied
from switchgear.exchange import Exchange, Principal
from switchgear.pipeline import Handler, Reply
from switchgear.pipeline.route import estimated_tokens
from switchgear.store.base import StoreUnavailable

log = logging.getLogger("switchgear.admission")

#: Roles whose keys may call models.
CALLERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.CLIENT})
TIERS = ("interactive", "standard", "batch")


def lower_tier(default: str, requested: str | None) -> str:
    """The tier a request runs at: its key's default, or a lower one it asked for."""
    if requested in TIERS and default in TIERS and TIERS.index(requested) > TIERS.index(default):
        return requested
    return default


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


class RateLimits:
    """Which limits apply to a request, and the limiter that enforces them together."""

    def __init__(self, limiter: Limiter, config: LimitsConfig) -> None:
        self.limiter = limiter
        self.config = config
        self._settling: set[asyncio.Task[None]] = set()

    def applicable(self, exchange: Exchange) -> list[Limit]:
        """The key's, the tenant's and the model's limits, where configured."""
        config, principal = self.config, exchange.principal
        limits = []
        if principal.key_id is not None and (config.per_key.rpm or config.per_key.tpm):
            limits.append(Limit(f"key:{principal.key_id}", config.per_key.rpm, config.per_key.tpm))
        for kind, name, table in (("tenant", principal.tenant, config.tenants),
                                  ("model", exchange.model, config.models)):
            values = table.get(name)
            if values is not None:
                limits.append(Limit(f"{kind}:{name}", values.rpm, values.tpm))
        return limits

    async def admit(self, exchange: Exchange) -> None:
        """Take the request from its limits, or raise a 429 with Retry-After and headers."""
        limits = self.applicable(exchange)
        if not limits:
            return
        decision = await self.limiter.acquire(limits, estimated_tokens(exchange))
        if not decision.allowed:
            raise decision.error()
        exchange.reservation = decision.reservation
        exchange.response_headers.extend(decision.headers())

    def settle(self, exchange: Exchange) -> None:
        """A Recorder step: swap the reserved tokens for the ones really used (in the background)."""
        reservation = exchange.reservation
        if not isinstance(reservation, Reservation):
            return
        exchange.reservation = None
        task = asyncio.get_running_loop().create_task(
            self._settle(reservation, exchange.usage.total_tokens))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, reservation: Reservation, used: int) -> None:
        try:
            await self.limiter.settle(reservation, used)
        except StateUnavailable:
            log.warning("could not settle %d reserved tokens: shared state unavailable",
                        reservation.tokens)

    async def drain(self) -> None:
        """Wait for settlements still running (at shutdown)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


class Admit:
    """Fills in the Exchange's principal from its key, refuses what the key may not do, and
    takes the request from its rate limits."""

    def __init__(self, next_stage: Handler, authenticator: Authenticator,
                 limits: RateLimits) -> None:
        self.next_stage = next_stage
        self.authenticator = authenticator
        self.limits = limits

    async def __call__(self, exchange: Exchange) -> Reply:
        token, exchange.credentials = exchange.credentials, None
        key = await self.authenticator.verify(token)
        principal = exchange.principal
        if key is not None:
            if key.role not in CALLERS:
                raise PermissionDenied(f"A {key.role.value} key cannot call models.")
            if not key.allows(exchange.model):
                raise PermissionDenied(f"This key may not call the model '{exchange.model}'.",
                                       param="model")
            exchange.principal = Principal(tenant=key.tenant, key_id=key.key_id,
                                           user=principal.user,
                                           feature=principal.feature or key.feature,
                                           role=key.role.value)
        default_tier = key.tier if key is not None else "standard"
        exchange.priority = lower_tier(default_tier, exchange.priority or None)
        await self.limits.admit(exchange)
        exchange.admitted = time.time()
        return await self.next_stage(exchange)
