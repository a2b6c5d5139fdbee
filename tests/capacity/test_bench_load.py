"""bench's load levels against the real simulator and purpose-built aiohttp servers: counts,
arrival spacing, coordinated omission, the latency definitions, errors by type."""

from __future__ import annotations

import asyncio
import gc
import io
import random
import statistics
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import pytest
from aiohttp import web

from switchgear.capacity.bench.client import Outcome
from switchgear.capacity.bench.figures import RequestTimes, summary
from switchgear.capacity.bench.load import (
    CONCURRENCY,
    CONSTANT,
    POISSON,
    Level,
    LevelRun,
    arrival_offsets,
)
from switchgear.capacity.bench.progress import ProgressBar
from switchgear.capacity.bench.workload import Lengths, synthetic
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import BackgroundLoop, aiohttp_server

FAST = ModelOptions(ttft_ms=2, tpot_ms=0.5, mean_output_tokens=1000, slots=16, seed=3,
                    load_factor=0)
Simulators = Callable[..., RunningSimulator]
RunLevels = Callable[..., dict[str, Any]]
COMPLETION = {"choices": [{"message": {"content": "hi"}}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def _max_in_flight(levels: list[Outcome]) -> int:
    events = sorted([(o.sent_at, 1) for o in levels] + [(o.done_at, -1) for o in levels])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_closed_loop_keeps_n_outstanding_and_counts_every_request(
        simulators: Simulators, run_levels: RunLevels) -> None:
    sim = simulators(FAST)
    profile = run_levels(sim.base_url, [Level(CONCURRENCY, 1.0, 0.3, concurrency=3)],
                         ignore_eos=True)
    level = profile["levels"][0]
    assert level["mode"] == "concurrency" and level["concurrency"] == 3
    assert level["sent"] == level["completed"] > 30
    assert level["errors"] == {}
    assert all(at >= 0 for at in level["samples"]["scheduled_at"])  # warm-up left out
    assert level["warmup_requests"] >= 3
    assert level["samples"]["output_tokens"] == [4] * level["completed"]  # ignore_eos: all of it
    assert level["request_rate"] == pytest.approx(level["completed"] / level["duration_s"])


def test_closed_loop_never_has_more_than_n_in_flight(simulators: Simulators) -> None:
    from switchgear.capacity.bench.client import Endpoint
    from switchgear.capacity.bench.load import run_level

    sim = simulators(FAST)
    endpoint = Endpoint.of(sim.base_url, "/chat/completions")
    requests = synthetic(Lengths(8), Lengths(4), 4, 1).requests(
        endpoint, "chat", "sim", stream=False, ignore_eos=False, headers={})
    frozen_while_running: list[int] = []

    async def level() -> LevelRun:
        running = asyncio.ensure_future(run_level(
            endpoint, requests, Level(CONCURRENCY, 0.8, concurrency=3), max_connections=100,
            timeout_s=10))
        await asyncio.sleep(0.5)
        frozen_while_running.append(gc.get_freeze_count())
        return await running

    run = asyncio.run(level())
    assert _max_in_flight(run.outcomes) == 3
    assert run.queued == 0  # a freed connection goes straight to the next request
    # While it ran, what it kept was out of the collector's full passes; after, nothing is.
    assert frozen_while_running[0] > 0
    assert gc.get_freeze_count() == 0


def test_open_loop_constant_rate_sends_rate_times_duration_evenly_spaced(
        simulators: Simulators, run_levels: RunLevels) -> None:
    sim = simulators(FAST)
    profile = run_levels(sim.base_url, [Level(CONSTANT, 1.0, 0.2, rate=50)])
    level = profile["levels"][0]
    assert level["sent"] == level["completed"] == 50
    scheduled = sorted(level["samples"]["scheduled_at"])
    gaps = [b - a for a, b in pairwise(scheduled)]
    assert gaps == pytest.approx([0.02] * 49, abs=1e-6)


def test_poisson_arrivals_have_exponential_gaps_and_constant_ones_none() -> None:
    rng = random.Random(5)
    poisson = list(arrival_offsets(POISSON, 200.0, 50.0, rng))
    gaps = [b - a for a, b in pairwise(poisson)]
    assert len(poisson) == pytest.approx(10_000, rel=0.05)
    assert statistics.fmean(gaps) == pytest.approx(1 / 200, rel=0.05)
    # An exponential's standard deviation equals its mean (coefficient of variation 1).
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.05)
    constant = list(arrival_offsets(CONSTANT, 200.0, 50.0, rng))
    assert len(constant) == 10_000
    assert statistics.pstdev([b - a for a, b in pairwise(constant)]) == pytest.approx(0.0,
                                                                                   abs=1e-9)


def test_poisson_level_against_the_simulator_is_irregular_and_seeded(
        simulators: Simulators, run_levels: RunLevels) -> None:
    sim = simulators(FAST)
    runs = [run_levels(sim.base_url, [Level(POISSON, 1.0, rate=100)], seed=9) for _ in range(2)]
    scheduled = [sorted(run["levels"][0]["samples"]["scheduled_at"]) for run in runs]
    assert scheduled[0] == pytest.approx(scheduled[1], abs=1e-6)  # same seed, same arrivals
    gaps = [b - a for a, b in zip(scheduled[0], scheduled[0][1:], strict=False)]
    assert 60 <= len(scheduled[0]) <= 140
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) > 0.6


