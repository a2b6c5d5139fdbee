"""Measure the router's own decision cost: µs per request, per policy, with 3 and 100 deployments.

Run ``.venv/bin/python benchmarks/router/run.py``. Pure in-process, stdlib only (plus switchgear):
for every policy and deployment count it builds a Router over deployments with live-looking state
(latencies known, some requests in flight, different prices) and times, per request, what the
Route stage asks of the router before the first attempt: ``Router.resolve``, ``Router.plan`` and
``health.admit`` of the first pick.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from switchgear.backends.base import Body
from switchgear.capacity.machine import commit, cpu_model, load_average
from switchgear.config import Config
from switchgear.exchange import Exchange, Operation
from switchgear.routing.deployment import Deployment
from switchgear.routing.router import Router

REPO = Path(__file__).resolve().parent.parent.parent
POLICIES = ("weighted", "least_outstanding", "latency", "cost", "priority")
ALIAS = "chat"
#: The cost policy's latency target: about half of the deployments meet it (latencies 20-200 ms).
LATENCY_TARGET_MS = 100.0


class IdleBackend:
    """A backend that is never called: the router only reads a deployment's config and state."""

    name = "idle"

    async def start(self) -> None:
        """Not called by the router."""

    async def complete(self, operation: Operation, body: Body, tier: str = "standard") -> Body:
        """Not called by the router."""
        raise NotImplementedError

    def stream(
        self, operation: Operation, body: Body, tier: str = "standard"
    ) -> AsyncIterator[Body]:
        """Not called by the router."""
        raise NotImplementedError

    async def check(self) -> None:
        """Not called by the router."""

    async def aclose(self) -> None:
        """Not called by the router."""


@dataclass(frozen=True)
class Result:
    """One policy and deployment count: per-decision times in nanoseconds, summarized."""

    policy: str
    deployments: int
    decisions: int
    mean_ns: float
    p50_ns: float
    p99_ns: float

    @property
    def per_second(self) -> float:
        """Decisions per second on one core at the mean cost."""
        return 1e9 / self.mean_ns


def build_router(policy: str, count: int, seed: int) -> Router:
    """A router with one alias of ``count`` deployments under ``policy``, their live state seeded:
    weights 1-10, prices 0.2-10 per million tokens, peak-EWMA latencies 20-200 ms, 0-15 requests
    in flight (of 64)."""
    rng = random.Random(seed)
    deployments = [{
        "name": f"d{i}", "backend": "simulated", "weight": rng.randint(1, 10),
        "price": {"input_per_million": round(rng.uniform(0.1, 5), 2),
                  "output_per_million": round(rng.uniform(0.1, 5), 2)},
    } for i in range(count)]
    model = {"policy": policy, "deployments": deployments, "latency_target_ms": LATENCY_TARGET_MS}
    models = Config.model_validate({"models": {ALIAS: model}}).models
    live = [Deployment(ALIAS, d, IdleBackend()) for d in models[ALIAS].deployments]
    now = time.monotonic()
    for deployment in live:
        latency = rng.uniform(0.02, 0.2)
        deployment.health.succeeded(latency, latency * 5, now)
        deployment.in_flight = rng.randint(0, 15)
    return Router(models, {ALIAS: live}, seed=seed)


