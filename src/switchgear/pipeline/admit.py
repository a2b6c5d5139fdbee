"""The Admit stage: who is asking (API key → tenant, role, scopes) and may they call this model.

Limits, budgets and priority queues join this stage as they are built (issue 4).
"""

from __future__ import annotations

import time

from switchgear.admission.keys import ApiKey, KeyRing, Role
from switchgear.errors import AuthenticationFailed, Overloaded, PermissionDenied
from switchgear.exchange import Exchange, Principal
from switchgear.pipeline import Handler, Reply
from switchgear.store.base import StoreUnavailable

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


class Admit:
    """Fills in the Exchange's principal from its key, and refuses what the key may not do."""

    def __init__(self, next_stage: Handler, authenticator: Authenticator) -> None:
        self.next_stage = next_stage
        self.authenticator = authenticator

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
        exchange.admitted = time.time()
        return await self.next_stage(exchange)