@pytest.fixture
def stalling_server(background: BackgroundLoop) -> Iterator[str]:
    """Answers at once, except the 10th request, which it holds for half a second."""
    seen = [0]

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        seen[0] += 1
        if seen[0] == 10:
            await asyncio.sleep(0.5)
        return web.json_response(COMPLETION)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    with aiohttp_server(app, background) as url:
        yield url + "/v1"


def test_latency_counts_from_the_scheduled_time_so_a_stall_is_not_hidden(
        stalling_server: str, run_levels: RunLevels) -> None:
    rate = 40.0
    profile = run_levels(stalling_server, [Level(CONSTANT, 1.5, rate=rate)], stream=False,
                         max_connections=1)
    level = profile["levels"][0]
    assert level["sent"] == level["completed"] == 60  # nothing skipped while stalled
    samples = sorted(zip(level["samples"]["scheduled_at"], level["samples"]["e2e"],
                         strict=True))
    stall_start = samples[9][0]
    # Requests due during the stall waited for the one connection: their latency counts the
    # wait, shrinking by one arrival gap each (a coordinated-omission client would show ~0).
    for index in (10, 11, 15):
        scheduled, e2e = samples[index]
        assert e2e >= 0.5 - (scheduled - stall_start) - 0.01
    assert level["latency_s"]["e2e"]["max"] >= 0.5
    assert level["latency_s"]["e2e"]["p90"] >= 0.2
    # The one connection kept requests from going out on time: the client says so.
    client = level["client"]
    assert client["saturated"] and client["late_p99_s"] >= 0.2
    assert any("requests waited for a free connection (--max-connections)" in reason
               for reason in client["reasons"])


def test_ttft_itl_tpot_follow_vllm_definitions_on_known_timing(
        simulators: Simulators, run_levels: RunLevels) -> None:
    sim = simulators(ModelOptions(ttft_ms=60, tpot_ms=20, mean_output_tokens=1000, slots=4,
                                  load_factor=0, seed=1))
    profile = run_levels(sim.base_url, [Level(CONCURRENCY, 0.8, concurrency=1)],
                         workload=synthetic(Lengths(8), Lengths(6), 2, 1), ignore_eos=True)
    level = profile["levels"][0]
    latency, samples = level["latency_s"], level["samples"]
    assert samples["output_tokens"] == [6] * level["completed"]
    # The server sleeps 60 ms before the first token and 20 ms before each next one.
    assert 0.06 <= latency["ttft"]["p50"] < 0.09
    assert 0.02 <= latency["itl"]["p50"] < 0.03
    assert 0.02 <= latency["tpot"]["p50"] < 0.03
    for e2e, ttft in zip(samples["e2e"], samples["ttft"], strict=True):
        assert e2e >= ttft + 5 * 0.02


