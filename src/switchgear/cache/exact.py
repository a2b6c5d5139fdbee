"""The exact response cache: answers keyed on everything that determines them, kept in memory
with a TTL and an LRU size bound (``cache/shared.py`` keeps them in Redis for replicas)."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from switchgear.exchange import Exchange

#: Body fields that do not change the answer (how it is delivered, who asked).
DELIVERY_FIELDS = frozenset({"stream", "stream_options", "user", "model"})


def deterministic(body: dict[str, Any]) -> bool:
    """Whether the same body gives the same answer: temperature 0, or a seed."""
    return body.get("temperature") == 0 or body.get("seed") is not None


def cache_key(exchange: Exchange, alias: str, scope: str) -> str:
    """The key of an exchange: alias, operation, scope (tenant) and the answer-shaping fields;
    never the API key."""
    fields = {name: value for name, value in exchange.body.items() if name not in DELIVERY_FIELDS}
    material = orjson.dumps([alias, exchange.operation.value, scope, fields],
                            option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(material).hexdigest()


@dataclass(slots=True)
class Entry:
    """A cached answer: the complete (non-streamed) body, what producing it cost, and whose it is
    (the alias and the tenant scope, for purges)."""

    body: dict[str, Any]
    cost: float
    alias: str = ""
    scope: str = ""


class AnswerStore(Protocol):
    """Where cached answers live: in this process, or in Redis shared by replicas."""

    async def get(self, key: str, alias: str, scope: str) -> Entry | None:
        """The live entry for ``key`` (marked recently used), or None."""

    async def put(self, key: str, entry: Entry) -> int:
        """Keep an answer for the TTL, evicting the least recently used beyond the bound; how
        many live answers that evicted."""

    async def purge(self, alias: str | None = None, scope: str | None = None) -> int:
        """Drop the entries of ``alias`` and/or ``scope`` (all when neither); how many went."""

    async def stats(self) -> dict[str, Any]:
        """Entries and evictions (and the store's kind)."""

    async def aclose(self) -> None:
        """Let go of connections."""


class MemoryCache:
    """An LRU of answers with a TTL, bounded in entries, in this process."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Entry, float]] = OrderedDict()
        self.evictions = 0

    async def get(self, key: str, alias: str = "", scope: str = "") -> Entry | None:
        """The live entry for ``key``, if any (and mark it recently used)."""
        found = self._entries.get(key)
        if found is None:
            return None
        entry, expires = found
        if expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    async def put(self, key: str, entry: Entry) -> int:
        """Keep an answer, evicting the least recently used beyond the bound."""
        self._entries[key] = (entry, time.monotonic() + self.ttl)
        self._entries.move_to_end(key)
        evicted = max(0, len(self._entries) - self.max_entries)
        for _ in range(evicted):
            self._entries.popitem(last=False)
        self.evictions += evicted
        return evicted

    async def purge(self, alias: str | None = None, scope: str | None = None) -> int:
        """Drop the entries of ``alias`` and/or ``scope``; how many were dropped."""
        doomed = [key for key, (entry, _) in self._entries.items()
                  if (alias is None or entry.alias == alias)
                  and (scope is None or entry.scope == scope)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    async def stats(self) -> dict[str, Any]:
        """Entries held (some may have expired unseen) and evictions since start."""
        return {"store": "memory", "entries": len(self._entries), "evictions": self.evictions}

    async def aclose(self) -> None:
        """Nothing to let go of."""
