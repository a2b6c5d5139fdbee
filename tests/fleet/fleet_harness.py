"""The fleet tests' parts: `switchgear serve` replicas, `switchgear simulate` model servers, the
config the replicas share, and the client load the tests put on them through nginx."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import openai
from openai.types.chat import ChatCompletionMessageParam

from servers import (
    REDIS_URL,
    fetch_records,
    free_port,
    scrape,
    total,
)

#: The deployment's concurrency limit, and the model server's slots: what it can run at once.
LIMIT = 8
#: How long a killed replica's places stay taken (``limits.fleet_lease_s``).
LEASE_S = 2.0
#: How long a SIGTERMed replica keeps serving, not ready, before it stops accepting.
DRAIN_GRACE_S = 1.0
#: Concurrent clients: five times what the model server may see.
CLIENTS = 40
#: A request holds a place for about 40 ms + 8 tokens x 4 ms.
SIMULATOR_OPTIONS = ["--slots", str(LIMIT), "--ttft-ms", "40", "--tpot-ms", "4",
                     "--mean-output-tokens", "8", "--load-factor", "0", "--seed", "1"]
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
READY_TIMEOUT_S = 60.0

Reading = TypeVar("Reading")


@dataclass
class ModelLoad:
    """What a simulator holds: requests running or waiting for a slot, and the most at once."""

    in_flight: int
    peak: int


class ModelServer:
    """A `switchgear simulate` process on a free port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = directory / f"simulator-{self.port}.log"
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "switchgear", "simulate", "--port", str(self.port),
                 *SIMULATOR_OPTIONS], stdout=log, stderr=subprocess.STDOUT)
        _wait_until(lambda: _answers(self.url + "/healthz"), self._process, self._log)

    def load(self) -> ModelLoad:
        """The simulator's load now, from its /metrics."""
        samples = scrape(self.url)
        return ModelLoad(int(samples["switchgear_sim_busy_slots{}"]
                             + samples["switchgear_sim_queue_depth{}"]),
                         int(samples["switchgear_sim_peak_in_flight{}"]))

    def stop(self) -> None:
        """SIGTERM it and wait for it to end."""
        self._process.terminate()
        self._process.wait(30)


