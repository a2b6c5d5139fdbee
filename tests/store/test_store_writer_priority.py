"""The SQLite writer thread yields the core while it keeps up, competes when it falls behind,
and is never starved while it yields."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from switchgear.store.sqlite import (
    BEHIND_RECORDS,
    BEHIND_SECONDS,
    CAUGHT_UP_RECORDS,
    YIELDING_NICE,
    WriterPriority,
)


def _in_a_thread(work: threading.Thread) -> None:
    work.start()
    work.join(30)
    assert not work.is_alive()


def _nice_values(steps: list[float], backlogs: list[int] | None = None) -> list[int]:
    """Run ``adjust`` in a fresh thread for batches finished ``lag`` seconds ago, with
    ``backlogs`` records behind them (none by default); the thread's nice value after each."""
    seen: list[int] = []

    def run() -> None:
        priority = WriterPriority()
        for lag, backlog in zip(steps, backlogs or [0] * len(steps), strict=True):
            priority.adjust(time.time() - lag, backlog)
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    _in_a_thread(threading.Thread(target=run))
    return seen


def test_fresh_batches_yield_late_batches_compete_then_yield_again() -> None:
    late = BEHIND_SECONDS * 2
    assert _nice_values([0.0, 0.1, late, 1.0, 0.0]) == [
        YIELDING_NICE, YIELDING_NICE, 0, 0, YIELDING_NICE]


def test_a_long_backlog_competes_until_it_is_short_again() -> None:
    """Fresh batches with many records behind them: at a high request rate a lag of seconds
    is too many records to hold, so the count decides too (the backlog's memory stays bounded)."""
    many, some, few = BEHIND_RECORDS + 1, CAUGHT_UP_RECORDS + 1, CAUGHT_UP_RECORDS
    assert _nice_values([0.0] * 5, [0, many, some, few, many]) == [
        YIELDING_NICE, 0, 0, YIELDING_NICE, 0]


def test_the_main_thread_is_left_alone() -> None:
    _nice_values([0.0])
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0


def test_a_yielding_writer_still_gets_the_core_while_something_else_keeps_it_busy() -> None:
    """Another process spins on the core the writer thread is pinned to: the yielding thread
    still gets a share of it (idle scheduling, used before, starved it there mid-batch, so
    records piled up until the memory bound dropped them)."""
    core = min(os.sched_getaffinity(0))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    used: list[float] = []

    def spin_while_yielding() -> None:
        os.sched_setaffinity(0, {core})  # this thread only
        WriterPriority().adjust(time.time())
        started, deadline = time.thread_time(), time.monotonic() + 2.0
        while time.monotonic() < deadline:
            pass
        used.append(time.thread_time() - started)

    try:
        os.sched_setaffinity(spinner.pid, {core})
        _in_a_thread(threading.Thread(target=spin_while_yielding))
    finally:
        spinner.kill()
        spinner.wait()
    # Nice 10 against nice 0 is a tenth of the core (0.2 s of 2); idle scheduling gave 0.006 s.
    assert used[0] > 0.05


def test_without_privileges_the_writer_keeps_yielding_and_keeps_writing() -> None:
    """A process that may not raise a thread's priority (no CAP_SYS_NICE, RLIMIT_NICE 0, as an
    unprivileged service runs) yields once and stays there: falling behind is no error."""
    script = (
        "import os, resource, threading, time\n"
        "from switchgear.store.sqlite import BEHIND_SECONDS, WriterPriority\n"
        "resource.setrlimit(resource.RLIMIT_NICE, (0, 0))\n"
        "def run():\n"
        "    priority, me = WriterPriority(), threading.get_native_id()\n"
        "    for lag in (0.0, BEHIND_SECONDS * 2, 0.0):\n"
        "        priority.adjust(time.time() - lag)\n"
        "        print(os.getpriority(os.PRIO_PROCESS, me), priority.yielding)\n"
        "thread = threading.Thread(target=run)\n"
        "thread.start()\n"
        "thread.join()\n"
    )
    # setpriv (util-linux) takes CAP_SYS_NICE away from the child, root or not.
    unprivileged = subprocess.run(
        ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", sys.executable, "-c",
         script], capture_output=True, text=True, timeout=60, check=False)
    assert unprivileged.returncode == 0, unprivileged.stderr
    assert unprivileged.stdout.split("\n")[:3] == [f"{YIELDING_NICE} True"] * 3
