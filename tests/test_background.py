"""The start/stop protocol (background.py): parts start in the order given and stop in reverse;
a start that fails stops what had started; parts started together are all waited for."""

from __future__ import annotations

import asyncio
import logging

import pytest

from switchgear.background import Calls, Part, Parts, Together


class Broken(Exception):
    """What a failing part raises."""


def recorded(name: str, events: list[str], *, fails: bool = False,
             stop_fails: bool = False) -> Calls:
    """A part noting its start and stop in ``events`` (an async start, a sync stop)."""

    async def start() -> None:
        events.append(f"start {name}")
        if fails:
            raise Broken(name)

    def stop() -> None:
        events.append(f"stop {name}")
        if stop_fails:
            raise Broken(name)

    return Calls(name, start, stop)


class Slow:
    """A part whose start takes two turns of the loop, noting when it began and ended."""

    def __init__(self, name: str, events: list[str], release: asyncio.Event | None = None
                 ) -> None:
        self.name, self.events, self.release = name, events, release
        self.begun = asyncio.Event()

    async def start(self) -> None:
        self.events.append(f"begin {self.name}")
        self.begun.set()
        await asyncio.sleep(0)
        if self.release is not None:
            await self.release.wait()
        self.events.append(f"start {self.name}")

    async def stop(self) -> None:
        self.events.append(f"stop {self.name}")


async def test_parts_start_in_order_and_stop_in_reverse() -> None:
    events: list[str] = []
    parts = Parts(recorded("a", events), None, Parts(recorded("b", events)),
                  recorded("c", events))
    await parts.start()
    await parts.stop()
    assert events == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_a_failed_start_stops_what_had_started_in_reverse_and_raises() -> None:
    events: list[str] = []
    parts = Parts(recorded("a", events), Parts(recorded("b", events)),
                  recorded("c", events, fails=True), recorded("d", events))
    with pytest.raises(Broken, match="c"):
        await parts.start()
    # c raised (it released what it took itself); d never started
    assert events == ["start a", "start b", "start c", "stop b", "stop a"]


async def test_a_cancelled_start_stops_what_had_started() -> None:
    events: list[str] = []
    stuck = Slow("b", events, asyncio.Event())
    starting = asyncio.create_task(Parts(recorded("a", events), stuck).start())
    await stuck.begun.wait()
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert events == ["start a", "begin b", "stop a"]


async def test_a_part_that_fails_to_stop_is_logged_and_the_rest_still_stop(
        caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    parts = Parts(recorded("a", events), recorded("b", events, stop_fails=True),
                  recorded("c", events))
    await parts.start()
    with caplog.at_level(logging.ERROR, "switchgear"):
        await parts.stop()
    assert events[3:] == ["stop c", "stop b", "stop a"]
    assert [r.getMessage() for r in caplog.records] == ["b did not stop cleanly"]


async def test_calls_adapts_sync_async_and_absent_calls() -> None:
    events: list[str] = []

    def start() -> None:
        events.append("sync start")

    async def stop() -> None:
        events.append("async stop")

    both: Part = Calls("writer", start, stop)
    stop_only: Part = Calls("cache", on_stop=start)
    start_only: Part = Calls("keys", stop)
    for part in (both, stop_only, start_only):
        await part.start()
        await part.stop()
    assert events == ["sync start", "async stop", "sync start", "async stop"]
    assert str(both) == "writer"


async def test_together_starts_at_once_and_stops_at_once() -> None:
    events: list[str] = []
    together = Together(Slow("a", events), Slow("b", events))
    await together.start()
    await together.stop()
    assert events == ["begin a", "begin b", "start a", "start b", "stop a", "stop b"]


async def test_together_waits_for_every_start_then_stops_those_that_started() -> None:
    events: list[str] = []
    release = asyncio.Event()
    failing = recorded("failing", events, fails=True)

    async def fail_then_release() -> None:
        try:
            await failing.start()
        finally:
            release.set()

    together = Together(Slow("slow", events, release), Calls("failing", fail_then_release),
                        recorded("quick", events))
    with pytest.raises(Broken, match="failing"):
        await together.start()
    # the slow part started after the failure, and was stopped all the same
    assert events == ["begin slow", "start failing", "start quick", "start slow",
                      "stop slow", "stop quick"]


async def test_a_cancelled_together_stops_those_that_started() -> None:
    events: list[str] = []
    stuck = Slow("stuck", events, asyncio.Event())
    starting = asyncio.create_task(Together(recorded("quick", events), stuck).start())
    await stuck.begun.wait()
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert events == ["start quick", "begin stuck", "stop quick"]
