"""The audit trail: an append-only, hash-chained log of admin actions in the store's audit_log.

Each entry holds the previous entry's hash and its own: HMAC-SHA256, keyed with the server's
audit key (secret.py), over the previous hash and the entry's canonical encoding (a compact JSON
array of its fields, ``seq`` included). Without the key nobody can write an entry that fits the
chain, so ``verify.py`` names the first entry altered, removed or reordered. The first entry's
previous hash is the key's fingerprint (secret.py), so a check with another key can say so
instead of calling the trail tampered (trails begun before held ``GENESIS``, still accepted).

Appends are serialized across replicas by the sequence number, the table's primary key: an
append reads the head, inserts ``seq + 1`` with ``ON CONFLICT DO NOTHING`` and, if another replica
took that number first, reads the new head and tries again. Only admin actions are audited, never
inference requests.

Actions: ``admin.access``, ``admin.denied``, ``admin.auth_failed`` (gateway/admin.py),
``key.create``, ``key.revoke``, and for config changes ``config.propose``, ``config.approve``,
``config.reject``, ``config.apply``, ``config.rollback``, ``config.break_glass`` (logged at
WARNING as well).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from switchgear.admission.keys import BOOTSTRAP_KEY_ID, ApiKey
from switchgear.config import ConfigError
from switchgear.governance.secret import AuditKey, fingerprint, key_id
from switchgear.store.base import RecordStore, StoreUnavailable
from switchgear.store.migrations import AUDIT_LOG, placeholders

log = logging.getLogger("switchgear.audit")

#: The previous hash of the first entry in trails begun before it named its key (now the key's
#: fingerprint, ``genesis``).
GENESIS = "0" * 64
#: The actor of the environment's bootstrap admin key, and of calls without a key.
BOOTSTRAP = "bootstrap"
ANONYMOUS = "anonymous"
#: Appends tried before giving up when other replicas keep taking the next sequence number.
MAX_TRIES = 50
#: Actions logged at WARNING when recorded, not just INFO.
LOUD = frozenset({"config.break_glass"})
#: The most entries one listing returns.
MAX_LIST = 1000

COLUMNS = ", ".join(column.name for column in AUDIT_LOG)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited action: who (actor, role, tenant) did what (action, target, details as
    canonical JSON text), when and from where, and its place in the chain."""

    seq: int
    at: float
    actor: str
    role: str | None
    tenant: str | None
    source: str | None
    action: str
    target: str | None
    details: str
    prev_hash: str
    hash: str

    def canonical(self) -> bytes:
        """The fields the hash covers, as compact JSON (``details`` as stored)."""
        return json.dumps([self.seq, self.at, self.actor, self.role, self.tenant, self.source,
                           self.action, self.target, self.details],
                          separators=(",", ":"), ensure_ascii=False).encode()

    def seal(self, secret: bytes) -> str:
        """The entry's hash: HMAC-SHA256 keyed with ``secret`` over its previous hash and its
        canonical encoding."""
        message = self.prev_hash.encode() + b"\n" + self.canonical()
        return hmac.new(secret, message, hashlib.sha256).hexdigest()

    def sealed_by(self, secret: bytes, seq: int | None = None) -> bool:
        """Whether the stored hash is this entry's (at ``seq`` instead of its own, if given)."""
        entry = self if seq is None else replace(self, seq=seq)
        return hmac.compare_digest(entry.seal(secret), self.hash)

    def row(self) -> tuple[object, ...]:
        """The entry as an ``audit_log`` row."""
        return tuple(getattr(self, column.name) for column in AUDIT_LOG)

    def public(self) -> dict[str, Any]:
        """The entry as the admin API shows it (``details`` parsed)."""
        shown = asdict(self)
        shown["details"] = json.loads(self.details)
        return shown


def genesis(secret: bytes) -> str:
    """The previous hash of the first entry of a trail sealed with ``secret``: its fingerprint."""
    return fingerprint(secret)


def actor_of(key: ApiKey | None) -> str:
    """The actor an admin caller is recorded as: its key id, ``bootstrap`` (the environment's
    admin key), or ``anonymous`` (open mode)."""
    if key is None:
        return ANONYMOUS
    return BOOTSTRAP if key.key_id == BOOTSTRAP_KEY_ID else key.key_id


def canonical_details(details: Mapping[str, Any] | None) -> str:
    """``details`` as compact JSON with sorted keys."""
    return json.dumps(dict(details or {}), separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False, default=str)


class ForeignTrail(ConfigError):
    """The trail was sealed with another key: appending with this one would break the chain."""


