"""Overload experiment: a TierGate in front of a fixed-capacity simulator, offered 3x its capacity.

Run ``.venv/bin/python benchmarks/shedding/run.py`` (about 20 s with the defaults). Stdlib and
switchgear only: an in-process ``switchgear.simulator`` (fixed slots) is first measured closed-loop
to find what it can serve, then driven open-loop (Poisson arrivals, mixed interactive and batch)
at ``--load`` times that rate, every request passing through a :class:`TierGate` whose capacity is
the simulator's slots, over HTTP (aiohttp) to ``/v1/chat/completions``. Prints per tier: offered,
served, shed, queue wait and end-to-end latency (from the scheduled arrival, queueing included),
deepest queue, and the process's RSS over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from switchgear.admission.tiers import TierGate
from switchgear.capacity.machine import commit, cpu_model, load_average
from switchgear.errors import Overloaded
from switchgear.sections.tiers import TIERS, TierConfig
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import start_simulator

REPO = Path(__file__).resolve().parent.parent.parent
SAMPLE_SECONDS = 0.1


@dataclass
class TierResult:
    """What happened to one tier's requests."""

    offered: int = 0
    served: int = 0
    shed: int = 0
    shed_with_retry_after: int = 0
    errors: int = 0
    waits: list[float] = field(default_factory=list)  # served: arrival -> admitted
    latencies: list[float] = field(default_factory=list)  # served: arrival -> answer read
    shed_after: list[float] = field(default_factory=list)  # shed: arrival -> refusal


@dataclass
class Memory:
    """Samples of the process while the load runs."""

    rss_start_kib: int = 0
    rss_max_kib: int = 0
    rss_end_kib: int = 0
    max_waiting: int = 0
    max_tasks: int = 0


