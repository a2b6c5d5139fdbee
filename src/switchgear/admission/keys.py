"""API keys: created with a secret shown once, stored only as a SHA-256 digest, compared in
constant time, identified by a short visible prefix; scoped to models, owned by a tenant, with
optional limits of their own. Every replica's ring follows the store: a key created, revoked or
deleted on another replica is seen within ``governance.poll_interval_s``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from switchgear.store.base import RecordStore
from switchgear.store.follow import Follower
from switchgear.store.migrations import API_KEY_LIMITS, API_KEYS, placeholders

#: Every Switchgear key starts so; the visible prefix is this and the next eight characters.
TOKEN_START = "sg-"
PREFIX_LENGTH = len(TOKEN_START) + 8
#: How often (seconds) an unknown prefix may trigger a reload from the store, so a key made on
#: another replica works within about this long, and a flood of bad keys costs few queries.
RELOAD_INTERVAL = 1.0
#: The ``api_keys`` columns, in the order of ``ApiKey.row``.
COLUMNS = (*API_KEYS, *API_KEY_LIMITS)
#: One query whose answer changes whenever a key is created, revoked or deleted anywhere: how
#: many keys, how many revoked (revocation is one-way, so clocks that disagree cannot hide one),
#: the newest creation and revocation times. ``marker_of`` counts the same in a ring.
MARKER = "SELECT count(*), count(revoked_at), max(created_at), max(revoked_at) FROM api_keys"
#: ``MARKER``'s answer.
Marker = tuple[int, int, float | None, float | None]
#: How many verified tokens a ring remembers (then it starts over): a bound on memory however
#: many keys call.
REMEMBERED_TOKENS = 4096
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
class KeyLimits:
    """A key's own limits, each used instead of the config's per-key value for this key
    (``limits.per_key`` rpm/tpm, ``limits.budgets.per_key`` daily/monthly); None: the config's."""

    rpm: int | None = None
    tpm: int | None = None
    daily: float | None = None
    monthly: float | None = None

    def public(self) -> dict[str, Any]:
        """As the admin API takes and shows them: ``limits`` and ``budget``."""
        return {"limits": {"rpm": self.rpm, "tpm": self.tpm},
                "budget": {"daily": self.daily, "monthly": self.monthly}}

    @property
    def custom(self) -> bool:
        """Whether any limit of its own is set."""
        return self != NO_LIMITS


NO_LIMITS = KeyLimits()


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
    limits: KeyLimits = NO_LIMITS

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
                "expires_at": self.expires_at, "revoked_at": self.revoked_at,
                **self.limits.public()}

    def row(self) -> tuple[object, ...]:
        """The key as an ``api_keys`` row."""
        own = self.limits
        return (self.key_id, self.prefix, self.digest, self.tenant, self.role.value, self.name,
                json.dumps(list(self.scopes)), self.feature, self.tier, self.created_at,
                self.expires_at, self.revoked_at, own.rpm, own.tpm, own.daily, own.monthly)

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> ApiKey:
        """A key from an ``api_keys`` row."""
        (key_id, prefix, hashed, tenant, role, name, scopes, feature, tier, created_at,
         expires_at, revoked_at, rpm, tpm, daily, monthly) = row
        return cls(key_id, prefix, hashed, tenant, Role(role), name, tuple(json.loads(scopes)),
                   feature, tier, created_at, expires_at, revoked_at,
                   KeyLimits(rpm, tpm, daily, monthly))


def new_key(tenant: str, role: Role, name: str, scopes: Sequence[str] = (),
            feature: str | None = None, tier: str = "standard",
            expires_in: float | None = None,
            limits: KeyLimits = NO_LIMITS) -> tuple[ApiKey, str]:
    """A fresh key and its secret token (shown once, never stored)."""
    token = TOKEN_START + secrets.token_urlsafe(32)
    now = time.time()
    key = ApiKey(key_id="key_" + secrets.token_hex(8), prefix=token[:PREFIX_LENGTH],
                 digest=digest(token), tenant=tenant, role=role, name=name,
                 scopes=tuple(scopes), feature=feature, tier=tier, created_at=now,
                 expires_at=now + expires_in if expires_in else None, limits=limits)
    return key, token


def marker_of(keys: Iterable[ApiKey]) -> Marker:
    """``MARKER``'s figures for ``keys``."""
    count = revoked = 0
    created: float | None = None
    last_revoked: float | None = None
    for key in keys:
        count += 1
        created = key.created_at if created is None else max(created, key.created_at)
        if key.revoked_at is not None:
            revoked += 1
            last_revoked = (key.revoked_at if last_revoked is None
                            else max(last_revoked, key.revoked_at))
    return count, revoked, created, last_revoked


