"""The Cache stage: answer a repeated request from the cache, let identical requests in flight
share one call, and keep what the model answers for next time, with what the request that made
it was charged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from switchgear.cache.exact import AnswerStore, Entry, MemoryCache, cache_key, deterministic
from switchgear.cache.inflight import Call, InFlight, LeaderFailed
from switchgear.cache.replay import assemble, replay
from switchgear.cache.shared import RedisCache
from switchgear.config import CacheConfig
from switchgear.errors import Overloaded
from switchgear.exchange import Exchange, Operation
from switchgear.ledger.cost import PriceBook
from switchgear.pipeline import Body, Reply, Stage, close_stream
from switchgear.pipeline.route import take_usage

HEADER = b"x-switchgear-cache"
OUTCOMES = ("hit", "miss", "coalesced", "bypass")

log = logging.getLogger(__name__)


def answer_store(config: CacheConfig) -> AnswerStore:
    """Redis when the config names one (replicas share answers), else this process's memory."""
    if config.url is not None:
        return RedisCache(config.url, config.prefix, config.ttl_s, config.max_entries)
    return MemoryCache(config.ttl_s, config.max_entries)


class Cache(Stage):
    """Between admission and routing: hit, coalesce, or miss and remember."""

    def __init__(self, config: CacheConfig, prices: PriceBook,
                 on_evicted: Callable[[int], None] = lambda count: None,
                 store: AnswerStore | None = None) -> None:
        self.on_evicted = on_evicted
        self.config = config
        self.prices = prices
        self.store = store or answer_store(config)
        self.in_flight = InFlight()
        #: The streamed followers of each streamed call in flight, by key (see ``_finish``).
        self._streaming: dict[str, list[Exchange]] = {}
        self.counts = dict.fromkeys(OUTCOMES, 0)
        #: The response header of each outcome, made once.
        self._headers = {outcome: (HEADER, outcome.encode()) for outcome in OUTCOMES}
        self._pumps: set[asyncio.Task[None]] = set()

    def _cacheable(self, exchange: Exchange) -> bool:
        config = self.config
        if not config.enabled or exchange.cache_status == "bypass":
            return False
        rule = config.keys.get(exchange.principal.key_id or "") or config.routes.get(
            exchange.model) or config.cacheable
        if rule == "deterministic":
            return exchange.operation is Operation.EMBEDDINGS or deterministic(exchange.body)
        return rule == "all"

    async def stats(self) -> dict[str, object]:
        """The store's entries and evictions, and this replica's requests by outcome."""
        return {"enabled": self.config.enabled, **await self.store.stats(),
                "max_entries": self.config.max_entries, "ttl_s": self.config.ttl_s,
                "in_flight": len(self.in_flight), "requests": dict(self.counts)}

    async def aclose(self) -> None:
        """Stop the calls still streaming for followers, and close the store."""
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self.store.aclose()

    async def __call__(self, exchange: Exchange) -> Reply:
        if not self._cacheable(exchange):
            return await self._pass(exchange, "bypass")
        scope = "*" if self.config.shared_across_tenants else exchange.principal.tenant
        alias = exchange.resolved_alias or exchange.model
        key = cache_key(exchange, alias, scope)
        while True:
            entry = await self.store.get(key, alias, scope)
            if entry is not None:
                return self._answer(exchange, entry, "hit")
            call, leads = self.in_flight.join(key, exchange.stream)
            if leads:
                return await self._lead(key, call, exchange, alias, scope)
            try:
                return await self._follow(key, call, exchange)
            except LeaderFailed:
                continue  # the call we waited on failed: one of us leads a new one

    async def _follow(self, key: str, call: Call, exchange: Exchange) -> Reply:
        """A streamed request following a streamed call gets its chunks as they come; any other
        waits for the whole answer."""
        if exchange.stream and call.streamed:
            self._streaming.setdefault(key, []).append(exchange)
            await call.started()
            self._mark(exchange, "coalesced")
            return call.follow(leader=False)
        return self._answer(exchange, await call.outcome(), "coalesced")

    async def _lead(self, key: str, call: Call, exchange: Exchange, alias: str, scope: str
                    ) -> Reply:
        try:
            reply = await self._pass(exchange, "miss")
        except BaseException as error:
            self._finish(key, exchange, None, error)
            raise
        if isinstance(reply, dict):
            entry: Entry | None = None
            try:  # a leader cancelled while its answer is written must not strand its followers
                entry = await self._remember(key, exchange, reply, alias, scope)
            finally:
                self._finish(key, exchange, entry)
            return reply
        pump = asyncio.create_task(self._pump(key, call, exchange, reply, alias, scope))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        return call.follow(leader=True)

    async def _pass(self, exchange: Exchange, status: str) -> Reply:
        self._mark(exchange, status)
        return await self.next_stage(exchange)

    def _mark(self, exchange: Exchange, status: str) -> None:
        exchange.cache_status = status
        self.counts[status] += 1
        exchange.response_headers.append(self._headers[status])

    def _answer(self, exchange: Exchange, entry: Entry, status: str) -> Reply:
        """A kept answer, with its tokens and what it saved (the answer arrives here, not from
        the Route stage)."""
        self._mark(exchange, status)
        take_usage(exchange, entry.body)
        exchange.saved_cost = entry.cost
        if exchange.stream:
            return replay(exchange.operation, entry.body)
        return entry.body

    async def _remember(self, key: str, exchange: Exchange, body: Body, alias: str, scope: str
                        ) -> Entry:
        entry = Entry(body, self._cost(exchange), alias, scope)
        evicted = await self.store.put(key, entry)
        if evicted:
            self.on_evicted(evicted)
        return entry

    def _cost(self, exchange: Exchange) -> float:
        """What producing the answer cost (what a hit saves): what the request that made it is
        charged, priced here once, from the usage the Route stage read (the Recorder's price
        step keeps it). A leader whose record was written before its stream ended (its client
        left) was charged for less than the whole answer, so that answer is priced apart."""
        if exchange.done is None:
            self.prices.price(exchange)
            charged = exchange.charges
        else:
            usage = exchange.usage
            charged = self.prices.charge(exchange, usage.prompt_tokens, usage.completion_tokens,
                                         usage.cached_tokens, usage.cache_write_tokens)
        return 0.0 if charged is None else charged.total

    def _finish(self, key: str, leader: Exchange, entry: Entry | None,
                error: BaseException | None = None) -> None:
        """End the call for ``key``. Its streamed followers get the tokens of the answer they
        were sent (read once, for the leader) and what it saved, before their streams end and
        they are recorded."""
        followers = self._streaming.pop(key, ())
        if error is None:
            for follower in followers:
                follower.usage = replace(leader.usage)
                follower.saved_cost = 0.0 if entry is None else entry.cost
        self.in_flight.finish(key, entry, error)

    async def _pump(self, key: str, call: Call, exchange: Exchange, chunks: AsyncIterator[Body],
                    alias: str, scope: str) -> None:
        """Read a streamed answer into ``call`` for its leader and followers alike (so a leader
        that hangs up does not cut the others off), then keep it as a whole answer."""
        entry: Entry | None = None
        error: BaseException | None = None
        try:
            async for chunk in chunks:
                call.push(chunk)
            body = assemble(exchange.operation, call.chunks)
            if body is not None:
                entry = await self._remember(key, exchange, body, alias, scope)
        except asyncio.CancelledError:
            error = Overloaded("The gateway is shutting down; try again.", retry_after=1.0)
            raise
        except Exception as failure:  # every stream error reaches the clients following it
            error = failure
        finally:
            self._finish(key, exchange, entry, error)
            error = None  # kept, its traceback would hold this frame in a cycle
            await close_stream(chunks)
