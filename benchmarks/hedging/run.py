"""Hedged requests against a slow-tailed upstream: p99 with and without, and the load they add.

Run ``.venv/bin/python benchmarks/hedging/run.py`` (about a minute with the defaults). Two
in-process simulators (a few ms to the first token; ``--spike-rate`` of requests delayed
``--spike-ms``: the slow tail) stand behind a real ``switchgear serve``, started once without
hedging and once with ``hedge: {}`` (a second attempt after the alias's observed p95 time to
first token) or ``--after-ms``. ``--concurrency`` clients send ``--requests`` chat requests each
run. Prints per run: p50/p95/p99/max as the clients saw them, and the upstream requests per
client request (the extra load hedging costs), counted by the simulators.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from switchgear.capacity.machine import commit, cpu_model, load_average
from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator, start_simulator

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent / "overhead"))

from processes import (  # noqa: E402
    Endpoint,
    ServiceProcess,
    free_port,
    stop_everything_on_sigterm,
    wait_until_answers,
)

REPO = HERE.parent.parent
SWITCHGEAR = Path(sys.executable).parent / "switchgear"
WORK = HERE / ".work"
REQUESTS_SAMPLE = "switchgear_sim_requests_total"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}


@dataclass
class Run:
    """One run's figures."""

    name: str
    latencies: list[float]
    upstream_requests: int
    failed: int

    def percentile(self, share: float) -> float:
        """The nearest-rank ``share`` percentile, in ms."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)] * 1000

    def row(self) -> str:
        """The run as a table row."""
        extra = self.upstream_requests / len(self.latencies) - 1
        return (f"{self.name:<22} {len(self.latencies):>8,} {self.failed:>6} "
                f"{self.percentile(0.5):>8.1f} {self.percentile(0.95):>8.1f} "
                f"{self.percentile(0.99):>8.1f} {max(self.latencies) * 1000:>8.1f} "
                f"{extra:>+9.1%}")


def write_config(port: int, sims: Sequence[RunningSimulator], hedge: dict[str, Any] | None,
                 work: Path) -> Path:
    """A config with one alias over both simulators, hedged or not."""
    chat: dict[str, Any] = {"deployments": [
        {"name": f"sim-{index}", "backend": "openai_http", "url": sim.base_url, "model": "sim"}
        for index, sim in enumerate(sims)]}
    if hedge is not None:
        chat["hedge"] = hedge
    config = {"server": {"host": "127.0.0.1", "port": port}, "models": {"chat": chat},
              "routing": {"health_check_interval_s": None},
              "store": {"url": f"sqlite:///{work / 'records.db'}"}}
    path = work / "switchgear.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def received(sims: Sequence[RunningSimulator]) -> int:
    """Inference requests the simulators have received, whatever their outcome (a cancelled
    hedge's included), from their own /metrics counters."""
    return int(sum(sample.value for sim in sims
                   for family in text_string_to_metric_families(sim.state.metrics.render().decode())
                   for sample in family.samples if sample.name == REQUESTS_SAMPLE))


async def drive(url: str, requests: int, concurrency: int) -> tuple[list[float], int]:
    """``requests`` chat requests from ``concurrency`` clients: each one's seconds, and how
    many failed."""
    latencies: list[float] = []
    failed = 0
    left = iter(range(requests))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def client() -> None:
            nonlocal failed
            for _ in left:
                started = time.monotonic()
                async with session.post(url, json=BODY) as response:
                    await response.read()
                    failed += response.status != 200
                latencies.append(time.monotonic() - started)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, failed


async def measure(name: str, hedge: dict[str, Any] | None, sims: Sequence[RunningSimulator],
                  arguments: argparse.Namespace) -> Run:
    """One gateway, started fresh, loaded with the run's requests after a warm-up."""
    work = arguments.work / name.replace(" ", "-")
    work.mkdir(parents=True, exist_ok=True)
    (work / "records.db").unlink(missing_ok=True)
    port = free_port()
    config = write_config(port, sims, hedge, work)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    gateway = ServiceProcess(name, [str(SWITCHGEAR), "serve", "--config", str(config),
                                    "--log-level", "warning"], work / "server.log", cwd=work)
    with gateway:
        endpoint = Endpoint(url, "chat", {"Content-Type": "application/json"})
        await asyncio.to_thread(wait_until_answers, endpoint, json.dumps(BODY).encode(),
                                gateway, 60.0)
        await drive(url, arguments.warmup, arguments.concurrency)  # the tail is learnt here
        before = received(sims)
        print(f"{name}: {arguments.requests} requests ...", file=sys.stderr, flush=True)
        latencies, failed = await drive(url, arguments.requests, arguments.concurrency)
        await asyncio.sleep(arguments.spike_ms / 1000)  # cancelled hedges' upstream calls end
        served = received(sims) - before
    return Run(name, latencies, served, failed)


async def main_async(arguments: argparse.Namespace) -> list[Run]:
    """Both simulators, then each run against them."""
    faults = Faults(spike_rate=arguments.spike_rate, spike_ms=arguments.spike_ms)
    sims = [await start_simulator(ModelOptions(ttft_ms=arguments.ttft_ms, tpot_ms=0.2,
                                               mean_output_tokens=8, slots=64, seed=index),
                                  faults) for index in range(2)]
    hedge = {} if arguments.after_ms is None else {"after_ms": arguments.after_ms}
    try:
        return [await measure("no hedging", None, sims, arguments),
                await measure("hedged after " + ("p95" if arguments.after_ms is None
                                                 else f"{arguments.after_ms:g} ms"),
                              hedge, sims, arguments)]
    finally:
        for sim in sims:
            await sim.stop()


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per run")
    parser.add_argument("--warmup", type=int, default=300, help="requests before measuring")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--ttft-ms", type=float, default=3.0, help="simulators' first token")
    parser.add_argument("--spike-rate", type=float, default=0.02, help="share of slow requests")
    parser.add_argument("--spike-ms", type=float, default=300.0, help="how slow they are")
    parser.add_argument("--after-ms", type=float, default=None,
                        help="hedge after this long (default: the observed p95)")
    parser.add_argument("--work", type=Path, default=WORK, help="config, logs and request logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    stop_everything_on_sigterm()
    runs = asyncio.run(main_async(arguments))
    print(f"{'run':<22} {'requests':>8} {'failed':>6} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'upstream':>9}")
    for run in runs:
        print(run.row())
    print(f"\nMethod: {cpu_model()}, commit {commit(REPO)}; two in-process simulators "
          f"({arguments.ttft_ms:g} ms to first token, {arguments.spike_rate:.0%} of requests "
          f"delayed {arguments.spike_ms:g} ms) behind `switchgear serve` (one alias over both, "
          f"weighted, no health checks), started fresh per run; {arguments.concurrency} aiohttp "
          f"clients, {arguments.warmup} warm-up then {arguments.requests} measured non-streamed "
          f"requests each; latency as the client saw it (nearest rank); 'upstream' is the "
          f"simulators' requests per client request minus one (the extra load). Load average "
          f"{load_average()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
