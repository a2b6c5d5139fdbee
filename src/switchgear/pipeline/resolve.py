"""The Resolve stage, first of all: which alias serves the request — the model asked for, or
the variant its experiment picks — so that every later stage (limits, guards, the cache, the
queue) sees a model that exists and the variant the request belongs to. An unknown model is a
404 here, before it costs a rate-limit token or a queue place."""

from __future__ import annotations

from switchgear.exchange import Exchange
from switchgear.pipeline import Reply, Stage
from switchgear.routing.router import Router


class Resolve(Stage):
    """Sets ``exchange.resolved_alias`` (and ``variant``) from the router."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, exchange: Exchange) -> Reply:
        exchange.resolved_alias = self.router.resolve(exchange)
        return await self.next_stage(exchange)
