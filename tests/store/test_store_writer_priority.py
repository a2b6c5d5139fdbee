"""The SQLite writer thread yields the core while it keeps up, and competes when it falls behind."""

from __future__ import annotations

import os
import threading
import time

from switchgear.store.sqlite import BEHIND_SECONDS, WriterPriority


def _policies(steps: list[float]) -> list[int]:
    """Run ``adjust`` in a fresh thread for batches finished ``lag`` seconds ago; the policies."""
    seen: list[int] = []

    def run() -> None:
        priority = WriterPriority()
        for lag in steps:
            priority.adjust(time.time() - lag)
            seen.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return seen


def test_fresh_batches_idle_late_batches_compete_then_idle_again() -> None:
    late = BEHIND_SECONDS * 2
    assert _policies([0.0, 0.1, late, 1.0, 0.0]) == [
        os.SCHED_IDLE, os.SCHED_IDLE, os.SCHED_OTHER, os.SCHED_OTHER, os.SCHED_IDLE]


def test_the_main_thread_is_left_alone() -> None:
    _policies([0.0])
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
