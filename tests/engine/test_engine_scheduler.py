"""The FIFO scheduler: order of arrival, cancellation, draining."""

from __future__ import annotations

from switchgear.engine.job import CompletionRequest, Job
from switchgear.engine.scheduler import FifoScheduler


def make_jobs(count: int) -> list[Job]:
    return [Job(CompletionRequest(f"prompt {index}")) for index in range(count)]


def test_jobs_leave_in_the_order_they_arrived() -> None:
    scheduler = FifoScheduler()
    jobs = make_jobs(4)
    for job in jobs:
        scheduler.add(job)
    assert len(scheduler) == 4
    assert [scheduler.next() for _ in jobs] == jobs
    assert scheduler.next() is None
    assert len(scheduler) == 0


def test_cancelling_a_waiting_job_removes_it_and_marks_it() -> None:
    scheduler = FifoScheduler()
    first, second, third = make_jobs(3)
    for job in (first, second, third):
        scheduler.add(job)
    assert scheduler.cancel(second) is True
    assert second.cancelled.is_set()
    assert len(scheduler) == 2
    assert scheduler.cancel(second) is False
    assert scheduler.drain() == [first, third]
    assert len(scheduler) == 0


def test_cancelling_a_job_that_no_longer_waits_only_marks_it() -> None:
    scheduler = FifoScheduler()
    (job,) = make_jobs(1)
    scheduler.add(job)
    assert scheduler.next() is job
    assert scheduler.cancel(job) is False
    assert job.cancelled.is_set()
