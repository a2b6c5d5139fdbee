"""bench watches itself: a level whose client was busy is marked saturated, with the reasons, in
the profile, the table, the CSV, the HTML and the progress line; a latency-bound level is not.

The client is made busy for real: a callback on its own event loop that keeps the loop's thread
spinning, as a client too slow for its target would; the targets are real simulators, each in a
process of its own as bench's targets are."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from typing import Any

import pytest

from switchgear.capacity.bench.figures import SLO
from switchgear.capacity.bench.load import CONCURRENCY, CONSTANT, Level
from switchgear.capacity.bench.monitor import (
    LATE_P99_BOUND_S,
    LOOP_LAG_P99_BOUND_S,
    SATURATED_CPU_SHARE,
    ClientLoad,
    ClientMonitor,
    client_health,
)
from switchgear.capacity.bench.outputs import csv_text, html_report, text_table
from switchgear.capacity.bench.progress import ProgressBar
from switchgear.capacity.bench.runner import Bench, Target
from switchgear.capacity.bench.workload import Lengths, synthetic

from servers import simulator_process

#: The simulators are ``switchgear simulate`` processes, as bench's targets are: one in the
#: test's process would hold the GIL for up to 5 ms at a time, which the client's loop would
#: count as its own work. Answers at once (2 ms for the first token, the rest 0.5 ms each): the
#: client sets the pace.
FAST = ["--ttft-ms", "2", "--tpot-ms", "0.5", "--mean-output-tokens", "1000", "--slots", "64",
        "--seed", "3", "--load-factor", "0"]
#: Every answer takes 50 ms: the client waits far more than it works.
SLOW = ["--ttft-ms", "50", "--tpot-ms", "0", "--mean-output-tokens", "1", "--slots", "64",
        "--seed", "3", "--load-factor", "0"]
#: How long each turn of the busy callback holds the client's loop.
SPIN_S = 0.02


def _spin_forever(loop: asyncio.AbstractEventLoop) -> None:
    """Hold the loop's thread for ``SPIN_S``, then queue itself again: the client gets a
    moment between turns to send and read, but is never idle."""
    until = time.perf_counter() + SPIN_S
    while time.perf_counter() < until:
        pass
    loop.call_soon(_spin_forever, loop)


def _bench(url: str, progress: io.StringIO | None = None) -> Bench:
    return Bench(Target(url, "sim", "chat", stream=False, ignore_eos=True),
                 synthetic(Lengths(16), Lengths(1), 4, seed=1), SLO(), seed=0,
                 progress=ProgressBar(progress or io.StringIO()))


def _run(bench: Bench, levels: list[Level], busy: bool) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        if busy:
            loop = asyncio.get_running_loop()
            loop.call_soon(_spin_forever, loop)
        return await bench.levels(levels)

    return asyncio.run(run())


def test_a_client_kept_busy_marks_its_levels_saturated_and_says_why() -> None:
    progress = io.StringIO()
    with simulator_process(*FAST) as base_url:
        profile = _run(_bench(base_url, progress), [Level(CONCURRENCY, 1.0, concurrency=8),
                                                    Level(CONSTANT, 1.0, rate=200)], busy=True)
    closed, opened = profile["levels"]
    for level in (closed, opened):
        client = level["client"]
        assert level["completed"] > 0
        assert client["saturated"] is True
        assert client["loop_lag_p99_s"] > LOOP_LAG_P99_BOUND_S
        assert any("event loop ran" in reason for reason in client["reasons"])
    assert closed["client"]["late_p99_s"] is None
    assert opened["client"]["late_p99_s"] > LATE_P99_BOUND_S
    assert any("late (p99) against the schedule" in reason
               for reason in opened["client"]["reasons"])
    # The progress line says so as each level ends.
    lines = progress.getvalue().splitlines()
    assert len(lines) == 2 and all("CLIENT SATURATED: " in line for line in lines)


def test_a_latency_bound_level_is_not_marked() -> None:
    with simulator_process(*SLOW) as base_url:
        profile = _run(_bench(base_url), [Level(CONCURRENCY, 1.0, concurrency=2),
                                          Level(CONSTANT, 1.0, rate=20)], busy=False)
    for level in profile["levels"]:
        client = level["client"]
        assert level["completed"] >= 18
        assert level["latency_s"]["e2e"]["p50"] >= 0.05
        assert client["saturated"] is False and client["reasons"] == [], client
        assert 0 <= client["cpu_share"] < SATURATED_CPU_SHARE
        assert client["cpu_per_request_s"] > 0


def test_the_monitor_sees_a_blocked_loop() -> None:
    async def blocked_for(seconds: float) -> ClientLoad:
        monitor = ClientMonitor(interval_s=0.005)
        monitor.start()
        await asyncio.sleep(0.02)
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0.02)
        return monitor.stop()

    load = asyncio.run(blocked_for(0.06))
    assert len(load.lags_s) >= 3
    # The tick due during the block fired after it: at least the block's end minus its due time.
    assert max(load.lags_s) >= 0.03
    assert load.cpu_s > 0 and load.wall_s >= 0.1


def test_client_health_names_each_limit_it_crossed() -> None:
    calm = client_health(ClientLoad(cpu_s=0.2, wall_s=1.0, lags_s=[0.0001] * 100),
                         late_s=[0.0005] * 100, requests=400)
    assert calm == {"cpu_share": 0.2, "cpu_wait_share": 0.0, "loop_lag_p99_s": 0.0001,
                    "late_p99_s": 0.0005, "cpu_per_request_s": 0.0005, "saturated": False,
                    "reasons": [], "notes": []}
    lags = [0.001] * 98 + [0.02, 0.03]  # p99 (nearest rank: the 99th of 100) is 20 ms
    busy = client_health(ClientLoad(cpu_s=0.97, wall_s=1.0, lags_s=lags),
                         late_s=[0.0] * 90 + [0.012] * 10, requests=1000, queued=7)
    assert busy["saturated"] is True
    assert busy["loop_lag_p99_s"] == 0.02 and busy["late_p99_s"] == 0.012
    assert busy["reasons"] == [
        "the client used 97% of a core: its figures measure itself",
        "the client's event loop ran 20.0 ms late (p99) with its own work: answers were read "
        "and timed that much after they arrived",
        "requests went out 12.0 ms late (p99) against the schedule; 7 requests waited for a free "
        "connection (--max-connections)"]
    closed = client_health(ClientLoad(cpu_s=0.95, wall_s=1.0, lags_s=[]), late_s=None,
                           requests=0)
    assert closed["late_p99_s"] is None and closed["loop_lag_p99_s"] is None
    assert closed["cpu_per_request_s"] is None and closed["saturated"] is True


def test_a_client_starved_of_cpu_is_told_apart_from_one_busy_with_itself() -> None:
    # Busy 30% of the time and waiting for a CPU 65%: never idle, so saturated all the same.
    starved = client_health(ClientLoad(0.3, 1.0, [0.001] * 100, wait_s=0.65), None, 100)
    assert starved["saturated"] and starved["cpu_wait_share"] == 0.65
    assert starved["reasons"] == ["the client used 30% of a core and waited 65% of the time for "
                                  "one (the machine was busy): its figures measure itself"]
    # Nearly idle, its loop late only while other work held the CPU: a note, not the mark.
    lags = [0.0005] * 95 + [0.008] * 5
    waited = client_health(ClientLoad(0.02, 1.0, lags, wait_s=0.04,
                                      own_lags_s=[0.0005] * 100), None, 40)
    assert not waited["saturated"] and waited["reasons"] == []
    assert waited["notes"] == ["the machine was busy: the client waited 4% of the level for a "
                               "CPU and its event loop ran 8.0 ms late (p99), so its latencies "
                               "may be that much high"]


def _profile(*clients: dict[str, Any] | None) -> dict[str, Any]:
    """A profile of one level per client object (None: a level written before bench measured
    itself, with no ``client`` key)."""
    empty = {"mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "max": None}
    levels = []
    for index, client in enumerate(clients):
        level = {"label": f"c={index + 1}", "mode": "concurrency", "concurrency": index + 1,
                 "rate": None, "duration_s": 1.0, "sent": 10, "completed": 10, "errors": {},
                 "error_rate": 0.0, "request_rate": 10.0, "goodput": 10.0,
                 "input_tokens_per_s": 1.0, "output_tokens_per_s": 1.0, "meets_slo": True,
                 "stopped": None, "latency_s": {name: dict(empty, p50=0.01, p95=0.02)
                                                for name in ("e2e", "ttft", "itl", "tpot")},
                 "samples": {"e2e": [0.01] * 10, "ttft": [0.01] * 10}}
        if client is not None:
            level["client"] = client
        levels.append(level)
    return {"target": {"url": "http://x/v1", "model": "m", "endpoint": "chat"},
            "percentile_method": "nearest-rank", "levels": levels, "sweep": None}


SATURATED_CLIENT = client_health(ClientLoad(0.99, 1.0, [0.02] * 10), None, 10)
#: Not saturated, but its loop was late while the machine's other work held the CPU: a note.
CALM_CLIENT = client_health(ClientLoad(0.1, 1.0, [0.008] * 10, wait_s=0.05,
                                       own_lags_s=[0.0] * 10), None, 10)


def test_the_table_csv_and_html_carry_the_mark_and_its_reasons() -> None:
    profile = _profile(SATURATED_CLIENT, CALM_CLIENT, None)
    lines = text_table(profile)
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    assert rows["c=1"][-2:] == ["99%", "SATURATED"]
    assert rows["c=2"][-2:] == ["10%", "ok"]
    assert rows["c=3"][-2:] == ["-", "-"]  # an old profile: not measured, not claimed
    assert "percentiles: nearest-rank" in lines
    explained = [line for line in lines if line.startswith("c=1: client SATURATED")]
    assert len(explained) == 1 and "99% of a core" in explained[0]
    assert "event loop ran 20.0 ms late" in explained[0]
    assert [line for line in lines if line.startswith(("c=2:", "c=3:"))] == [
        "c=2: note: " + CALM_CLIENT["notes"][0]]

    csv_rows = list(csv.DictReader(io.StringIO(csv_text(profile))))
    assert [row["client_saturated"] for row in csv_rows] == ["True", "False", ""]
    assert csv_rows[0]["client_reasons"] == "; ".join(SATURATED_CLIENT["reasons"])
    assert csv_rows[1]["client_notes"].startswith("the machine was busy")
    assert [row["client_cpu_share"] for row in csv_rows] == ["0.99", "0.1", ""]
    assert {row["percentile_method"] for row in csv_rows} == {"nearest-rank"}

    page = html_report(profile)
    assert "percentiles nearest-rank" in page
    assert page.count("SATURATED") >= 2  # the table cell and the paragraph of reasons
    assert "99% of a core" in page


@pytest.mark.parametrize("busy", [True, False])
def test_the_mark_survives_into_the_json_profile(busy: bool) -> None:
    import json

    with simulator_process(*(FAST if busy else SLOW)) as base_url:
        profile = _run(_bench(base_url), [Level(CONCURRENCY, 0.6, concurrency=2)], busy=busy)
    client = json.loads(json.dumps(profile))["levels"][0]["client"]
    assert client["saturated"] is busy and bool(client["reasons"]) is busy
