"""In-flight coalescing: the first request of a key leads, identical ones follow its call; a
follower waits for the whole answer or gets the chunks as they come, from the first; a failed
call tells a follower that got nothing to try again, and anyone who got chunks its error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchgear.cache.exact import Entry
from switchgear.cache.inflight import Call, InFlight, LeaderFailed

ENTRY = Entry({"choices": []}, 0.5, "chat", "acme")


def chunk(n: int) -> dict[str, Any]:
    """The ``n``-th chunk of a stream."""
    return {"n": n}


async def collect(call: Call, leader: bool) -> list[dict[str, Any]]:
    """Every chunk ``call.follow`` gives, until the call ends."""
    return [part async for part in call.follow(leader)]


def test_the_first_of_a_key_leads_and_the_rest_follow_its_call() -> None:
    flights = InFlight()
    call, leads = flights.join("k", streamed=False)
    again, follows = flights.join("k", streamed=True)
    other, leads_other = flights.join("other", streamed=True)
    assert leads and not follows and again is call and leads_other and other is not call
    assert not call.streamed and other.streamed  # as its leader's answer comes
    assert len(flights) == 2
    flights.finish("k", ENTRY)
    assert call.done and call.entry is ENTRY and len(flights) == 1
    fresh, leads_fresh = flights.join("k", streamed=False)  # a later request starts afresh
    assert leads_fresh and fresh is not call
    flights.finish("nobody", None)  # finishing what is not in flight does nothing
    assert len(flights) == 2


async def test_followers_wait_for_the_whole_answer() -> None:
    call = Call(streamed=False)
    waiting = [asyncio.create_task(call.outcome()) for _ in range(3)]
    await asyncio.sleep(0)  # let the tasks reach their waits
    assert not any(task.done() for task in waiting)
    call.finish(ENTRY)
    assert await asyncio.gather(*waiting) == [ENTRY] * 3


@pytest.mark.parametrize("error", [None, RuntimeError("upstream failed")])
async def test_a_call_that_kept_nothing_tells_followers_to_try_again(
        error: BaseException | None) -> None:
    call = Call(streamed=False)
    waiting = asyncio.create_task(call.outcome())
    await asyncio.sleep(0)  # let the tasks reach their waits
    call.finish(None, error)
    with pytest.raises(LeaderFailed):
        await waiting


async def test_a_late_streamed_follower_gets_every_chunk_from_the_first() -> None:
    call = Call(streamed=True)
    call.push(chunk(1))
    call.push(chunk(2))
    following = asyncio.create_task(collect(call, leader=False))
    await asyncio.sleep(0)  # let the tasks reach their waits
    assert not following.done()  # waiting for more
    call.push(chunk(3))
    await asyncio.sleep(0)  # let the tasks reach their waits
    call.finish(ENTRY)
    assert await following == [chunk(1), chunk(2), chunk(3)]


async def test_started_waits_for_the_first_chunk() -> None:
    call = Call(streamed=True)
    starting = asyncio.create_task(call.started())
    await asyncio.sleep(0)  # let the tasks reach their waits
    assert not starting.done()
    call.push(chunk(1))
    await starting
    failed = Call(streamed=True)
    failing = asyncio.create_task(failed.started())
    await asyncio.sleep(0)  # let the tasks reach their waits
    failed.finish(None, RuntimeError("no first byte"))
    with pytest.raises(LeaderFailed):
        await failing


async def test_a_failed_stream_reaches_its_leader_and_followers_that_got_chunks() -> None:
    error = RuntimeError("cut off")
    call = Call(streamed=True)
    call.push(chunk(1))
    leader = asyncio.create_task(collect(call, leader=True))
    seen_some = asyncio.create_task(collect(call, leader=False))
    await asyncio.sleep(0)  # let the tasks reach their waits
    call.finish(None, error)
    for task in (leader, seen_some):
        with pytest.raises(RuntimeError) as raised:
            await task
        assert raised.value is error


async def test_a_follower_of_a_stream_that_failed_before_its_first_chunk_tries_again() -> None:
    call = Call(streamed=True)
    following = asyncio.create_task(collect(call, leader=False))
    await asyncio.sleep(0)  # let the tasks reach their waits
    call.finish(None, RuntimeError("no first byte"))
    with pytest.raises(LeaderFailed):
        await following
