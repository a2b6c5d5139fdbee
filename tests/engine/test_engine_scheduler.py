"""The continuous-batching scheduler on its own: admission, slots, KV room, chunked prefill,
priority tiers and preemption. No runner is involved: each test plays the engine's part by
marking fed tokens computed and appending sampled ones."""

from __future__ import annotations

import pytest

from switchgear.engine.job import CompletionRequest, Job
from switchgear.engine.scheduler import BatchScheduler, Plan, Sequence


def sequence(prompt_tokens: int, tier: str = "standard", limit: int = 100) -> Sequence:
    return Sequence(Job(CompletionRequest("p"), tier=tier), list(range(prompt_tokens)), limit)


def run(plan: Plan) -> None:
    """What the engine does after a step: fed tokens are computed, sampling ones grow by one."""
    for feed in plan.feeds:
        samples = feed.samples
        feed.sequence.computed += feed.count
        if samples:
            feed.sequence.tokens.append(7)


def fed(plan: Plan) -> dict[int, int]:
    return {id(feed.sequence): feed.count for feed in plan.feeds}


def test_new_sequences_join_while_there_are_slots_and_the_rest_wait() -> None:
    scheduler = BatchScheduler(max_sequences=2, kv_tokens=1000, step_tokens=64)
    first, second, third = sequence(4), sequence(5), sequence(6)
    for each in (first, second, third):
        scheduler.add(each)
    plan = scheduler.schedule()
    assert fed(plan) == {id(first): 4, id(second): 5}
    assert all(feed.samples for feed in plan.feeds)
    assert {first.slot, second.slot} == {0, 1}
    assert scheduler.waiting == 1
    run(plan)
    assert fed(scheduler.schedule()) == {id(first): 1, id(second): 1}


def test_a_finished_sequence_frees_its_slot_for_the_next_at_the_next_step() -> None:
    scheduler = BatchScheduler(max_sequences=2, kv_tokens=1000, step_tokens=64)
    first, second, third = sequence(4), sequence(5), sequence(6)
    for each in (first, second, third):
        scheduler.add(each)
    run(scheduler.schedule())
    slot = first.slot
    scheduler.finish(first)
    plan = scheduler.schedule()
    assert fed(plan) == {id(second): 1, id(third): 6}
    assert third.slot == slot
    assert scheduler.waiting == 0


def test_a_long_prompt_is_read_in_chunks_after_the_decoders_are_served() -> None:
    scheduler = BatchScheduler(max_sequences=3, kv_tokens=2000, step_tokens=64)
    decoders = [sequence(4), sequence(4)]
    for each in decoders:
        scheduler.add(each)
    run(scheduler.schedule())
    long = sequence(150)
    scheduler.add(long)
    chunks = []
    while long.generated == 0:
        plan = scheduler.schedule()
        assert sum(feed.count for feed in plan.feeds) <= 64
        assert all(fed(plan)[id(each)] == 1 for each in decoders)
        chunks.append(fed(plan)[id(long)])
        run(plan)
    assert chunks == [62, 62, 26]
    assert long.computed == 150


def test_a_sequence_waits_for_kv_room_and_joins_once_there_is_some() -> None:
    scheduler = BatchScheduler(max_sequences=4, kv_tokens=100, step_tokens=64)
    big, other = sequence(60), sequence(50)
    scheduler.add(big)
    scheduler.add(other)
    plan = scheduler.schedule()
    assert fed(plan) == {id(big): 60}
    assert scheduler.waiting == 1
    run(plan)
    scheduler.finish(big)
    assert fed(scheduler.schedule()) == {id(other): 50}


def test_interactive_work_goes_first_and_preempts_the_youngest_batch_sequence() -> None:
    scheduler = BatchScheduler(max_sequences=2, kv_tokens=1000, step_tokens=64)
    older, younger = sequence(4, "batch"), sequence(4, "batch")
    scheduler.add(older)
    scheduler.add(younger)
    run(scheduler.schedule())
    run(scheduler.schedule())
    assert younger.computed == 5 and len(younger.tokens) == 6
    slot = younger.slot
    urgent = sequence(8, "interactive")
    scheduler.add(urgent)
    plan = scheduler.schedule()
    assert plan.preempted == [slot]
    assert urgent.slot == slot
    assert younger.slot is None and younger.computed == 0 and scheduler.waiting == 1
    assert fed(plan) == {id(urgent): 8}  # the batch sequence left pauses while urgent reads
    assert plan.paused == 1
    run(plan)
    assert fed(scheduler.schedule()) == {id(older): 1, id(urgent): 1}
    scheduler.finish(urgent)
    resumed = scheduler.schedule()
    assert fed(resumed)[id(younger)] == 6  # its prompt and what it had generated, recomputed


def test_batch_work_never_preempts_and_a_standard_sequence_waits_behind_interactive() -> None:
    scheduler = BatchScheduler(max_sequences=1, kv_tokens=1000, step_tokens=64)
    running = sequence(4, "standard")
    scheduler.add(running)
    run(scheduler.schedule())
    batch, interactive = sequence(4, "batch"), sequence(4, "interactive")
    scheduler.add(batch)
    scheduler.add(interactive)
    plan = scheduler.schedule()
    assert plan.preempted == [] and fed(plan) == {id(running): 1}
    scheduler.finish(running)
    assert fed(scheduler.schedule()) == {id(interactive): 4}


