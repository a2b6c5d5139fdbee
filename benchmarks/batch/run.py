"""The Batch API as the lowest tier (issue 27): does a 10,000-line batch fill a fleet's idle
capacity without hurting the interactive traffic beside it?

Run ``.venv/bin/python benchmarks/batch/run.py`` with PostgreSQL up (``scripts/services``):
about seven minutes with the defaults. ``--simulators`` (3) ``switchgear simulate`` servers of
``--slots`` (4) slots each, no slow-down under load (``--load-factor 0``: a slot's speed does not
depend on the others, so what is measured is the gateway's scheduling), stand behind one
``switchgear serve`` (keys required, records and batches in a PostgreSQL schema, a priority gate
of as many places as the fleet has slots, each deployment's ``max_concurrency`` its slots).

1. Alone: an open-loop Poisson load of streamed chat requests (interactive tier) at ``--load``
   (0.5) of the fleet's capacity (slots / an interactive request's service time), a warm-up then
   ``--seconds`` measured.
2. With the batch: the same load, and a ``--lines`` line JSONL file uploaded through
   ``/v1/files`` and run through ``/v1/batches`` (the official ``openai`` client), the load going
   on until the batch ends; interactive requests scheduled while the batch ran are measured.

Printed: interactive p50/p95/p99 TTFT and end-to-end alone and with the batch, and their ratio
(goal: within 10%); the fleet's utilization (busy slots / slots, sampled from the simulators'
``/metrics`` every ``--sample-interval`` s) in each phase; the batch's completion time against
what the idle capacity allowed (the idle slot-seconds a second of phase 1 left, against the
slot-seconds the batch's lines needed, computed from each line's completion tokens); the output
and error files' line counts.

One gateway rather than two replicas: on a two-core machine a second replica measures the
cores' contention, not the scheduling, and the claims shared between replicas (PostgreSQL's
``FOR UPDATE SKIP LOCKED`` leases) are what tests/batch checks, with a replica killed mid-batch.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from switchgear.capacity.bench.client import (
    ConnectionPool,
    Endpoint,
    Outcome,
    Request,
    error_message,
)
from switchgear.capacity.bench.figures import RequestTimes
from switchgear.capacity.machine import commit, cpu_model, load_average
from switchgear.config import BatchConfig
from switchgear.percentiles import nearest_rank

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "overhead"))
sys.path.insert(0, str(REPO / "tests"))

from processes import ServiceProcess, free_port, stop_everything_on_sigterm, tail  # noqa: E402

from servers import POSTGRES_URL, drop_schema  # noqa: E402

SWITCHGEAR = Path(sys.executable).parent / "switchgear"
ALIAS = "chat"
QUEUE_WAIT = "switchgear_queue_wait_seconds"
BUSY_SLOTS = re.compile(rb"^switchgear_sim_busy_slots (\S+)$", re.MULTILINE)
STARTUP_TIMEOUT_S = 60.0
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: The interactive load's requests: this many distinct prompts, sent in turn.
PROMPTS = 64
#: Interactive requests scheduled this soon after the batch is created are left out of the
#: "with batch" window: the runner has not claimed its first lines yet.
BATCH_SETTLE_S = 2.0
#: How long an interactive request may wait for a place in the gateway before it is shed.
INTERACTIVE_WAIT_MS = 2000
#: The batch runner's share of each deployment's max_concurrency when --max-share is not given.
DEFAULT_MAX_SHARE = float(BatchConfig.model_fields["max_share"].default)


@dataclass(frozen=True)
class Fleet:
    """The simulators' shape: how many, their slots and speed, and the two kinds of request."""

    simulators: int
    slots: int
    ttft_ms: float
    tpot_ms: float
    load_factor: float
    interactive_tokens: int
    batch_tokens: int

    @property
    def total_slots(self) -> int:
        """Slots in the whole fleet."""
        return self.simulators * self.slots

    def service_s(self, tokens: int) -> float:
        """Seconds a slot is held by an answer of ``tokens`` tokens on an idle server."""
        return (self.ttft_ms + self.tpot_ms * max(0, tokens - 1)) / 1000

    @property
    def capacity_rps(self) -> float:
        """Interactive requests a second the fleet serves with every slot busy."""
        return self.total_slots / self.service_s(self.interactive_tokens)

    def simulator_argv(self, port: int, seed: int) -> list[str]:
        """The ``switchgear simulate`` command of one simulator."""
        return [str(SWITCHGEAR), "simulate", "--port", str(port), "--slots", str(self.slots),
                "--ttft-ms", str(self.ttft_ms), "--tpot-ms", str(self.tpot_ms),
                "--load-factor", str(self.load_factor), "--seed", str(seed)]