def measure(policy: str, count: int, decisions: int, warmup: int, seed: int) -> Result:
    """Time ``decisions`` routing decisions (after ``warmup`` untimed ones)."""
    router = build_router(policy, count, seed)
    exchange = Exchange(request_id="bench", operation=Operation.CHAT,
                        body={"messages": [{"role": "user", "content": "hi"}]}, model=ALIAS)
    resolve, plan, monotonic, clock = router.resolve, router.plan, time.monotonic, time.perf_counter_ns
    for _ in range(warmup):
        plan(resolve(exchange))[0].health.admit(monotonic())
    samples = [0] * decisions
    gc.collect()
    for i in range(decisions):
        started = clock()
        plan(resolve(exchange))[0].health.admit(monotonic())
        samples[i] = clock() - started
    samples.sort()
    return Result(policy, count, decisions, statistics.fmean(samples), samples[decisions // 2],
                  samples[min(decisions - 1, int(decisions * 0.99))])


def timer_overhead_ns(rounds: int = 200_000) -> float:
    """The mean cost of the two clock reads around each decision (included in every figure)."""
    clock = time.perf_counter_ns
    total = 0
    for _ in range(rounds):
        started = clock()
        total += clock() - started
    return total / rounds


def table(results: Sequence[Result]) -> str:
    """The results as a fixed-width table."""
    lines = [f"{'policy':<18} {'deployments':>11} {'mean µs':>9} {'p50 µs':>8} {'p99 µs':>8} "
             f"{'decisions/s':>12}"]
    for r in results:
        lines.append(f"{r.policy:<18} {r.deployments:>11} {r.mean_ns / 1000:>9.2f} "
                     f"{r.p50_ns / 1000:>8.2f} {r.p99_ns / 1000:>8.2f} {r.per_second:>12,.0f}")
    return "\n".join(lines)








def method(arguments: argparse.Namespace, core: int | None, overhead_ns: float, load_before: str,
           seconds: float) -> str:
    """How the figures were made, as one paragraph."""
    pinning = f"pinned to core {core} (sched_setaffinity)" if core is not None else "not pinned"
    return (
        f"Method: {platform.python_implementation()} {platform.python_version()} on"
        f" {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}),"
        f" one process {pinning}; switchgear at commit {commit(REPO)}. Per policy and deployment"
        f" count: one Router over one alias whose deployments have seeded live state (weights"
        f" 1-10, prices 0.2-10 per million tokens, peak-EWMA latencies 20-200 ms to first token,"
        f" 0-15 of 64 requests in flight, all healthy; the cost policy's target is"
        f" {LATENCY_TARGET_MS:g} ms); {arguments.warmup:,} untimed decisions, then"
        f" {arguments.decisions:,} timed one by one. One decision is what the Route stage asks"
        f" of the router before its first attempt: Router.resolve(exchange), Router.plan(alias)"
        f" (health filter + the policy's full order) and health.admit(time.monotonic()) of the"
        f" first pick; the state is not changed between decisions. Timed with"
        f" time.perf_counter_ns around each decision; every figure includes the ~"
        f"{overhead_ns:.0f} ns the two clock reads cost. p50/p99 are of the individual decisions;"
        f" decisions/s = 1 / mean. Garbage collector on (collected before each run). Load"
        f" average (1/5/15 min) before: {load_before}; after: {load_average()}. Run time"
        f" {seconds:.0f} s."
    )


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=200_000,
                        help="timed decisions per policy and deployment count (default 200,000)")
    parser.add_argument("--warmup", type=int, default=20_000,
                        help="untimed decisions before them (default 20,000)")
    parser.add_argument("--deployments", default="3,100",
                        help="comma-separated deployment counts (default 3,100)")
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help=f"comma-separated policies (default {','.join(POLICIES)})")
    parser.add_argument("--core", type=int, default=None,
                        help="pin the process to this CPU core (default: not pinned)")
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args(argv)
    arguments.counts = [int(part) for part in arguments.deployments.split(",") if part]
    arguments.policy_names = [part for part in arguments.policies.split(",") if part]
    unknown = set(arguments.policy_names) - set(POLICIES)
    if unknown or not arguments.counts or min(arguments.counts) < 1 or arguments.decisions < 1:
        parser.error(f"policies from {', '.join(POLICIES)}; deployment counts and decisions >= 1")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table and method."""
    arguments = parse_arguments(argv)
    core = arguments.core
    if core is not None:
        os.sched_setaffinity(0, {core})
    load_before = load_average()
    started = time.monotonic()
    overhead = timer_overhead_ns()
    results = []
    for count in arguments.counts:
        for policy in arguments.policy_names:
            results.append(measure(policy, count, arguments.decisions, arguments.warmup,
                                   arguments.seed))
            print(f"  measured {policy} with {count} deployments", file=sys.stderr, flush=True)
    print(table(results))
    print()
    print(method(arguments, core, overhead, load_before, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
