"""Two key rings over one store (a SQLite file, and PostgreSQL), as two replicas hold them: each
follows the other's creations and revocations with one aggregate query per poll, and reloads
only when that query says something changed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchgear.admission.keys import KeyLimits, KeyRing, Role
from switchgear.store import open_store
from switchgear.store.base import RecordStore


class CountingStore:
    """A store that counts the full reads of ``api_keys`` (everything else passes through)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.dialect = store.dialect
        self.loads = 0

    async def execute(self, sql: str, params: Any = ()) -> int:
        return await self.store.execute(sql, params)

    async def rows(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        self.loads += sql.startswith("SELECT key_id")
        return await self.store.rows(sql, params)


@pytest.fixture
async def stores(store_url: str) -> AsyncIterator[tuple[CountingStore, CountingStore]]:
    """Two connections to one fresh store, as two replicas have."""
    first, second = open_store(store_url), open_store(store_url)
    await first.open()
    await second.open()
    yield CountingStore(first), CountingStore(second)
    await first.close()
    await second.close()


async def test_each_ring_sees_the_others_changes_and_reloads_only_on_a_change(
        stores: tuple[CountingStore, CountingStore]) -> None:
    store_a, store_b = stores
    a, b = KeyRing(store_a), KeyRing(store_b)  # type: ignore[arg-type]
    await a.load()
    await b.load()
    assert not await b.refresh()  # nothing changed: one aggregate query, no reload
    key, secret = await a.create("acme", Role.CLIENT, "web", limits=KeyLimits(rpm=2, daily=1.5))
    assert not await a.refresh()  # its own change is already held
    loads = store_b.loads
    assert await b.refresh() and store_b.loads == loads + 1
    assert b.find(key.key_id) == key and b.limits(key.key_id) == KeyLimits(rpm=2, daily=1.5)
    assert await b.verify(secret) == key
    assert not await b.refresh() and store_b.loads == loads + 1

    revoked = await a.revoke(key.key_id)
    assert revoked is not None and await a.verify(secret) is None  # here: at once
    assert await b.verify(secret) == key  # there: until it looks
    assert await b.refresh()
    assert await b.verify(secret) is None and b.find(key.key_id) == revoked


async def test_a_revocation_stamped_by_a_slow_clock_is_still_seen(
        stores: tuple[CountingStore, CountingStore]) -> None:
    """Replicas' clocks disagree: a revocation older than the newest one still changes the
    count of revoked keys."""
    store_a, store_b = stores
    a, b = KeyRing(store_a), KeyRing(store_b)  # type: ignore[arg-type]
    first, _ = await a.create("acme", Role.CLIENT, "one")
    second, secret = await a.create("acme", Role.CLIENT, "two")
    await a.revoke(first.key_id)
    await b.load()
    mark = "?" if store_a.dialect == "sqlite" else "$1"
    await store_a.execute(f"UPDATE api_keys SET revoked_at = 1.0 WHERE key_id = {mark}",
                          (second.key_id,))  # revoked by a replica whose clock is far behind
    assert await b.refresh() and await b.verify(secret) is None


async def test_the_follower_keeps_a_ring_in_step_until_stopped(
        stores: tuple[CountingStore, CountingStore]) -> None:
    store_a, store_b = stores
    a, b = KeyRing(store_a), KeyRing(store_b)  # type: ignore[arg-type]
    await b.load()
    b.follow(lambda: 0.01)
    try:
        key, _ = await a.create("acme", Role.CLIENT, "web")
        for _ in range(1000):  # ten seconds at most
            if b.find(key.key_id) is not None:
                break
            await asyncio.sleep(0.01)
        assert b.find(key.key_id) == key
    finally:
        await b.stop()
    other, _ = await a.create("acme", Role.CLIENT, "later")
    await asyncio.sleep(0.1)
    assert b.find(other.key_id) is None  # stopped: it no longer follows


async def test_a_verified_token_is_remembered_until_its_key_is_revoked_or_expires(
        stores: tuple[CountingStore, CountingStore]) -> None:
    """``remembered`` answers without hashing, never for a bad token, and a revocation or an
    expiry takes effect at once."""
    ring = KeyRing(stores[0])  # type: ignore[arg-type]
    key, secret = await ring.create("acme", Role.CLIENT, "web")
    short, brief = await ring.create("acme", Role.CLIENT, "brief", expires_in=0.05)
    assert ring.remembered(secret) is None  # not verified yet
    assert await ring.verify(secret) == key and ring.remembered(secret) == key
    assert await ring.verify(secret + "x") is None and ring.remembered(secret + "x") is None
    assert await ring.verify(brief) == short and ring.remembered(brief) == short
    await asyncio.sleep(0.1)
    assert ring.remembered(brief) is None and await ring.verify(brief) is None  # expired
    await ring.revoke(key.key_id)
    assert ring.remembered(secret) is None and await ring.verify(secret) is None