@dataclass
class Phase:
    """One phase's interactive outcomes, busy-slot samples and its measured window."""

    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)
    #: The gateway's interactive queue waits over the window: (seconds, requests, requests that
    #: waited over 1 ms), from switchgear_queue_wait_seconds.
    waits: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def measured(self) -> list[Outcome]:
        """Outcomes of requests scheduled in the window."""
        start, end = self.window
        return [o for o in self.outcomes if start <= o.scheduled_at < end]

    def times(self) -> list[RequestTimes]:
        """The latencies of the measured requests that succeeded."""
        return [RequestTimes.of(o) for o in self.measured() if o.error is None]

    def failed(self) -> int:
        """Measured requests that failed."""
        return sum(1 for o in self.measured() if o.error is not None)

    def errors(self) -> str:
        """The measured failures by kind (``http_429: 2``), with the first one's message."""
        failures = [o for o in self.measured() if o.error is not None]
        kinds = Counter(o.error for o in failures)
        return ", ".join(f"{kind}: {count}" for kind, count in kinds.most_common()) + (
            f" (first: {error_message(failures[0].error_body)})" if failures else "")

    def utilization(self, total_slots: int) -> float:
        """Mean busy slots over the window's samples, as a share of the fleet's slots."""
        return sum(self.samples) / len(self.samples) / total_slots if self.samples else 0.0

    def percentile(self, measure: str, q: float) -> float:
        """The nearest-rank ``q`` percentile of ``ttft`` or ``e2e``, in seconds."""
        values = sorted(v for t in self.times() if (v := getattr(t, measure)) is not None)
        return nearest_rank(values, q) if values else float("nan")


@dataclass
class BatchRun:
    """What the batch did: its final object, when it was created and ended, and its files."""

    status: str
    created_at: float
    ended_at: float
    in_progress_at: float | None
    request_counts: dict[str, int]
    output_lines: list[dict[str, Any]]
    error_lines: list[dict[str, Any]]

    @property
    def seconds(self) -> float:
        """From the batch's creation to the client seeing it end."""
        return self.ended_at - self.created_at

    def slot_seconds(self, fleet: Fleet) -> float:
        """The slot-seconds its successful lines held, from each line's completion tokens."""
        return sum(fleet.service_s(line["response"]["body"]["usage"]["completion_tokens"])
                   for line in self.output_lines
                   if (line.get("response") or {}).get("status_code") == 200)


async def interactive_waits(session: aiohttp.ClientSession, url: str
                            ) -> tuple[float, float, float]:
    """The gateway's interactive queue waits so far: seconds in all, requests, and requests
    that waited over 1 ms (its ``switchgear_queue_wait_seconds`` histogram)."""
    async with session.get(url) as response:
        text = await response.text()
    total = count = quick = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != QUEUE_WAIT:
            continue
        for sample in family.samples:
            if sample.labels.get("priority") != "interactive":
                continue
            if sample.name == f"{QUEUE_WAIT}_sum":
                total += sample.value
            elif sample.name == f"{QUEUE_WAIT}_count":
                count += sample.value
            elif sample.name == f"{QUEUE_WAIT}_bucket" and float(sample.labels["le"]) == 0.001:
                quick += sample.value
    return total, count, count - quick


