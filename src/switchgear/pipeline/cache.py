"""The Cache stage: answer a repeated deterministic request from the cache, let identical
requests in flight share one call, and keep what the model answers for next time."""

from __future__ import annotations

from collections.abc import AsyncIterator

from switchgear.cache.exact import Entry, ExactCache, InFlight, LeaderFailed, cache_key, deterministic
from switchgear.cache.replay import assemble, replay
from switchgear.config import CacheConfig
from switchgear.exchange import Exchange, Operation
from switchgear.ledger.cost import PriceBook
from switchgear.pipeline import Body, Handler, Reply

HEADER = b"x-switchgear-cache"


class Cache:
    """Between admission and routing: hit, coalesce, or miss and remember."""

    def __init__(self, next_stage: Handler, config: CacheConfig, prices: PriceBook) -> None:
        self.next_stage = next_stage
        self.config = config
        self.prices = prices
        self.cache = ExactCache(config.ttl_s, config.max_entries)
        self.in_flight = InFlight()
        self.counts = {"hit": 0, "miss": 0, "coalesced": 0, "bypass": 0}

    def _cacheable(self, exchange: Exchange) -> bool:
        if not self.config.enabled or exchange.cache_status == "bypass":
            return False
        return exchange.operation is Operation.EMBEDDINGS or deterministic(exchange.body)

    def stats(self) -> dict[str, object]:
        """Entries, evictions and requests by outcome since start."""
        return {"enabled": self.config.enabled, "entries": len(self.cache),
                "max_entries": self.config.max_entries, "ttl_s": self.config.ttl_s,
                "evictions": self.cache.evictions, "requests": dict(self.counts)}

    async def __call__(self, exchange: Exchange) -> Reply:
        if not self._cacheable(exchange):
            return await self._pass(exchange, "bypass")
        scope = "*" if self.config.shared_across_tenants else exchange.principal.tenant
        alias = exchange.variant or exchange.model
        key = cache_key(exchange, alias, scope)
        while True:
            entry = self.cache.get(key)
            if entry is not None:
                return self._answer(exchange, entry, "hit")
            leader = self.in_flight.join(key)
            if leader is None:
                break
            try:
                entry = await leader
            except LeaderFailed:
                continue  # the call we waited on failed: one of us leads a new one
            return self._answer(exchange, entry, "coalesced")
        try:
            reply = await self._pass(exchange, "miss")
        except BaseException:
            self.in_flight.finish(key, None)
            raise
        if isinstance(reply, dict):
            self.in_flight.finish(key, self._remember(key, exchange, reply, alias, scope))
            return reply
        return self._collect(key, exchange, reply, alias, scope)

    async def _pass(self, exchange: Exchange, status: str) -> Reply:
        self._mark(exchange, status)
        return await self.next_stage(exchange)

    def _mark(self, exchange: Exchange, status: str) -> None:
        exchange.cache_status = status
        self.counts[status] += 1
        exchange.response_headers.append((HEADER, status.encode()))

    def _answer(self, exchange: Exchange, entry: Entry, status: str) -> Reply:
        self._mark(exchange, status)
        exchange.saved_cost = entry.cost
        if exchange.stream:
            return replay(exchange.operation, entry.body)
        return entry.body

    def _remember(self, key: str, exchange: Exchange, body: Body, alias: str, scope: str
                  ) -> Entry:
        usage = body.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        charged = self.prices.charge(exchange, usage.get("prompt_tokens") or 0,
                                     usage.get("completion_tokens") or 0,
                                     details.get("cached_tokens") or 0)
        cost = 0.0 if charged is None else charged.total
        self.cache.put(key, body, cost, alias, scope)
        entry = self.cache.get(key)
        assert entry is not None
        return entry

    async def _collect(self, key: str, exchange: Exchange, chunks: AsyncIterator[Body],
                       alias: str, scope: str) -> AsyncIterator[Body]:
        """Pass a streamed miss on, and cache it as a whole answer once it completed."""
        seen: list[Body] = []
        entry = None
        try:
            async for chunk in chunks:
                seen.append(chunk)
                yield chunk
            body = assemble(exchange.operation, seen)
            if body is not None:
                entry = self._remember(key, exchange, body, alias, scope)
        finally:
            self.in_flight.finish(key, entry)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
