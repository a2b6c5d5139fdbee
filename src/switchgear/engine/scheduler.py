"""Schedulers decide which waiting job the engine runs next; they never run anything themselves.

A scheduler is a plain data structure: the engine serialises every call to it under its own lock,
so implementations need no locking of their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque

from switchgear.engine.job import Job


class Scheduler(ABC):
    """The engine's waiting room: jobs go in with ``add`` and come out in the order it decides."""

    @abstractmethod
    def add(self, job: Job) -> None:
        """Put ``job`` in the waiting room."""

    @abstractmethod
    def next(self) -> Job | None:
        """Take the job to run next out of the waiting room; ``None`` when nothing waits."""

    @abstractmethod
    def cancel(self, job: Job) -> bool:
        """Mark ``job`` cancelled and take it out if it waits; True when it was still waiting."""

    @abstractmethod
    def __len__(self) -> int:
        """How many jobs wait."""

    def drain(self) -> list[Job]:
        """Take every waiting job out, in the order they would have run."""
        jobs = []
        while (job := self.next()) is not None:
            jobs.append(job)
        return jobs


class FifoScheduler(Scheduler):
    """First come, first served: jobs run in the order they were added."""

    def __init__(self) -> None:
        self._waiting: deque[Job] = deque()

    def add(self, job: Job) -> None:
        """Queue ``job`` behind every job already waiting."""
        self._waiting.append(job)

    def next(self) -> Job | None:
        """The job that has waited longest."""
        return self._waiting.popleft() if self._waiting else None

    def cancel(self, job: Job) -> bool:
        """Mark ``job`` cancelled and drop it from the queue if it is there."""
        job.cancel()
        try:
            self._waiting.remove(job)
        except ValueError:
            return False
        return True

    def __len__(self) -> int:
        """How many jobs wait."""
        return len(self._waiting)