def gateway_config(fleet: Fleet, urls: Sequence[str], store_url: str,
                   max_share: float | None, batch_headroom: int) -> dict[str, Any]:
    """The gateway's config: keys required, records and batches in ``store_url``, one alias
    over the simulators, each deployment's ``max_concurrency`` its slots, a priority gate
    with a place per slot of the fleet (``batch_headroom`` of them never taken by the batch
    tier), and the batch runner's ``max_share`` (None: its default)."""
    return {
        **({"batch": {"max_share": max_share}} if max_share is not None else {}),
        "server": {"host": "127.0.0.1", "drain_grace_s": 0},
        "store": {"url": store_url},
        "auth": {"mode": "required"},
        "routing": {"health_check_interval_s": None},
        # Interactive requests wait up to 2 s rather than 50 ms before they are shed: the
        # benchmark measures their latency, and a Poisson load at half the capacity queues now
        # and then whatever the batch does.
        "tiers": {"capacity": fleet.total_slots,
                  "interactive": {"max_queue": 100, "wait_target_ms": INTERACTIVE_WAIT_MS},
                  "batch": {"max_queue": 1000, "wait_target_ms": 5000,
                            "headroom": batch_headroom}},
        "models": {ALIAS: {"policy": "least_outstanding", "deployments": [
            {"name": f"sim-{index}", "backend": "openai_http", "url": url, "model": "sim",
             "max_concurrency": fleet.slots}
            for index, url in enumerate(urls)]}},
    }


def interactive_requests(endpoint: Endpoint, token: str, tokens: int) -> list[Request]:
    """The interactive load's requests: streamed chats of exactly ``tokens`` output tokens."""
    headers = {"Authorization": f"Bearer {token}"}
    return [Request(endpoint.request_bytes(orjson.dumps({
        "model": ALIAS, "stream": True, "stream_options": {"include_usage": True},
        "max_tokens": tokens, "ignore_eos": True,
        "messages": [{"role": "user", "content": f"Question {index}: what is new today?"}]}),
        headers), True, 12) for index in range(PROMPTS)]


def batch_file(lines: int, tokens: int) -> bytes:
    """A Batch API input file: ``lines`` chat requests of exactly ``tokens`` output tokens."""
    return b"".join(orjson.dumps({
        "custom_id": f"line-{number}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": ALIAS, "max_tokens": tokens, "ignore_eos": True,
                 "messages": [{"role": "user", "content": f"Summarize document {number}."}]},
    }) + b"\n" for number in range(lines))


