"""What the engine reports about itself: slots, queue, KV-cache use, throughput, utilization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchgear.engine.scheduler import Plan


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of the engine.

    ``utilization`` is the share of the time since start that the engine spent running steps
    (useful work), the figure the cost of a self-hosted deployment is divided by. Token counts
    and ``busy_seconds`` grow monotonically (Prometheus counters); ``last_batch_tokens`` is the
    size of the latest step's batch.
    """

    busy_slots: int
    slots: int
    waiting: int
    kv_used: int
    kv_tokens: int
    steps: int
    fed_tokens: int
    generated_tokens: int
    last_batch_tokens: int
    last_batch_sequences: int
    preemptions: int
    interrupted_steps: int
    busy_seconds: float
    uptime_seconds: float

    @property
    def utilization(self) -> float:
        """Share of the uptime spent running steps (0 before the first second)."""
        return self.busy_seconds / self.uptime_seconds if self.uptime_seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per busy second (the engine's decode rate while it works)."""
        return self.generated_tokens / self.busy_seconds if self.busy_seconds > 0 else 0.0


class StepCounters:
    """Counts the engine's steps; written by its worker thread only, read under its lock."""

    def __init__(self) -> None:
        self._started = 0.0
        self.steps = 0
        self.fed_tokens = 0
        self.generated_tokens = 0
        self.last_batch_tokens = 0
        self.last_batch_sequences = 0
        self.preemptions = 0
        self.interrupted_steps = 0
        self.busy_seconds = 0.0

    def restart(self, now: float) -> None:
        """Start counting uptime at ``now`` (monotonic seconds)."""
        self._started = now

    def record(self, plan: Plan, seconds: float) -> None:
        """Count one step that ran ``plan`` in ``seconds``."""
        self.steps += 1
        self.busy_seconds += seconds
        self.preemptions += len(plan.preempted)
        self.last_batch_sequences = len(plan.feeds)
        self.last_batch_tokens = sum(feed.count for feed in plan.feeds)
        self.fed_tokens += self.last_batch_tokens
        self.generated_tokens += sum(1 for feed in plan.feeds if feed.samples)

    def record_interrupted(self, seconds: float) -> None:
        """Count a step that was stopped for higher-tier work after ``seconds``."""
        self.interrupted_steps += 1
        self.busy_seconds += seconds

    def snapshot(self, *, busy_slots: int, slots: int, waiting: int, kv_used: int,
                 kv_tokens: int, now: float) -> EngineStats:
        """These counters with the scheduler's current state."""
        return EngineStats(
            busy_slots=busy_slots, slots=slots, waiting=waiting, kv_used=kv_used,
            kv_tokens=kv_tokens, steps=self.steps, fed_tokens=self.fed_tokens,
            generated_tokens=self.generated_tokens, last_batch_tokens=self.last_batch_tokens,
            last_batch_sequences=self.last_batch_sequences, preemptions=self.preemptions,
            interrupted_steps=self.interrupted_steps, busy_seconds=self.busy_seconds,
            uptime_seconds=max(0.0, now - self._started))