class KeyRing:
    """The keys, kept in memory by prefix (and id) and persisted in the store's ``api_keys``
    table. Changes made here apply at once; changes made on other replicas arrive through
    ``follow`` (and an unknown prefix reloads, at most every RELOAD_INTERVAL)."""

    def __init__(self, store: RecordStore, bootstrap: ApiKey | None = None) -> None:
        self.store = store
        self.bootstrap = bootstrap
        self._by_prefix: dict[str, list[ApiKey]] = {}
        self._by_id: dict[str, ApiKey] = {}
        self._marker: Marker = marker_of(())
        #: Tokens ``verify`` matched to an active key, forgotten whenever any key changes.
        self._verified: dict[str, ApiKey] = {}
        self._loaded_at = float("-inf")
        #: Held by every change to the ring, so a reload never undoes a local revocation.
        self._lock = asyncio.Lock()
        self._follower: KeyFollower | None = None
        marks = placeholders(store.dialect, len(COLUMNS))
        self._insert = (f"INSERT INTO api_keys ({', '.join(c.name for c in COLUMNS)}) "
                        f"VALUES ({marks})")
        one = placeholders(store.dialect, 2).split(", ")
        self._revoke = (f"UPDATE api_keys SET revoked_at = {one[0]} "
                        f"WHERE key_id = {one[1]} AND revoked_at IS NULL")
        self._select = f"SELECT {', '.join(c.name for c in COLUMNS)} FROM api_keys"

    @property
    def empty(self) -> bool:
        """No key exists at all (besides the bootstrap admin key)."""
        return not self._by_id

    async def load(self) -> None:
        """Read every key from the store."""
        async with self._lock:
            await self._load()

    async def _load(self) -> None:
        keys = [ApiKey.of_row(row) for row in await self.store.rows(self._select)]
        self._index(keys)
        self._loaded_at = time.monotonic()

    def _index(self, keys: Iterable[ApiKey]) -> None:
        by_prefix: dict[str, list[ApiKey]] = {}
        by_id = {}
        for key in keys:
            by_prefix.setdefault(key.prefix, []).append(key)
            by_id[key.key_id] = key
        self._by_prefix, self._by_id = by_prefix, by_id
        self._marker = marker_of(by_id.values())
        self._verified = {}

    async def refresh(self) -> bool:
        """Reload if the store's keys differ from these (one aggregate query); whether it did."""
        (stored,) = await self.store.rows(MARKER)
        if tuple(stored) == self._marker:
            return False
        await self.load()
        return True

    def follow(self, interval: Callable[[], float]) -> None:
        """Follow changes made on other replicas: ``refresh`` every ``interval()`` seconds, in
        the background, until ``stop``."""
        self._follower = KeyFollower(self, interval)
        self._follower.start()

    async def stop(self) -> None:
        """Stop following the store."""
        if self._follower is not None:
            await self._follower.stop()

    def all(self) -> list[ApiKey]:
        """Every stored key, oldest first."""
        return sorted(self._by_id.values(), key=lambda k: k.created_at)

    async def create(self, tenant: str, role: Role, name: str, scopes: Sequence[str] = (),
                     feature: str | None = None, tier: str = "standard",
                     expires_in: float | None = None,
                     limits: KeyLimits = NO_LIMITS) -> tuple[ApiKey, str]:
        """Make and store a key; returns it and its secret (the only time the secret exists)."""
        key, token = new_key(tenant, role, name, scopes, feature, tier, expires_in, limits)
        async with self._lock:
            await self.store.execute(self._insert, key.row())
            self._index([*self._by_id.values(), key])
        return key, token

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key now; the revoked key, or None if there is no such active key."""
        now = time.time()
        async with self._lock:
            if not await self.store.execute(self._revoke, (now, key_id)):
                return None
            key = self._by_id.get(key_id)
            if key is None:  # made elsewhere and not seen here yet
                await self._load()
            else:
                revoked = replace(key, revoked_at=now)
                self._index(revoked if k.key_id == key_id else k for k in self._by_id.values())
            return self._by_id.get(key_id)

    def find(self, key_id: str) -> ApiKey | None:
        """The key with this id, if any."""
        return self._by_id.get(key_id)

    def limits(self, key_id: str) -> KeyLimits:
        """The key's own limits (none for a key not held here, such as the bootstrap key)."""
        key = self._by_id.get(key_id)
        return NO_LIMITS if key is None else key.limits

    def remembered(self, token: str) -> ApiKey | None:
        """The key ``verify`` matched ``token`` to, if no key changed since and it is still
        active (None: ``verify`` must tell); without hashing or awaiting anything."""
        key = self._verified.get(token)
        return key if key is not None and key.active(time.time()) else None

    async def verify(self, token: str) -> ApiKey | None:
        """The active key whose secret is ``token``, or None."""
        key = self.remembered(token)
        if key is None:
            key = await self._verify(token)
            if key is not None:
                self._remember(token, key)
        return key

    def _remember(self, token: str, key: ApiKey) -> None:
        if len(self._verified) >= REMEMBERED_TOKENS:
            self._verified = {}
        self._verified[token] = key

    async def _verify(self, token: str) -> ApiKey | None:
        bootstrap = self.bootstrap
        if bootstrap is not None and hmac.compare_digest(digest(token), bootstrap.digest):
            return bootstrap
        if not token.startswith(TOKEN_START):
            return None
        prefix = token[:PREFIX_LENGTH]
        candidates = self._by_prefix.get(prefix)
        if candidates is None and self._may_reload():
            async with self._lock:  # made on another replica since we last looked?
                if self._may_reload():  # not while waiting for the lock
                    await self._load()
            candidates = self._by_prefix.get(prefix)
        hashed = digest(token)
        now = time.time()
        for key in candidates or ():
            if hmac.compare_digest(hashed, key.digest):
                return key if key.active(now) else None
        return None

    def _may_reload(self) -> bool:
        return time.monotonic() - self._loaded_at >= RELOAD_INTERVAL


class KeyFollower(Follower):
    """Keeps a KeyRing in step with the store: reloads it when a key was created, revoked or
    deleted on any replica."""

    task_name = "key-follower"
    what = "changed API keys"

    def __init__(self, ring: KeyRing, interval: Callable[[], float]) -> None:
        super().__init__(interval)
        self.ring = ring

    def start(self) -> None:
        """Follow the store in the background."""
        self._launch()

    async def check(self) -> None:
        """Reload the ring if the store's keys changed."""
        await self.ring.refresh()


def bootstrap_key(token: str) -> ApiKey:
    """The admin key given in the environment: never stored, always admin."""
    return ApiKey(key_id=BOOTSTRAP_KEY_ID, prefix=token[:PREFIX_LENGTH], digest=digest(token),
                  tenant="admin", role=Role.ADMIN, name="bootstrap admin key (environment)")