async def sample_busy(session: aiohttp.ClientSession, metrics_urls: Sequence[str],
                      samples: list[float], interval_s: float, stop: asyncio.Event) -> None:
    """Append the fleet's busy slots (summed over the simulators' /metrics) every
    ``interval_s`` until ``stop`` is set."""
    while not stop.is_set():
        total = 0.0
        for url in metrics_urls:
            async with session.get(url) as response:
                match = BUSY_SLOTS.search(await response.read())
            total += float(match.group(1)) if match else 0.0
        samples.append(total)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def open_loop(endpoint: Endpoint, requests: Sequence[Request], rate: float,
                    outcomes: list[Outcome], stop: asyncio.Event, seed: int) -> None:
    """Poisson arrivals at ``rate`` a second until ``stop`` is set; returns once every request
    sent has ended (each outcome appended)."""
    rng = random.Random(seed)
    sent = 0
    drained = asyncio.Event()

    def on_outcome(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if stop.is_set() and len(outcomes) >= sent:
            drained.set()

    pool = ConnectionPool(endpoint, 1024, 60.0, on_outcome)
    due = time.perf_counter()
    try:
        while not stop.is_set():
            due += rng.expovariate(rate)
            delay = due - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            pool.submit(requests[sent % len(requests)], due)
            sent += 1
        if len(outcomes) < sent:
            await drained.wait()
    finally:
        pool.close()


class Bench:
    """The fleet and the gateway, started once; the two phases run against them."""

    def __init__(self, arguments: argparse.Namespace, fleet: Fleet, work: Path) -> None:
        self.arguments = arguments
        self.fleet = fleet
        self.work = work
        self.admin_key = "sg-bench-" + secrets.token_urlsafe(24)
        self.sim_ports = [free_port() for _ in range(fleet.simulators)]
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    @contextmanager
    def running(self, store_url: str) -> Iterator[None]:
        """The simulators and the gateway, up and answering."""
        config = gateway_config(self.fleet, [f"http://127.0.0.1:{port}/v1"
                                             for port in self.sim_ports], store_url,
                                self.arguments.max_share, self.arguments.batch_headroom)
        config_path = self.work / "switchgear.yaml"
        config_path.write_text(yaml.safe_dump(config))
        environment = {**os.environ, "PYTHONUNBUFFERED": "1",
                       "SWITCHGEAR_ADMIN_KEY": self.admin_key,
                       "SWITCHGEAR_AUDIT_SECRET": secrets.token_urlsafe(32)}
        with ExitStack() as started:
            for index, port in enumerate(self.sim_ports):
                started.enter_context(ServiceProcess(
                    f"simulator-{index}", self.fleet.simulator_argv(port, index),
                    self.work / f"simulator-{index}.log"))
            self.gateway = started.enter_context(ServiceProcess(
                "gateway", [str(SWITCHGEAR), "serve", "--config", str(config_path), "--port",
                            str(self.port), "--log-level", "warning"],
                self.work / "gateway.log", env=environment, cwd=self.work))
            yield

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        """Wait until every simulator and the gateway answer."""
        urls = [f"http://127.0.0.1:{port}/metrics" for port in self.sim_ports]
        urls.append(f"http://127.0.0.1:{self.port}/readyz")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for url in urls:
            while True:
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline or self.gateway.exit_code() is not None:
                    raise RuntimeError(f"{url} did not answer; gateway log:\n"
                                       f"{tail(self.gateway.log_path)}")
                await asyncio.sleep(0.2)

    async def create_key(self, session: aiohttp.ClientSession, name: str, tier: str) -> str:
        """A client key of tenant ``bench`` at ``tier``; its secret."""
        async with session.post(f"http://127.0.0.1:{self.port}/admin/keys",
                                json={"tenant": "bench", "name": name, "tier": tier},
                                headers={"Authorization": f"Bearer {self.admin_key}"}) as answer:
            body = await answer.json()
            if answer.status != 201:
                raise RuntimeError(f"creating key {name}: {answer.status} {body}")
            return str(body["secret"])

    async def phase(self, name: str, session: aiohttp.ClientSession,
                    requests: Sequence[Request], batch: bytes | None,
                    batch_key: str) -> tuple[Phase, BatchRun | None]:
        """The interactive load for a warm-up and ``--seconds`` (alone), or until the batch
        ends (with ``batch``); its outcomes, busy-slot samples and the batch's run."""
        arguments = self.arguments
        phase = Phase(name)
        stop, sampling = asyncio.Event(), asyncio.Event()
        metrics = [f"http://127.0.0.1:{port}/metrics" for port in self.sim_ports]
        rate = arguments.load * self.fleet.capacity_rps
        endpoint = Endpoint.of(self.base_url, "/chat/completions")
        load = asyncio.create_task(open_loop(endpoint, requests, rate, phase.outcomes, stop,
                                             arguments.seed))
        await asyncio.sleep(arguments.warmup)
        sampler = asyncio.create_task(sample_busy(session, metrics, phase.samples,
                                                  arguments.sample_interval, sampling))
        run = None
        try:
            if batch is None:
                start, waits = time.perf_counter(), await self.waits(session)
                await asyncio.sleep(arguments.seconds)
                phase.window = (start, time.perf_counter())
            else:
                run, waits = await self.run_batch(session, batch, batch_key, phase)
            now = await self.waits(session)
            phase.waits = (now[0] - waits[0], now[1] - waits[1], now[2] - waits[2])
        finally:
            sampling.set()
            stop.set()
            await asyncio.gather(sampler, load)
        return phase, run

    async def waits(self, session: aiohttp.ClientSession) -> tuple[float, float, float]:
        """The gateway's interactive queue waits so far (``interactive_waits``)."""
        return await interactive_waits(session, f"http://127.0.0.1:{self.port}/metrics")

    async def run_batch(self, session: aiohttp.ClientSession, batch: bytes, batch_key: str,
                        phase: Phase) -> tuple[BatchRun, tuple[float, float, float]]:
        """Upload ``batch``, run it and poll it to its end (or ``--batch-timeout``); set the
        phase's window to the time it ran (from ``BATCH_SETTLE_S`` after its creation);
        download its output and error files. The gateway's interactive queue waits at the
        window's start come back with the run."""
        client = AsyncOpenAI(base_url=self.base_url, api_key=batch_key, max_retries=0)
        try:
            uploaded = await client.files.create(file=("batch.jsonl", io.BytesIO(batch)),
                                                 purpose="batch")
            created = await client.batches.create(input_file_id=uploaded.id,
                                                  endpoint="/v1/chat/completions",
                                                  completion_window="24h")
            created_at = time.perf_counter()
            deadline = created_at + self.arguments.batch_timeout
            await asyncio.sleep(BATCH_SETTLE_S)
            window_start, waits = time.perf_counter(), await self.waits(session)
            current = created
            while current.status not in TERMINAL and time.perf_counter() < deadline:
                await asyncio.sleep(self.arguments.poll_interval)
                current = await client.batches.retrieve(created.id)
                counts = current.request_counts
                print(f"  batch {current.status}: {counts.completed if counts else 0} done, "
                      f"{counts.failed if counts else 0} failed",
                      file=sys.stderr, flush=True)
            ended_at = time.perf_counter()
            phase.window = (window_start, ended_at)
            if current.status not in TERMINAL:
                await client.batches.cancel(created.id)
            output = await self._lines(client, current.output_file_id)
            errors = await self._lines(client, current.error_file_id)
            counts = current.request_counts
            return BatchRun(current.status, created_at, ended_at,
                            current.in_progress_at, {
                                "total": counts.total if counts else 0,
                                "completed": counts.completed if counts else 0,
                                "failed": counts.failed if counts else 0},
                            output, errors), waits
        finally:
            await client.close()

    @staticmethod
    async def _lines(client: AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        content = await client.files.content(file_id)
        return [json.loads(line) for line in content.text.splitlines() if line.strip()]

    async def measure(self, with_batch: bool) -> tuple[Phase, Phase | None, BatchRun | None]:
        """Both phases (or the first alone when ``with_batch`` is false)."""
        arguments = self.arguments
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await self.wait_ready(session)
            interactive_key = await self.create_key(session, "interactive", "interactive")
            batch_key = await self.create_key(session, "batch", "standard")
            requests = interactive_requests(Endpoint.of(self.base_url, "/chat/completions"),
                                            interactive_key, self.fleet.interactive_tokens)
            print(f"alone: {arguments.warmup:g} s warm-up, {arguments.seconds:g} s measured ...",
                  file=sys.stderr, flush=True)
            alone, _ = await self.phase("alone", session, requests, None, batch_key)
            if not with_batch:
                return alone, None, None
            print(f"with a {arguments.lines:,}-line batch ...", file=sys.stderr, flush=True)
            together, run = await self.phase(
                "with batch", session, requests,
                batch_file(arguments.lines, self.fleet.batch_tokens), batch_key)
            return alone, together, run


def ratio(after: float, before: float) -> str:
    """``after`` against ``before`` as a signed percentage."""
    return f"{after / before - 1:+.1%}" if before > 0 else "n/a"


def report(fleet: Fleet, alone: Phase, together: Phase | None, run: BatchRun | None,
           arguments: argparse.Namespace) -> bool:
    """Print the figures and the method; whether nothing failed (every interactive request
    answered, the batch completed with every line in its output)."""
    phases = [alone] + ([together] if together is not None else [])
    print(f"{'interactive':<12} {'requests':>8} {'failed':>6} {'util':>6} "
          f"{'TTFT p50':>9} {'p95':>8} {'p99':>8} {'e2e p50':>9} {'p95':>8} {'p99':>8}")
    for phase in phases:
        p = phase.percentile
        print(f"{phase.name:<12} {len(phase.measured()):>8,} {phase.failed():>6} "
              f"{phase.utilization(fleet.total_slots):>6.1%} "
              f"{p('ttft', 50) * 1000:>9.1f} {p('ttft', 95) * 1000:>8.1f} "
              f"{p('ttft', 99) * 1000:>8.1f} {p('e2e', 50) * 1000:>9.1f} "
              f"{p('e2e', 95) * 1000:>8.1f} {p('e2e', 99) * 1000:>8.1f}")
    for phase in phases:
        seconds, waited, slow = phase.waits
        print(f"{phase.name}: interactive wait for a place in the gateway: mean "
              f"{seconds / waited * 1000 if waited else 0:.2f} ms, "
              f"{slow / waited if waited else 0:.1%} waited over 1 ms")
    for phase in phases:
        if phase.failed():
            print(f"{phase.name}: failed requests: {phase.errors()}")
    ok = all(phase.failed() == 0 and phase.times() for phase in phases)
    if together is not None:
        changes = {f"{measure} p{q}": together.percentile(measure, q) /
                   alone.percentile(measure, q) - 1
                   for measure in ("ttft", "e2e") for q in (95, 99)}
        worst = max(changes.values())
        print("\nwith the batch against alone: " + ", ".join(
            f"{name} {change:+.1%}" for name, change in changes.items())
            + f"; goal within +10%: {'met' if worst <= 0.10 else 'MISSED'}")
        before = alone.utilization(fleet.total_slots)
        after = together.utilization(fleet.total_slots)
        print(f"fleet utilization: {before:.1%} alone, {after:.1%} with the batch "
              f"({after - before:+.1%} added)")
    if run is not None:
        lines = arguments.lines
        idle_slots = fleet.total_slots * (1 - alone.utilization(fleet.total_slots))
        needed = run.slot_seconds(fleet)
        line_s = needed / len(run.output_lines) if run.output_lines else float("nan")
        allowed = needed / idle_slots if idle_slots > 0 else float("inf")
        output_ids = [line["custom_id"] for line in run.output_lines]
        error_ids = [line["custom_id"] for line in run.error_lines]
        every_line_once = sorted(output_ids + error_ids) == sorted(
            f"line-{n}" for n in range(lines))
        print(f"batch: {run.status} in {run.seconds:.1f} s, {run.request_counts['completed']:,}"
              f" completed and {run.request_counts['failed']:,} failed of "
              f"{run.request_counts['total']:,}; output file {len(output_ids):,} lines, error "
              f"file {len(error_ids):,}; every line exactly once: "
              f"{'yes' if every_line_once else 'NO'}; {len(output_ids) / run.seconds:.1f} "
              f"lines/s")
        share = arguments.max_share if arguments.max_share is not None else DEFAULT_MAX_SHARE
        capped = needed / min(idle_slots, share * fleet.total_slots)
        print(f"idle capacity allowed: {idle_slots:.2f} idle slots (of {fleet.total_slots}) "
              f"x the run; the lines needed {needed:.1f} slot-seconds ({line_s * 1000:.1f} ms "
              f"a line), so at best {allowed:.1f} s ({capped:.1f} s within the runner's "
              f"max_share {share:g} of each deployment); took {run.seconds:.1f} s "
              f"({allowed / run.seconds:.0%} of the idle capacity used)")
        ok = ok and run.status == "completed" and every_line_once and not error_ids
    print(f"\nMethod: {cpu_model()}, commit {commit(REPO)}, load average {load_average()}. "
          f"{fleet.simulators} `switchgear simulate` servers x {fleet.slots} slots "
          f"({fleet.ttft_ms:g} ms to the first token, {fleet.tpot_ms:g} ms a further token, "
          f"load factor {fleet.load_factor:g}) behind one `switchgear serve` (keys required, "
          f"{arguments.store} store, priority gate of {fleet.total_slots} places, interactive "
          f"wait target {INTERACTIVE_WAIT_MS} ms, batch headroom {arguments.batch_headroom}, "
          f"max_concurrency {fleet.slots} a deployment, least_outstanding). Interactive: "
          f"Poisson arrivals at {arguments.load:.0%} of {fleet.capacity_rps:.1f} req/s "
          f"(slots / {fleet.service_s(fleet.interactive_tokens) * 1000:.0f} ms), streamed, "
          f"{fleet.interactive_tokens} output tokens (ignore_eos), an interactive-tier key; "
          f"latency from each request's scheduled time (nearest rank). Alone: "
          f"{arguments.warmup:g} s warm-up, {arguments.seconds:g} s measured. With the batch: "
          f"{arguments.lines:,} lines of {fleet.batch_tokens} output tokens uploaded with the "
          f"openai client, run with a standard-tier key, polled every "
          f"{arguments.poll_interval:g} s; interactive requests scheduled from "
          f"{BATCH_SETTLE_S:g} s after its creation to its end are measured. Utilization: the "
          f"simulators' switchgear_sim_busy_slots summed every {arguments.sample_interval:g} s "
          f"over each window / {fleet.total_slots} slots; the wait for a place is the gateway's "
          f"switchgear_queue_wait_seconds (priority interactive) over the window. 'At best': "
          f"the slot-seconds the batch's lines held on an idle slot (first token + tokens x "
          f"per-token time) / the slots left idle in the alone phase.")
    return ok


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulators", type=int, default=3)
    parser.add_argument("--slots", type=int, default=4, help="slots a simulator")
    parser.add_argument("--ttft-ms", type=float, default=40.0)
    parser.add_argument("--tpot-ms", type=float, default=4.0)
    parser.add_argument("--load-factor", type=float, default=0.0,
                        help="simulators' slow-down with every slot busy (0: none)")
    parser.add_argument("--interactive-tokens", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=16)
    parser.add_argument("--load", type=float, default=0.5,
                        help="interactive load as a share of the fleet's capacity")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured, alone")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--lines", type=int, default=10_000, help="lines in the batch")
    parser.add_argument("--no-batch", action="store_true",
                        help="measure the interactive load alone only")
    parser.add_argument("--batch-timeout", type=float, default=900.0,
                        help="seconds before an unfinished batch is cancelled")
    parser.add_argument("--max-share", type=float, default=None,
                        help="the batch runner's batch.max_share (default: its default)")
    parser.add_argument("--batch-headroom", type=int, default=0,
                        help="gate places the batch tier leaves to higher tiers (tiers.batch."
                             "headroom)")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--sample-interval", type=float, default=0.1)
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None,
                        help="config and logs (default: a temporary directory)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    stop_everything_on_sigterm()
    fleet = Fleet(arguments.simulators, arguments.slots, arguments.ttft_ms, arguments.tpot_ms,
                  arguments.load_factor, arguments.interactive_tokens, arguments.batch_tokens)
    work = arguments.work or Path(tempfile.mkdtemp(prefix="switchgear-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    schema = f"sg_bench_batch_{uuid.uuid4().hex}"
    store_url = (f"{POSTGRES_URL}?schema={schema}" if arguments.store == "postgres"
                 else f"sqlite:///{work / 'records.db'}")
    bench = Bench(arguments, fleet, work)
    try:
        with bench.running(store_url):
            alone, together, run = asyncio.run(bench.measure(not arguments.no_batch))
    finally:
        if arguments.store == "postgres":
            asyncio.run(drop_schema(schema))
    ok = report(fleet, alone, together, run, arguments)
    print(f"Logs: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
