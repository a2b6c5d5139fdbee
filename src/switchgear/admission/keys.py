"""API keys: created with a secret shown once, stored only as a SHA-256 digest, compared in
constant time, identified by a short visible prefix; scoped to models, owned by a tenant."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from switchgear.store.base import RecordStore
from switchgear.store.migrations import API_KEYS, placeholders

#: Every Switchgear key starts so; the visible prefix is this and the next eight characters.
TOKEN_START = "sg-"
PREFIX_LENGTH = len(TOKEN_START) + 8
#: How often (seconds) an unknown prefix may trigger a reload from the store, so a key made on
#: another replica works within about this long, and a flood of bad keys costs no queries.
RELOAD_INTERVAL = 1.0
#: The id of the bootstrap admin key (the one given in the environment, never stored).
BOOTSTRAP_KEY_ID = "key_bootstrap"


class Role(StrEnum):
    """What a key may do, from everything down to calling models."""

    ADMIN = "admin"
    OPERATOR = "operator"
    APPROVER = "approver"
    VIEWER = "viewer"
    CLIENT = "client"


def digest(token: str) -> str:
    """The stored form of a secret (keys are 256-bit random, so a fast hash is enough)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key as stored: everything but the secret."""

    key_id: str
    prefix: str
    digest: str
    tenant: str
    role: Role
    name: str
    scopes: tuple[str, ...] = ()
    feature: str | None = None
    tier: str = "standard"
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None

    def active(self, now: float) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def allows(self, model: str) -> bool:
        """Whether the key may call ``model`` (no scopes: every model)."""
        return not self.scopes or model in self.scopes

    def public(self) -> dict[str, Any]:
        """What the admin API shows of the key (never the digest)."""
        return {"id": self.key_id, "prefix": self.prefix, "tenant": self.tenant,
                "role": self.role.value, "name": self.name, "scopes": list(self.scopes),
                "feature": self.feature, "tier": self.tier, "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at}

    def row(self) -> tuple[object, ...]:
        """The key as an ``api_keys`` row."""
        return (self.key_id, self.prefix, self.digest, self.tenant, self.role.value, self.name,
                json.dumps(list(self.scopes)), self.feature, self.tier, self.created_at,
                self.expires_at, self.revoked_at)

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> ApiKey:
        """A key from an ``api_keys`` row."""
        (key_id, prefix, hashed, tenant, role, name, scopes, feature, tier, created_at,
         expires_at, revoked_at) = row
        return cls(key_id, prefix, hashed, tenant, Role(role), name, tuple(json.loads(scopes)),
                   feature, tier, created_at, expires_at, revoked_at)


def new_key(tenant: str, role: Role, name: str, scopes: Sequence[str] = (),
            feature: str | None = None, tier: str = "standard",
            expires_in: float | None = None) -> tuple[ApiKey, str]:
    """A fresh key and its secret token (shown once, never stored)."""
    token = TOKEN_START + secrets.token_urlsafe(32)
    now = time.time()
    key = ApiKey(key_id="key_" + secrets.token_hex(8), prefix=token[:PREFIX_LENGTH],
                 digest=digest(token), tenant=tenant, role=role, name=name,
                 scopes=tuple(scopes), feature=feature, tier=tier, created_at=now,
                 expires_at=now + expires_in if expires_in else None)
    return key, token


class KeyRing:
    """The keys, kept in memory by prefix and persisted in the store's ``api_keys`` table."""

    def __init__(self, store: RecordStore, bootstrap: ApiKey | None = None) -> None:
        self.store = store
        self.bootstrap = bootstrap
        self._by_prefix: dict[str, list[ApiKey]] = {}
        self._loaded_at = float("-inf")
        marks = placeholders(store.dialect, len(API_KEYS))
        self._insert = (f"INSERT INTO api_keys ({', '.join(c.name for c in API_KEYS)}) "
                        f"VALUES ({marks})")
        one = placeholders(store.dialect, 2).split(", ")
        self._revoke = (f"UPDATE api_keys SET revoked_at = {one[0]} "
                        f"WHERE key_id = {one[1]} AND revoked_at IS NULL")
        self._select = f"SELECT {', '.join(c.name for c in API_KEYS)} FROM api_keys"

    @property
    def empty(self) -> bool:
        """No key exists at all (besides the bootstrap admin key)."""
        return not self._by_prefix

    async def load(self) -> None:
        """Read every key from the store."""
        index: dict[str, list[ApiKey]] = {}
        for row in await self.store.rows(self._select):
            key = ApiKey.of_row(row)
            index.setdefault(key.prefix, []).append(key)
        self._by_prefix = index
        self._loaded_at = time.monotonic()

    def all(self) -> list[ApiKey]:
        """Every stored key, oldest first."""
        return sorted((k for group in self._by_prefix.values() for k in group),
                      key=lambda k: k.created_at)

    async def create(self, tenant: str, role: Role, name: str, scopes: Sequence[str] = (),
                     feature: str | None = None, tier: str = "standard",
                     expires_in: float | None = None) -> tuple[ApiKey, str]:
        """Make and store a key; returns it and its secret (the only time the secret exists)."""
        key, token = new_key(tenant, role, name, scopes, feature, tier, expires_in)
        await self.store.execute(self._insert, key.row())
        self._by_prefix.setdefault(key.prefix, []).append(key)
        return key, token

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key now; the revoked key, or None if there is no such active key."""
        now = time.time()
        if not await self.store.execute(self._revoke, (now, key_id)):
            return None
        for group in self._by_prefix.values():
            for index, key in enumerate(group):
                if key.key_id == key_id:
                    group[index] = replace(key, revoked_at=now)
                    return group[index]
        await self.load()
        return next((k for k in self.all() if k.key_id == key_id), None)

    def find(self, key_id: str) -> ApiKey | None:
        """The key with this id, if any."""
        return next((k for k in self.all() if k.key_id == key_id), None)

    async def verify(self, token: str) -> ApiKey | None:
        """The active key whose secret is ``token``, or None."""
        bootstrap = self.bootstrap
        if bootstrap is not None and hmac.compare_digest(digest(token), bootstrap.digest):
            return bootstrap
        if not token.startswith(TOKEN_START):
            return None
        prefix = token[:PREFIX_LENGTH]
        candidates = self._by_prefix.get(prefix)
        if candidates is None and time.monotonic() - self._loaded_at >= RELOAD_INTERVAL:
            await self.load()  # made on another replica since we last looked?
            candidates = self._by_prefix.get(prefix)
        hashed = digest(token)
        now = time.time()
        for key in candidates or ():
            if hmac.compare_digest(hashed, key.digest):
                return key if key.active(now) else None
        return None


def bootstrap_key(token: str) -> ApiKey:
    """The admin key given in the environment: never stored, always admin."""
    return ApiKey(key_id=BOOTSTRAP_KEY_ID, prefix=token[:PREFIX_LENGTH], digest=digest(token),
                  tenant="admin", role=Role.ADMIN, name="bootstrap admin key (environment)")