def rss_kib() -> int:
    """This process's resident set size in KiB (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0-100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def chat_body(model: str) -> dict[str, object]:
    """The small chat request every client sends."""
    return {"model": model, "messages": [{"role": "user", "content": "hello"}]}


async def post(session: aiohttp.ClientSession, url: str, model: str) -> int:
    """One completion; its HTTP status."""
    async with session.post(url, json=chat_body(model)) as response:
        await response.read()
        return response.status


async def calibrate(session: aiohttp.ClientSession, url: str, model: str, workers: int,
                    seconds: float) -> float:
    """Requests/s the simulator serves with ``workers`` closed-loop clients (its capacity)."""
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            if await post(session, url, model) == 200:
                done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return done / (time.monotonic() - started)


async def overload(session: aiohttp.ClientSession, url: str, model: str, gate: TierGate,
                   rate: float, interactive_share: float, seconds: float,
                   seed: int) -> tuple[dict[str, TierResult], Memory]:
    """Offer Poisson arrivals at ``rate``/s for ``seconds`` through ``gate``; wait for all."""
    results: dict[str, TierResult] = {tier: TierResult() for tier in TIERS}
    memory = Memory(rss_start_kib=rss_kib())
    rng = random.Random(seed)
    tasks: set[asyncio.Task[None]] = set()

    async def one(tier: str, arrival: float) -> None:
        result = results[tier]
        try:
            async with gate.slot(tier):
                admitted = time.monotonic()
                status = await post(session, url, model)
        except Overloaded as shed:
            result.shed += 1
            result.shed_with_retry_after += shed.retry_after is not None
            result.shed_after.append(time.monotonic() - arrival)
            return
        if status != 200:
            result.errors += 1
            return
        result.served += 1
        result.waits.append(admitted - arrival)
        result.latencies.append(time.monotonic() - arrival)

    async def sample() -> None:
        while True:
            memory.rss_max_kib = max(memory.rss_max_kib, rss_kib())
            memory.max_waiting = max(memory.max_waiting, gate.snapshot().waiting)
            memory.max_tasks = max(memory.max_tasks, len(tasks))
            await asyncio.sleep(SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample())
    start = time.monotonic()
    arrival = start
    while True:
        arrival += rng.expovariate(rate)
        if arrival - start >= seconds:
            break
        delay = arrival - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # late arrivals go at once: the schedule is kept
        tier = "interactive" if rng.random() < interactive_share else "batch"
        results[tier].offered += 1
        task = asyncio.create_task(one(tier, arrival))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    memory.rss_end_kib = rss_kib()
    memory.rss_max_kib = max(memory.rss_max_kib, memory.rss_end_kib)
    return results, memory


def ms(seconds: float) -> str:
    """Seconds as milliseconds text (or '-' for none)."""
    return "-" if seconds != seconds else f"{seconds * 1000:.1f}"


def table(results: dict[str, TierResult], gate: TierGate) -> str:
    """The per-tier figures as a plain-text table."""
    snapshot = gate.snapshot()
    header = (f"{'tier':<12}{'offered':>8}{'served':>8}{'shed':>7}{'w/RA':>6}{'errors':>7}"
              f"{'wait p50':>10}{'wait p99':>10}{'lat p50':>10}{'lat p99':>10}{'shed p99':>10}"
              f"{'max queue':>12}{'target':>9}")
    lines = [header, "-" * len(header)]
    for tier, result in results.items():
        if not result.offered:
            continue
        state = snapshot.tiers[tier]
        lines.append(
            f"{tier:<12}{result.offered:>8}{result.served:>8}{result.shed:>7}"
            f"{result.shed_with_retry_after:>6}{result.errors:>7}"
            f"{ms(percentile(result.waits, 50)):>10}{ms(percentile(result.waits, 99)):>10}"
            f"{ms(percentile(result.latencies, 50)):>10}{ms(percentile(result.latencies, 99)):>10}"
            f"{ms(percentile(result.shed_after, 99)):>10}"
            f"{f'{state.max_depth}/{state.max_queue}':>12}{state.wait_target_ms:>7g}ms")
    lines.append("(ms; wait = arrival to admitted, lat = arrival to answer read, both of served"
                 " requests; shed p99 = arrival to refusal; w/RA = sheds carrying Retry-After;"
                 " max queue = deepest / bound)")
    return "\n".join(lines)


def report(results: dict[str, TierResult], memory: Memory, gate: TierGate, seconds: float,
           capacity: float) -> None:
    """Print one overload run: its offered rate, the per-tier table and the memory line."""
    offered = sum(r.offered for r in results.values())
    print()
    print(f"Batch headroom {gate.config.batch.headroom}: offered {offered} requests in {seconds:g} s"
          f" = {offered / seconds:.1f} req/s ({offered / seconds / capacity:.2f}x capacity)")
    print(table(results, gate))
    print(f"Memory: RSS {memory.rss_start_kib / 1024:.1f} MiB at the start of the overload, "
          f"{memory.rss_max_kib / 1024:.1f} MiB at most, {memory.rss_end_kib / 1024:.1f} MiB at "
          f"the end; at most {memory.max_waiting} requests waiting (bound "
          f"{gate.config.waiting_bound}) and {memory.max_tasks} request tasks alive at once; "
          f"gate in use after the run: {gate.snapshot().in_use}.", flush=True)








def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="overload duration (10)")
    parser.add_argument("--load", type=float, default=3.0,
                        help="offered load as a multiple of the measured capacity (3)")
    parser.add_argument("--interactive-share", type=float, default=0.2,
                        help="share of arrivals that are interactive; the rest are batch (0.2)")
    parser.add_argument("--calibrate-seconds", type=float, default=3.0,
                        help="closed-loop run that measures the capacity (3)")
    parser.add_argument("--slots", type=int, default=4, help="simulator slots = gate capacity")
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--tpot-ms", type=float, default=2.0)
    parser.add_argument("--output-tokens", type=int, default=10, help="mean output tokens")
    parser.add_argument("--batch-headroom", default="0,1",
                        help="comma-separated batch headrooms, one overload run each (0,1)")
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args(argv)
    arguments.headrooms = [int(part) for part in arguments.batch_headroom.split(",") if part]
    if (arguments.seconds <= 0 or arguments.load <= 0 or arguments.slots < 1
            or not 0 <= arguments.interactive_share <= 1 or not arguments.headrooms
            or not all(0 <= h < arguments.slots for h in arguments.headrooms)):
        parser.error("seconds and load > 0, slots >= 1, interactive share within 0..1, "
                     "batch headrooms within 0..slots-1")
    return arguments


async def run(arguments: argparse.Namespace) -> int:
    """Calibrate, overload, print; 1 when a request failed other than by being shed."""
    options = ModelOptions(model="sim", slots=arguments.slots, ttft_ms=arguments.ttft_ms,
                           tpot_ms=arguments.tpot_ms, mean_output_tokens=arguments.output_tokens,
                           seed=arguments.seed)
    load_before = load_average()
    simulator = await start_simulator(options)
    url = f"{simulator.base_url}/chat/completions"
    connector = aiohttp.TCPConnector(limit=arguments.slots * 4)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            capacity = await calibrate(session, url, options.model, arguments.slots,
                                       arguments.calibrate_seconds)
            rate = capacity * arguments.load
            print(f"Capacity {capacity:.1f} req/s (measured); offering {rate:.1f} req/s "
                  f"({arguments.load:g}x) for {arguments.seconds:g} s per run", flush=True)
            errors = 0
            base = config = TierConfig(capacity=arguments.slots)
            for headroom in arguments.headrooms:
                config = TierConfig.model_validate({**base.model_dump(), "batch": {
                    **base.batch.model_dump(), "headroom": headroom}})
                gate = TierGate(config)
                results, memory = await overload(session, url, options.model, gate, rate,
                                                 arguments.interactive_share, arguments.seconds,
                                                 arguments.seed)
                errors += sum(r.errors for r in results.values())
                report(results, memory, gate, arguments.seconds, capacity)
    finally:
        await simulator.stop()
    print()
    print(
        f"Method: {platform.python_implementation()} {platform.python_version()} on"
        f" {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()});"
        f" switchgear at commit {commit(REPO)}; aiohttp {aiohttp.__version__}. One process, one"
        f" event loop: switchgear.simulator (slots={options.slots}, ttft={options.ttft_ms:g} ms,"
        f" tpot={options.tpot_ms:g} ms, mean output {options.mean_output_tokens} tokens,"
        f" lognormal spread {options.output_spread:g}, load factor {options.load_factor:g})"
        f" on a loopback port, and the load generator calling its /v1/chat/completions over"
        f" HTTP with one aiohttp session. Capacity: {options.slots} closed-loop clients for"
        f" {arguments.calibrate_seconds:g} s, no gate. Overload: open-loop Poisson arrivals at"
        f" {arguments.load:g}x that capacity for {arguments.seconds:g} s (seed {arguments.seed}),"
        f" {arguments.interactive_share:.0%} interactive, the rest batch; each arrival is its own"
        f" task that enters `async with TierGate.slot(tier)` (capacity {config.capacity};"
        f" interactive queue {config.interactive.max_queue} / {config.interactive.wait_target_ms:g}"
        f" ms, standard {config.standard.max_queue} / {config.standard.wait_target_ms:g} ms, batch"
        f" {config.batch.max_queue} / {config.batch.wait_target_ms:g} ms, {config.waiting_bound}"
        f" waiting at most; one run per batch headroom, {arguments.batch_headroom}, the same"
        f" arrival schedule each) and posts while it holds the place. Late arrivals are sent at once and"
        f" every time is taken from the scheduled arrival, so queueing and generator lag count"
        f" (no coordinated omission). After the last arrival the run waits for every request to"
        f" finish. Percentiles are nearest-rank over all requests of the tier. RSS is the whole"
        f" process (simulator, client and gate; the harness keeps one float per request for the"
        f" percentiles), sampled every {SAMPLE_SECONDS * 1000:g} ms. Load average (1/5/15 min)"
        f" before: {load_before}; after: {load_average()}."
    )
    return 1 if errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the experiment and print its table and method."""
    return asyncio.run(run(parse_arguments(argv)))


if __name__ == "__main__":
    sys.exit(main())
