"""Cache: a repeat is answered without the next stage, experiment variants and tenants are kept
apart, identical requests in flight share one call, and what may not be cached goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipeline_support import NextStage, answer, chained, chunks, config, drain, make_exchange, text_of, turns

from switchgear.cache.exact import Entry, MemoryCache
from switchgear.errors import UpstreamTimeout
from switchgear.exchange import Exchange, Principal
from switchgear.ledger.cost import PriceBook
from switchgear.pipeline.cache import Cache


def cache(after: NextStage, **section: Any) -> Cache:
    """The Cache stage over a MemoryCache, for a ``cache:`` section and the default models'
    prices, chained to ``after``."""
    parsed = config(cache=section)
    return chained(Cache(parsed.cache, PriceBook.of(parsed), store=MemoryCache(60, 100)), after)


def header(exchange: Exchange) -> str:
    """The ``x-switchgear-cache`` header the stage added to the response."""
    return dict(exchange.response_headers)[b"x-switchgear-cache"].decode()


async def test_a_repeat_is_answered_without_the_next_stage() -> None:
    after = NextStage(answer("first"), deployment="d")
    stage = cache(after)
    miss, hit = make_exchange(), make_exchange()
    assert await stage(miss) == answer("first")
    assert await stage(hit) == answer("first")
    assert after.exchanges == [miss]
    assert (miss.cache_status, hit.cache_status) == ("miss", "hit")
    assert (header(miss), header(hit)) == ("miss", "hit")
    assert hit.saved_cost == pytest.approx(5 + 2)  # its tokens at 1 each, as the miss paid
    assert hit.usage == miss.usage and hit.usage.total_tokens == 7  # the answer's, noted here
    assert stage.counts == {"hit": 1, "miss": 1, "coalesced": 0, "bypass": 0}


async def test_delivery_fields_do_not_split_the_cache() -> None:
    after = NextStage()
    stage = cache(after)
    await stage(make_exchange(body={"messages": [], "temperature": 0, "user": "ada"}))
    await stage(make_exchange(body={"user": "bob", "temperature": 0, "messages": []}))
    assert after.calls == 1


async def test_experiment_variants_are_kept_apart() -> None:
    after = NextStage(lambda exchange: answer(f"from {exchange.resolved_alias}"))
    stage = cache(after)

    def asking(variant: str) -> Exchange:
        return make_exchange("exp", resolved_alias=variant, variant=variant)

    base, canary = [await drain(await stage(asking(v))) for v in ("base", "canary")]
    assert after.calls == 2  # the canary's request was not answered with the baseline's
    assert (text_of(base), text_of(canary)) == ("from base", "from canary")
    for variant in ("base", "canary"):
        repeat = asking(variant)
        assert text_of(await drain(await stage(repeat))) == f"from {variant}"
        assert repeat.cache_status == "hit"
    assert after.calls == 2


async def test_tenants_are_kept_apart_unless_shared() -> None:
    for shared, calls in ((False, 2), (True, 1)):
        after = NextStage()
        stage = cache(after, shared_across_tenants=shared)
        for tenant in ("acme", "globex"):
            await stage(make_exchange(principal=Principal(tenant=tenant)))
        assert after.calls == calls


async def test_identical_requests_in_flight_share_one_call() -> None:
    after = NextStage(answer("shared"), hold=True)
    stage = cache(after)
    exchanges = [make_exchange() for _ in range(5)]
    tasks = [asyncio.create_task(stage(exchange)) for exchange in exchanges]
    await turns()
    assert after.calls == 1 and len(stage.in_flight) == 1
    after.release()
    replies = await asyncio.gather(*tasks)
    assert replies == [answer("shared")] * 5 and after.calls == 1
    assert sorted(e.cache_status or "" for e in exchanges) == ["coalesced"] * 4 + ["miss"]
    assert [e.usage.total_tokens for e in exchanges] == [7] * 5
    assert len(stage.in_flight) == 0


async def test_a_leader_that_goes_away_leaves_a_follower_to_lead_anew() -> None:
    after = NextStage(answer("second try"), hold=True)
    stage = cache(after)
    leader = asyncio.create_task(stage(make_exchange()))
    follower = make_exchange()
    following = asyncio.create_task(stage(follower))
    await turns()
    leader.cancel()  # its client disconnected
    await turns()
    assert after.calls == 2  # the follower took the lead
    after.release()
    assert await following == answer("second try") and follower.cache_status == "miss"
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_a_streamed_request_follows_a_streamed_call_in_flight() -> None:
    after = NextStage(stream=chunks("Hel", "lo"), hold=True, deployment="d")
    stage = cache(after)
    leader = asyncio.create_task(stage(make_exchange(stream=True)))
    await after.entered.wait()
    follower = make_exchange(stream=True)
    joining = asyncio.create_task(stage(follower))
    await turns()
    after.release()
    received = [await drain(await reply) for reply in (leader, joining)]
    assert received == [chunks("Hel", "lo")] * 2 and after.calls == 1
    assert follower.cache_status == "coalesced"
    # its chunks carried the usage, read once for the leader: the follower gets those tokens,
    # and saves what the leader paid, as a follower waiting for the whole answer does
    assert follower.usage.total_tokens == 7 and follower.saved_cost == pytest.approx(7)
    await stage.aclose()


async def test_a_streamed_answer_is_kept_whole_and_replayed() -> None:
    after = NextStage(stream=chunks("Hel", "lo"))
    stage = cache(after)
    first = await drain(await stage(make_exchange(stream=True)))
    assert first == chunks("Hel", "lo")
    streamed = make_exchange(stream=True)
    replayed = await drain(await stage(streamed))
    whole = await drain(await stage(make_exchange()))
    assert after.calls == 1 and streamed.cache_status == "hit"
    assert text_of(replayed) == text_of(whole) == "Hello"
    assert isinstance(replayed, list) and replayed[-1]["usage"]["completion_tokens"] == 2
    await stage.aclose()


@pytest.mark.parametrize(("body", "status", "section"), [
    ({"messages": [], "temperature": 0.7}, None, {}),  # sampling: not deterministic
    ({"messages": [], "temperature": 0}, "bypass", {}),  # asked not to (the gateway marks it)
    ({"messages": [], "temperature": 0}, None, {"enabled": False}),
    ({"messages": [], "temperature": 0}, None, {"routes": {"chat": "off"}}),
])
async def test_what_may_not_be_cached_goes_to_the_next_stage_every_time(
        body: dict[str, Any], status: str | None, section: dict[str, Any]) -> None:
    after = NextStage()
    stage = cache(after, **section)
    exchanges = [make_exchange(body=dict(body), cache_status=status) for _ in range(2)]
    for exchange in exchanges:
        await stage(exchange)
    assert after.calls == 2
    assert [e.cache_status for e in exchanges] == ["bypass"] * 2
    assert (await stage.store.stats())["entries"] == 0


async def test_a_failed_call_is_not_kept() -> None:
    after = NextStage(error=UpstreamTimeout("no answer"))
    stage = cache(after)
    for _ in range(2):
        with pytest.raises(UpstreamTimeout):
            await stage(make_exchange())
    assert after.calls == 2 and len(stage.in_flight) == 0
    assert (await stage.store.stats())["entries"] == 0


class SlowStore(MemoryCache):
    """A MemoryCache whose writes wait for ``written`` to be set, as a write to Redis waits."""

    def __init__(self) -> None:
        super().__init__(60, 100)
        self.written = asyncio.Event()

    async def put(self, key: str, entry: Entry) -> int:
        await self.written.wait()
        return await super().put(key, entry)


async def test_a_leader_cancelled_while_its_answer_is_kept_does_not_strand_its_followers(
        ) -> None:
    after = NextStage(answer("kept"))
    parsed = config()
    store = SlowStore()
    stage = chained(Cache(parsed.cache, PriceBook.of(parsed), store=store), after)
    leader = asyncio.create_task(stage(make_exchange()))
    await after.entered.wait()  # and the leader is writing its answer to the store now
    follower = make_exchange()
    following = asyncio.create_task(stage(follower))
    await turns()
    leader.cancel()  # its client disconnected
    await turns()
    assert after.calls == 2  # the follower leads a call of its own (it waited forever before)
    store.written.set()
    assert await following == answer("kept") and follower.cache_status == "miss"
    assert len(stage.in_flight) == 0
    with pytest.raises(asyncio.CancelledError):
        await leader