def test_when_the_kv_cache_fills_the_youngest_lowest_tier_sequence_is_preempted() -> None:
    scheduler = BatchScheduler(max_sequences=2, kv_tokens=20, step_tokens=64)
    first, second = sequence(9), sequence(9)
    scheduler.add(first)
    scheduler.add(second)
    run(scheduler.schedule())  # 18 cells computed, 20 needed after the next step
    run(scheduler.schedule())  # 20 computed; the next step needs 22
    plan = scheduler.schedule()
    assert plan.preempted == [1] and second.computed == 0
    assert fed(plan) == {id(first): 1}


def test_cancel_takes_a_waiting_sequence_out_and_drain_empties_the_room() -> None:
    scheduler = BatchScheduler(max_sequences=1, kv_tokens=100, step_tokens=64)
    running, leaving, staying = sequence(4), sequence(4), sequence(4)
    for each in (running, leaving, staying):
        scheduler.add(each)
    scheduler.schedule()
    assert scheduler.cancel(leaving) is True
    assert scheduler.cancel(running) is False
    assert scheduler.drain() == [staying]
    assert scheduler.waiting == 0


def test_a_new_sequence_takes_the_lowest_free_slot() -> None:
    # llama.cpp computes one pass over consecutive slots only: free slots are filled from below.
    scheduler = BatchScheduler(max_sequences=4, kv_tokens=1000, step_tokens=64)
    running = [sequence(3) for _ in range(4)]
    for each in running:
        scheduler.add(each)
    run(scheduler.schedule())
    assert [each.slot for each in running] == [0, 1, 2, 3]
    scheduler.finish(running[2])
    scheduler.finish(running[0])
    later, last = sequence(3), sequence(3)
    scheduler.add(later)
    scheduler.add(last)
    scheduler.schedule()
    assert (later.slot, last.slot) == (0, 2)


def test_a_longer_prefix_kept_in_another_free_slot_is_copied_into_the_lowest() -> None:
    scheduler = BatchScheduler(max_sequences=3, kv_tokens=1000, step_tokens=64,
                               keep_prefixes=True)
    system = list(range(100, 120))
    other = Sequence(Job(CompletionRequest("p")), [*system, 7, 8, 9], 10)
    first = Sequence(Job(CompletionRequest("p")), [*system, 1, 2, 3], 10)
    scheduler.add(other)
    scheduler.add(first)
    run(scheduler.schedule())
    assert (other.slot, first.slot) == (0, 1)
    scheduler.finish(first)
    scheduler.finish(other)
    again = Sequence(Job(CompletionRequest("p")), [*system, 1, 2, 4, 5], 10)
    scheduler.add(again)
    plan = scheduler.schedule()
    assert again.slot == 0 and plan.copies == [(1, 0)]
    assert again.computed == again.reused == 22
    assert [(feed.count, feed.samples) for feed in plan.feeds] == [(2, True)]
    run(plan)
    scheduler.finish(again)
    same_system = Sequence(Job(CompletionRequest("p")), [*system, 6], 10)
    scheduler.add(same_system)
    plan = scheduler.schedule()  # slot 0 shares as much as any other: nothing to copy
    assert same_system.slot == 0 and plan.copies == []
    assert same_system.computed == 20


def test_interactive_work_reads_only_what_it_does_not_share_with_the_preempted_sequence() -> None:
    scheduler = BatchScheduler(max_sequences=1, kv_tokens=1000, step_tokens=64,
                               keep_prefixes=True)
    system = list(range(100, 120))
    batch = Sequence(Job(CompletionRequest("p"), tier="batch"), [*system, 1, 2], 10)
    scheduler.add(batch)
    run(scheduler.schedule())
    run(scheduler.schedule())  # the batch sequence decodes: 22 prompt tokens, 2 generated
    urgent = Sequence(Job(CompletionRequest("p"), tier="interactive"), [*system, 3, 4, 5], 10)
    scheduler.add(urgent)
    plan = scheduler.schedule()
    assert plan.preempted == [0] and urgent.slot == 0
    assert urgent.computed == urgent.reused == 20  # the system prompt is still in the slot
    assert fed(plan) == {id(urgent): 3}
    run(plan)
    scheduler.finish(urgent)
    resumed = scheduler.schedule()  # back in its slot: it shares the system prompt with urgent's
    assert batch.slot == 0 and fed(resumed) == {id(batch): 4}


@pytest.mark.parametrize(("keep_prefixes", "feeds", "reused"), [(False, 20, 0), (True, 1, 19)],
                         ids=["without keep_prefixes every prompt is read whole",
                              "an identical prompt still feeds its last token for the logits"])
def test_a_repeated_prompt_reads_what_the_kept_prefix_lacks(keep_prefixes: bool, feeds: int,
                                                            reused: int) -> None:
    scheduler = BatchScheduler(max_sequences=1, kv_tokens=1000, step_tokens=64,
                               keep_prefixes=keep_prefixes)
    first = sequence(20)
    scheduler.add(first)
    run(scheduler.schedule())
    scheduler.finish(first)
    again = sequence(20)
    scheduler.add(again)
    assert fed(scheduler.schedule()) == {id(again): feeds}
    assert again.reused == reused
