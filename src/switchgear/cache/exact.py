"""The exact response cache: answers keyed on everything that determines them, kept in memory with
a TTL and an LRU size bound, and the in-flight table that lets identical requests share one call."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from switchgear.exchange import Exchange

#: Body fields that do not change the answer (how it is delivered, who asked).
DELIVERY_FIELDS = frozenset({"stream", "stream_options", "user", "model"})


def deterministic(body: dict[str, Any]) -> bool:
    """Whether the same body gives the same answer: temperature 0, or a seed."""
    return body.get("temperature") == 0 or body.get("seed") is not None


def cache_key(exchange: Exchange, alias: str, scope: str) -> str:
    """The key of an exchange: alias, operation, scope (tenant) and the answer-shaping fields."""
    fields = {name: value for name, value in exchange.body.items() if name not in DELIVERY_FIELDS}
    material = orjson.dumps([alias, exchange.operation.value, scope, fields],
                            option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(material).hexdigest()


@dataclass(slots=True)
class Entry:
    """A cached answer: the complete (non-streamed) body and what producing it cost."""

    body: dict[str, Any]
    cost: float
    expires: float
    alias: str = ""
    scope: str = ""


class ExactCache:
    """An LRU of answers with a TTL, bounded in entries."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.evictions = 0

    def get(self, key: str) -> Entry | None:
        """The live entry for ``key``, if any (and mark it recently used)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, body: dict[str, Any], cost: float, alias: str = "",
            scope: str = "") -> None:
        """Keep an answer, evicting the least recently used beyond the bound."""
        self._entries[key] = Entry(body, cost, time.monotonic() + self.ttl, alias, scope)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    def purge(self, alias: str | None = None, scope: str | None = None) -> int:
        """Drop the entries of ``alias`` and/or ``scope`` (everything when neither is given);
        how many were dropped."""
        doomed = [key for key, entry in self._entries.items()
                  if (alias is None or entry.alias == alias)
                  and (scope is None or entry.scope == scope)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def __len__(self) -> int:
        return len(self._entries)


class InFlight:
    """Identical requests being answered now: the first leads, the others wait for its answer."""

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[Entry]] = {}

    def join(self, key: str) -> asyncio.Future[Entry] | None:
        """The answer to wait for if an identical request leads; None makes the caller lead."""
        future = self._calls.get(key)
        if future is not None:
            return future
        self._calls[key] = asyncio.get_running_loop().create_future()
        return None

    def finish(self, key: str, entry: Entry | None) -> None:
        """The leader is done: hand its answer to the followers, or let one of them retry."""
        future = self._calls.pop(key, None)
        if future is None or future.done():
            return
        if entry is None:
            future.set_exception(LeaderFailed())
            future.exception()  # followers may all be gone: nobody else must retrieve it
        else:
            future.set_result(entry)


class LeaderFailed(Exception):
    """The request being waited on failed; a follower retries as the new leader."""