class AuditTrail:
    """Appends to and reads the audit trail in ``store``, keyed from ``key`` (loaded at
    ``start``)."""

    def __init__(self, store: RecordStore, key: AuditKey) -> None:
        self.store = store
        self.key = key
        self._secret: bytes | None = None
        self._head: tuple[int, str] | None = None
        self._lock = asyncio.Lock()
        marks = placeholders(store.dialect, len(AUDIT_LOG))
        self._insert = (f"INSERT INTO audit_log ({COLUMNS}) VALUES ({marks}) "
                        "ON CONFLICT (seq) DO NOTHING")

    def start(self) -> None:
        """Load the key (generating the loopback dev key file if needed)."""
        self._secret = self.key.load(create=True)
        log.info("audit key from %s (key id %s)", self.key.source, key_id(self._secret))

    async def record(self, action: str, *, actor: str, role: str | None = None,
                     tenant: str | None = None, source: str | None = None,
                     target: str | None = None,
                     details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Append an entry and return it once stored; StoreUnavailable if it cannot be."""
        if self._secret is None:
            raise RuntimeError("the audit trail is not started")
        text = canonical_details(details)
        async with self._lock:  # one append at a time here; other replicas: the seq conflict
            for _ in range(MAX_TRIES):
                seq, prev_hash = self._head or await self._read_head(self._secret)
                draft = AuditEntry(seq + 1, time.time(), actor, role, tenant, source, action,
                                   target, text, prev_hash, "")
                entry = replace(draft, hash=draft.seal(self._secret))
                if await self.store.execute(self._insert, entry.row()):
                    self._head = (entry.seq, entry.hash)
                    log.log(logging.WARNING if action in LOUD else logging.INFO,
                            "audit %d %s by %s on %s: %s", entry.seq, action, actor, target,
                            entry.hash)
                    return entry
                self._head = None  # another replica appended: read the new head
        raise StoreUnavailable(f"could not append to the audit trail in {MAX_TRIES} tries")

    async def record_by(self, key: ApiKey | None, action: str, *, source: str | None = None,
                        target: str | None = None,
                        details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Append an entry for an admin caller (its key; None in open mode)."""
        return await self.record(
            action, actor=actor_of(key), role=None if key is None else key.role.value,
            tenant=None if key is None else key.tenant, source=source, target=target,
            details=details)

    async def entries(self, limit: int = 100, before: int | None = None,
                      action: str | None = None) -> list[AuditEntry]:
        """The newest entries (before sequence number ``before``, of ``action``), newest
        first."""
        wanted = {column: value for column, value in (("seq <", before), ("action =", action))
                  if value is not None}
        marks = placeholders(self.store.dialect, len(wanted) + 1).split(", ")
        where = " AND ".join(f"{test} {mark}" for test, mark in zip(wanted, marks, strict=False))
        sql = (f"SELECT {COLUMNS} FROM audit_log {'WHERE ' + where if where else ''} "
               f"ORDER BY seq DESC LIMIT {marks[-1]}")
        params = [*wanted.values(), max(1, min(limit, MAX_LIST))]
        return [AuditEntry(*row) for row in await self.store.rows(sql, params)]

    async def check_key(self) -> None:
        """Refuse to go on (``ForeignTrail``) when the trail's newest entry was sealed with
        another key: what this gateway appended would never verify with the trail's key."""
        if self._secret is None:
            raise RuntimeError("the audit trail is not started")
        self._head = await self._read_head(self._secret)

    async def _read_head(self, secret: bytes) -> tuple[int, str]:
        """The newest entry's number and hash (0 and the key's genesis for an empty trail);
        ``ForeignTrail`` if that entry was sealed with another key."""
        rows = await self.store.rows(f"SELECT {COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1")
        if not rows:
            return 0, genesis(secret)
        head = AuditEntry(*rows[0])
        if not head.sealed_by(secret):
            raise ForeignTrail(
                f"the audit trail in the store was sealed with another key than this gateway's "
                f"(from {self.key.source}, key id {key_id(secret)}): what it appended would not "
                f"verify. Start it with the trail's key ({self.key.env} wins over the key file; "
                f"`switchgear audit verify` names the trail's key id), or on a fresh store")
        return head.seq, head.hash


async def chain(store: RecordStore) -> list[AuditEntry]:
    """Every entry, in sequence order (what ``verify`` walks)."""
    return [AuditEntry(*row) for row in
            await store.rows(f"SELECT {COLUMNS} FROM audit_log ORDER BY seq")]