def test_request_times_of_a_stream_with_exact_timing() -> None:
    outcome = Outcome(scheduled_at=10.0, input_tokens=5, sent_at=10.5, done_at=11.5,
                      token_times=[10.7, 10.9, 11.0, 11.4], output_tokens=5)
    times = RequestTimes.of(outcome)
    assert times.e2e == pytest.approx(1.5)  # from the scheduled time, not the send
    assert times.ttft == pytest.approx(0.7)
    assert times.tpot == pytest.approx((1.5 - 0.7) / 4)
    assert times.itl == pytest.approx([0.2, 0.1, 0.4])
    single = RequestTimes.of(Outcome(0.0, 1, 0.0, 1.0, [0.5], 1))
    assert single.tpot is None  # one output token has no time per further token


def test_level_percentiles_are_nearest_rank_observed_values() -> None:
    four = summary([4.0, 1.0, 3.0, 2.0])
    assert (four["p50"], four["p90"], four["p99"]) == (2.0, 4.0, 4.0)  # never 2.5
    hundred = summary([float(value) for value in range(100, 0, -1)])
    assert (hundred["p50"], hundred["p90"], hundred["p95"], hundred["p99"]) == (50, 90, 95, 99)
    assert summary([7.0])["p99"] == 7.0
    rng = random.Random(3)
    values = [rng.lognormvariate(0, 1) for _ in range(997)]
    numpy = pytest.importorskip("numpy")
    for q in (50, 90, 95, 99):
        assert summary(values)[f"p{q}"] == numpy.quantile(values, q / 100,
                                                          method="inverted_cdf")


def test_errors_are_counted_by_type(simulators: Simulators, run_levels: RunLevels,
                                    refused_url: Callable[..., str]) -> None:
    failing = simulators(FAST, Faults(error_rate=1.0, error_status=503))
    resetting = simulators(FAST, Faults(reset_rate=1.0))
    hanging = simulators(FAST, Faults(hang_rate=1.0))
    level = [Level(CONCURRENCY, 0.4, concurrency=2)]
    assert set(run_levels(failing.base_url, level)["levels"][0]["errors"]) == {"http_503"}
    assert set(run_levels(resetting.base_url, level)["levels"][0]["errors"]) == {"connection"}
    hung = run_levels(hanging.base_url, level, timeout_s=0.2)["levels"][0]
    assert set(hung["errors"]) == {"timeout"}
    assert hung["completed"] == 0 and hung["error_rate"] == 1.0
    nobody = refused_url() + "/v1"
    assert set(run_levels(nobody, level)["levels"][0]["errors"]) == {"connection"}


def test_an_unreadable_answer_is_malformed(background: BackgroundLoop,
                                           run_levels: RunLevels) -> None:
    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="not json", content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    with aiohttp_server(app, background) as url:
        for stream in (False, True):
            profile = run_levels(url + "/v1", [Level(CONCURRENCY, 0.3, concurrency=1)],
                                 stream=stream)
            assert set(profile["levels"][0]["errors"]) == {"malformed"}


def test_the_api_key_is_sent_as_a_bearer_token(background: BackgroundLoop,
                                               run_levels: RunLevels) -> None:
    from switchgear.simulator.server import start_simulator

    sim = background.run(start_simulator(FAST, api_key="sekret"))
    try:
        level = [Level(CONCURRENCY, 0.3, concurrency=1)]
        assert run_levels(sim.base_url, level, api_key="sekret")["levels"][0]["errors"] == {}
        refused = run_levels(sim.base_url, level)["levels"][0]
        assert set(refused["errors"]) == {"http_401"} and refused["completed"] == 0
    finally:
        background.run(sim.stop())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_redraws_on_a_terminal_and_prints_one_line_elsewhere() -> None:
    terminal, log = _Terminal(), io.StringIO()
    for stream in (terminal, log):
        bar = ProgressBar(stream)
        show = bar.level("c=4", 10.0)
        show(10, 8, 1, 5.0)
        show(20, 20, 1, 10.0)
        bar.level_done("c=4  2.0 req/s")
    frames = terminal.getvalue().split("\r")
    assert "[############------------]   5.0/10.0 s  sent 10  done 8  failed 1" in frames[1]
    assert "[########################]" in frames[2]
    assert frames[-1] == "\033[Kc=4  2.0 req/s\n"
    assert log.getvalue() == "c=4  2.0 req/s\n"
