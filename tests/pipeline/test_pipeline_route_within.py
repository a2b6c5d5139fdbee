"""The Route stage's limit on one upstream wait (the whole answer, or a stream's first chunk):
an UpstreamTimeout once it passes, and what asyncio.timeout does with the task's cancellation:
taken back when the limit caused it, kept when someone else cancelled."""

from __future__ import annotations

import asyncio

import pytest

from switchgear.errors import UpstreamTimeout
from switchgear.pipeline.route import _within


async def test_an_answer_in_time_is_returned_and_nothing_stays_cancelled() -> None:
    assert await _within(asyncio.sleep(0, "answer"), 5.0, "d") == "answer"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.02)  # no timer left to fire


async def test_a_wait_past_the_limit_is_an_upstream_timeout() -> None:
    with pytest.raises(UpstreamTimeout, match=r"'d' did not answer within 0\.01s"):
        await _within(asyncio.Event().wait(), 0.01, "d")
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_step_that_swallows_the_limit_answers_and_leaves_nothing_cancelled() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "late"
        return "never"

    assert await _within(stubborn(), 0.01, "d") == "late"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # and the task is not cancelled at its next wait


@pytest.mark.parametrize("seconds", [0.0, -1.0])
async def test_no_time_left_times_out_at_the_first_wait(seconds: float) -> None:
    with pytest.raises(UpstreamTimeout):
        await _within(asyncio.Event().wait(), seconds, "d")


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def wait() -> None:
        started.set()
        await _within(asyncio.Event().wait(), 5.0, "d")

    task = asyncio.create_task(wait())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