class Replica:
    """One `switchgear serve` of the fleet, on a port of its own behind the load balancer."""

    def __init__(self, config: Path, directory: Path, environment: dict[str, str]) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._log = directory / f"replica-{self.port}.log"
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "switchgear", "serve", "--config", str(config),
                 "--port", str(self.port), "--log-level", "info"],
                stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=directory)

    def wait_ready(self) -> None:
        """Return once /readyz answers 200."""
        _wait_until(lambda: _answers(f"http://{self.address}/readyz"), self._process, self._log)

    def readiness(self) -> int:
        """The status /readyz answers now (0: the connection was refused)."""
        try:
            with urllib.request.urlopen(f"http://{self.address}/readyz", timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0

    def metrics(self) -> dict[str, float]:
        """Its /metrics samples (see ``servers.scrape``)."""
        return scrape(f"http://{self.address}")

    def places_held(self) -> int:
        """The places of the ``fleet`` alias's limit it holds now (its /metrics)."""
        return int(total(self.metrics(), "switchgear_fleet_places_held", model="fleet"))

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` (SIGKILL: it dies at once; SIGTERM: it drains)."""
        self._process.send_signal(signum)

    def exit_code(self) -> int | None:
        """Its exit status once it has ended, else None."""
        return self._process.poll()

    def wait(self, timeout: float = 60) -> int:
        """Its exit status, once it has ended."""
        return self._process.wait(timeout)

    def log(self) -> str:
        """What it logged."""
        return self._log.read_text(errors="replace")


def stop_all(replicas: list[Replica]) -> None:
    """SIGTERM every replica still running, then wait for them to end (their drains overlap)."""
    for replica in replicas:
        if replica.exit_code() is None:
            replica.signal(signal.SIGTERM)
    for replica in replicas:
        replica.wait()


@dataclass
class Fleet:
    """The replicas, the balancer in front of them, the model servers behind them, the store."""

    url: str
    replicas: list[Replica]
    #: Behind the alias ``fleet``: ``max_concurrency: 8`` held across the replicas.
    fleet_model: ModelServer
    #: Behind the alias ``replica``: ``max_concurrency: 8`` per replica (the default scope).
    replica_model: ModelServer
    store_url: str
    admin_key: str

    def client(self) -> openai.AsyncOpenAI:
        """The official client on the balancer; no retries: every failure counts."""
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=self.admin_key,
                                  max_retries=0, timeout=60)


def replica_config(store_url: str, state_prefix: str, fleet_model: str, replica_model: str
                   ) -> dict[str, Any]:
    """The one config file every replica serves: records to PostgreSQL, limits in Redis, two
    aliases on two model servers that run ``LIMIT`` requests at once, one alias's limit held
    fleet-wide, the other's per replica."""
    deployment = {"name": "simulator", "backend": "openai_http", "model": "sim",
                  "max_concurrency": LIMIT}
    return {
        "server": {"host": "127.0.0.1", "drain_grace_s": DRAIN_GRACE_S,
                   "shutdown_timeout_s": 30},
        "store": {"url": store_url, "flush_interval_ms": 50},
        "auth": {"mode": "required"},
        "limits": {"state_url": REDIS_URL, "state_prefix": state_prefix,
                   "fleet_lease_s": LEASE_S},
        # Requests beyond the limit wait for a place (at the gateway, not the model server).
        "routing": {"queue_timeout_ms": 60_000},
        "models": {
            "fleet": {"deployments": [{**deployment, "url": fleet_model + "/v1",
                                       "max_concurrency_scope": "fleet"}]},
            "replica": {"deployments": [{**deployment, "url": replica_model + "/v1"}]},
        },
    }


@dataclass
class Answered:
    """One successful request: its id (``x-request-id``), the replica nginx sent it to, and when
    the client sent it (``time.monotonic``)."""

    request_id: str
    replica: str
    sent: float


@dataclass
class Tally:
    """What the clients saw: every successful request, and every failure as text."""

    answered: list[Answered] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _counted: asyncio.Event = field(default_factory=asyncio.Event)
    _wanted: int = 0

    async def wait_for_answers(self, count: int) -> None:
        """Return once ``count`` requests have succeeded in all; bound it with
        ``asyncio.timeout``."""
        self._wanted = count
        while len(self.answered) < count:
            self._counted.clear()
            await self._counted.wait()

    def add(self, answered: Answered) -> None:
        """Count one successful request."""
        self.answered.append(answered)
        if len(self.answered) >= self._wanted:
            self._counted.set()


@asynccontextmanager
async def client_load(fleet: Fleet, model: str, clients: int = CLIENTS) -> AsyncIterator[Tally]:
    """``clients`` clients sending chat completions to ``model`` through the balancer, one after
    another each, every other one streamed, until the block ends (then their last requests
    finish; when it raises, they are cancelled). Each answer is checked whole: a stream must
    end with a finish reason."""
    tally = Tally()
    stop = asyncio.Event()
    async with fleet.client() as client:

        async def one_client(number: int) -> None:
            for sent in itertools.count():
                if stop.is_set():
                    return
                try:
                    tally.add(await _request(client, model, stream=(number + sent) % 2 == 0))
                except Exception as error:  # every failure counts, whatever raised it
                    tally.failures.append(f"{type(error).__name__}: {error}")

        clients_running = asyncio.gather(*(one_client(number) for number in range(clients)))
        try:
            yield tally
        except BaseException:
            clients_running.cancel()  # a failed test does not wait for their answers
            await asyncio.gather(clients_running, return_exceptions=True)
            raise
        stop.set()
        await clients_running


async def _request(client: openai.AsyncOpenAI, model: str, stream: bool) -> Answered:
    sent = time.monotonic()
    if stream:
        chunks = await client.chat.completions.create(model=model, messages=HELLO, stream=True)
        finish = [choice.finish_reason async for chunk in chunks for choice in chunk.choices
                  if choice.finish_reason]
        if not finish:
            raise AssertionError("the stream ended without a finish reason")
        headers = chunks.response.headers
    else:
        raw = await client.chat.completions.with_raw_response.create(model=model,
                                                                      messages=HELLO)
        if not raw.parse().choices[0].finish_reason:
            raise AssertionError("the answer has no finish reason")
        headers = raw.headers
    # nginx names every replica it tried, the one that answered last.
    return Answered(headers["x-request-id"], headers["x-served-by"].split(", ")[-1], sent)


async def polled(read: Callable[[], Reading], condition: Callable[[Reading], bool]) -> Reading:
    """The first of ``read``'s readings (one every 10 ms, in a thread: they block) that meets
    ``condition``; bound it with ``asyncio.timeout``."""
    while True:
        reading = await asyncio.to_thread(read)
        if condition(reading):
            return reading
        await asyncio.sleep(0.01)


async def record_counts(store_url: str, request_ids: Collection[str]) -> Counter[str]:
    """How many records the store holds of each request, once it holds one of every request in
    ``request_ids`` (replicas still running write theirs in batches); bound it with
    ``asyncio.timeout``."""
    while True:
        counts = Counter(record.request_id
                         for record in await asyncio.to_thread(fetch_records, store_url))
        if all(counts[request_id] for request_id in request_ids):
            return counts
        await asyncio.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once ``ready``; if the process ends first or takes too long, kill it and raise
    with its log."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"{process.args!r} did not start:\n"
                               + log.read_text(errors="replace")[-3000:])
        time.sleep(0.05)
