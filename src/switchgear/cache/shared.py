"""Cached answers in Redis, shared by every gateway replica: one string per answer with its TTL,
one sorted set of last uses for the LRU bound. A Redis failure is a miss (and a failed put is
skipped), never a failed request: the cache only saves model time."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchgear.cache.exact import Entry
from switchgear.store.redis import LuaScript, StateUnavailable, connect_redis, unavailable

log = logging.getLogger(__name__)

#: Separates alias, scope and digest in a member name (cannot occur in an alias or tenant).
SEPARATOR = "\x1f"

#: Read an answer and mark it used; forget the member of an answer that expired.
GET = LuaScript("""
local value = redis.call('GET', KEYS[1])
if value then redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
else redis.call('ZREM', KEYS[2], ARGV[2]) end
return value
""")

#: Keep an answer; evict the least recently used beyond the bound, counting those still alive.
PUT = LuaScript("""
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if excess > 0 then
  local evicted = 0
  local oldest = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #oldest, 2 do evicted = evicted + redis.call('DEL', ARGV[6] .. oldest[i]) end
  if evicted > 0 then redis.call('INCRBY', KEYS[3], evicted) end
  return evicted
end
return 0
""")


class RedisCache:
    """An LRU of answers with a TTL, bounded in entries, in Redis at ``url`` under ``prefix``."""

    def __init__(self, url: str, prefix: str, ttl: float, max_entries: int,
                 client: Redis | None = None) -> None:
        self.client = client or connect_redis(url)
        self.ttl_ms = max(1, int(ttl * 1000))
        self.max_entries = max_entries
        self.entries = prefix + "cache:entry:"
        self.lru = prefix + "cache:lru"
        self.evictions = prefix + "cache:evictions"
        self.errors = 0

    @staticmethod
    def member(key: str, alias: str, scope: str) -> str:
        """The name of an answer: its alias and scope (for purges), then its digest."""
        return f"{alias}{SEPARATOR}{scope}{SEPARATOR}{key}"

    async def get(self, key: str, alias: str, scope: str) -> Entry | None:
        """The live answer for ``key``, or None (also when Redis is away)."""
        member = self.member(key, alias, scope)
        try:
            value = await GET(self.client, [self.entries + member, self.lru],
                              [time.time(), member])
        except StateUnavailable as error:
            self._failed("read", error)
            return None
        if value is None:
            return None
        stored = orjson.loads(value)
        return Entry(stored["body"], stored["cost"], alias, scope)

    async def put(self, key: str, entry: Entry) -> int:
        """Keep an answer for the TTL (skipped, and counted, when Redis is away); how many live
        answers that evicted."""
        member = self.member(key, entry.alias, entry.scope)
        value = orjson.dumps({"body": entry.body, "cost": entry.cost}).decode()
        try:
            evicted = await PUT(self.client, [self.entries + member, self.lru, self.evictions],
                                [value, self.ttl_ms, time.time(), member, self.max_entries,
                                 self.entries])
        except StateUnavailable as error:
            self._failed("write", error)
            return 0
        return int(evicted)

    def _failed(self, what: str, error: StateUnavailable) -> None:
        self.errors += 1
        log.warning("cache %s skipped: %s", what, error)

    async def purge(self, alias: str | None = None, scope: str | None = None) -> int:
        """Drop the answers of ``alias`` and/or ``scope`` from every replica's view."""
        try:
            return await self._purge(alias, scope)
        except (RedisError, OSError) as error:
            raise unavailable(error) from error

    async def _purge(self, alias: str | None, scope: str | None) -> int:
        doomed = []
        async for raw, _ in self.client.zscan_iter(self.lru):
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            owner_alias, owner_scope, _digest = member.split(SEPARATOR, 2)
            if (alias is None or owner_alias == alias) and (scope is None or owner_scope == scope):
                doomed.append(member)
        dropped = 0
        for start in range(0, len(doomed), 500):
            batch = doomed[start:start + 500]
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(*(self.entries + member for member in batch))
                pipe.zrem(self.lru, *batch)
                deleted, _ = await pipe.execute()
            dropped += int(deleted)
        return dropped

    async def stats(self) -> dict[str, Any]:
        """Entries (members of the LRU set; a few may have expired unseen), evictions by any
        replica, and this replica's Redis failures."""
        try:
            entries = await self.client.zcard(self.lru)
            evictions = await self.client.get(self.evictions)
        except (RedisError, OSError) as error:
            return {"store": "redis", "error": type(error).__name__, "redis_errors": self.errors}
        return {"store": "redis", "entries": int(entries), "evictions": int(evictions or 0),
                "redis_errors": self.errors}

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
