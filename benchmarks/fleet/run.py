"""Three gateway replicas behind nginx against one (issue 25): aggregate requests/s and p50/p99
through the load balancer, and what a fleet-wide concurrency limit costs a request.

Run ``bash benchmarks/overhead/setup.sh --debian-only`` once (nginx, wrk) with PostgreSQL and
Redis up (``scripts/services``), then ``.venv/bin/python benchmarks/fleet/run.py``: about four
minutes with the defaults.

For each upstream (``zero-latency``: nginx answering every chat completion at once, as in
benchmarks/overhead; ``simulator``: ``switchgear simulate`` taking about 38 ms an answer), for one
and for three ``switchgear serve`` replicas behind nginx (the balancer of tests/servers.py: round
robin, keep-alive to the replicas), and for both scopes of the deployment's ``max_concurrency``
(4096, never reached, so what is measured is its bookkeeping): ``replica`` (a counter in each
process) and ``fleet`` (a place taken in Redis for every request), wrk loads the balancer at each
concurrency: a warm-up run, then a measured run. The replicas share a PostgreSQL schema for their
records and Redis for their limits' state, as replicas in production do.

Printed: one row per run (req/s, p50/p99 through the balancer, the replicas' CPU per request
from /proc, Redis's from INFO cpu, errors); then three replicas against one, and fleet scope
against replica scope: the cost of a fleet-wide limit per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "overhead"))
sys.path.insert(0, str(REPO / "tests"))

from load import LoadResult, WrkLoad, wrk_binary, wrk_version  # noqa: E402
from processes import (  # noqa: E402
    BenchmarkError,
    Endpoint,
    ServiceProcess,
    free_port,
    pinned,
    stop_everything_on_sigterm,
    wait_until_answers,
)
from upstream import UPSTREAM_MODEL, NginxUpstream, nginx_binary  # noqa: E402

from switchgear.capacity.machine import commit, cpu_model, load_average  # noqa: E402

from servers import POSTGRES_URL, REDIS_URL, balancer_config, drop_schema  # noqa: E402

SWITCHGEAR = REPO / ".venv" / "bin" / "switchgear"
ALIAS = "bench"
#: High enough never to be reached: the runs measure a limit's bookkeeping, not its queueing.
MAX_CONCURRENCY = 4096
SCOPES = ("replica", "fleet")
UPSTREAMS = ("zero-latency", "simulator")
REPLICA_COUNTS = (1, 3)
#: The simulator: 30 ms to the first token, 0.5 ms per further one, 16 tokens (max_tokens).
SIMULATOR_OPTIONS = ["--slots", str(MAX_CONCURRENCY), "--ttft-ms", "30", "--tpot-ms", "0.5",
                     "--mean-output-tokens", "16", "--load-factor", "0", "--seed", "1"]
REQUEST_BODY: dict[str, object] = {
    "model": ALIAS,
    "messages": [{"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 16,
    "stream": False,
}
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Upstream:
    """The model server behind the replicas: its name in the table, /v1 URL and model name."""

    name: str
    base_url: str
    model: str


@dataclass(frozen=True)
class Run:
    """One measured wrk run: which upstream, how many replicas, which scope, how many
    connections; what wrk saw; CPU per answered request of the replicas and of Redis."""

    upstream: str
    replicas: int
    scope: str
    concurrency: int
    result: LoadResult
    gateway_cpu_us: float
    redis_cpu_us: float


def gateway_config(upstream: Upstream, store_url: str, state_prefix: str, scope: str
                   ) -> dict[str, Any]:
    """The config every replica of a run serves: keys required, records to PostgreSQL, limits'
    state in Redis, one alias on ``upstream`` whose ``max_concurrency`` holds in ``scope``."""
    return {
        "server": {"host": "127.0.0.1", "drain_grace_s": 0},
        "store": {"url": store_url},
        "auth": {"mode": "required"},
        "limits": {"state_url": REDIS_URL, "state_prefix": state_prefix},
        "models": {ALIAS: {"deployments": [{
            "name": upstream.name, "backend": "openai_http", "url": upstream.base_url,
            "model": upstream.model, "max_concurrency": MAX_CONCURRENCY,
            "max_concurrency_scope": scope}]}},
    }


def redis_cpu_seconds() -> float:
    """CPU seconds (user + system) the Redis server has used since it started."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Fleet:
    """``count`` replicas pinned to the gateway core behind nginx pinned to the load core."""

    def __init__(self, count: int, config: dict[str, Any], work: Path, cores: tuple[int, int],
                 admin_key: str) -> None:
        self.work = work
        self.load_core, self.gateway_core = cores
        self.admin_key = admin_key
        config_path = work / "switchgear.yaml"
        config_path.write_text(yaml.safe_dump(config))
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "SWITCHGEAR_ADMIN_KEY": admin_key,
                       "SWITCHGEAR_AUDIT_SECRET": secrets.token_urlsafe(32)}
        self.ports = [free_port() for _ in range(count)]
        self.replicas = [
            ServiceProcess(f"replica-{number}",
                           pinned([str(SWITCHGEAR), "serve", "--config", str(config_path),
                                   "--port", str(port), "--log-level", "warning"],
                                  self.gateway_core),
                           work / f"replica-{number}.log", env=environment, cwd=work)
            for number, port in enumerate(self.ports)]

    def endpoint(self, port: int) -> Endpoint:
        """Chat completions on ``port`` with the admin key."""
        return Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", ALIAS,
                        {"Content-Type": "application/json",
                         "Authorization": f"Bearer {self.admin_key}"})

    @contextmanager
    def running(self) -> Iterator[Endpoint]:
        """Start the replicas (each answering 200), then the balancer; yield its endpoint."""
        body = json.dumps(REQUEST_BODY).encode()
        with ExitStack() as started:
            for replica in self.replicas:
                started.enter_context(replica)
            for replica, port in zip(self.replicas, self.ports, strict=True):
                wait_until_answers(self.endpoint(port), body, replica, STARTUP_TIMEOUT_S)
            port = free_port()
            prefix = self.work / "balancer"
            prefix.mkdir(exist_ok=True)
            conf = prefix / "nginx.conf"
            conf.write_text(balancer_config(prefix, port, self.ports))
            balancer = started.enter_context(ServiceProcess(
                "balancer", pinned([nginx_binary() or "nginx", "-p", str(prefix), "-e",
                                    str(prefix / "error.log"), "-c", str(conf)], self.load_core),
                prefix / "nginx.log"))
            endpoint = self.endpoint(port)
            wait_until_answers(endpoint, body, balancer, STARTUP_TIMEOUT_S)
            yield endpoint

    def cpu_seconds(self) -> float:
        """CPU seconds the replicas have used so far."""
        return sum(replica.cpu_seconds() for replica in self.replicas)


def measure(upstream: Upstream, count: int, scope: str, arguments: argparse.Namespace,
            store_url: str, say: Callable[[str], None]) -> list[Run]:
    """Every concurrency's measured run for ``count`` replicas with ``scope`` on ``upstream``."""
    cores = (arguments.load_core, arguments.gateway_core)
    work = Path(tempfile.mkdtemp(prefix=f"{upstream.name}-{count}-{scope}-", dir=arguments.work))
    config = gateway_config(upstream, store_url, f"sgbench:fleet:{uuid.uuid4().hex}:", scope)
    fleet = Fleet(count, config, work, cores, "sg-bench-" + secrets.token_urlsafe(24))
    load = WrkLoad(work, arguments.load_core, REQUEST_BODY)
    runs = []
    with fleet.running() as endpoint:
        for concurrency in arguments.concurrency:
            load.run(endpoint, concurrency, arguments.warmup_seconds)
            gateway_before, redis_before = fleet.cpu_seconds(), redis_cpu_seconds()
            result = load.run(endpoint, concurrency, arguments.seconds)
            answered = max(result.requests, 1)
            run = Run(upstream.name, count, scope, concurrency, result,
                      (fleet.cpu_seconds() - gateway_before) * 1e6 / answered,
                      (redis_cpu_seconds() - redis_before) * 1e6 / answered)
            say(f"  {_row(run)}")
            runs.append(run)
    return runs


HEADER = (f"{'upstream':<13}{'replicas':>9} {'scope':<8}{'conc':>5}{'req/s':>9}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'gw cpu us/req':>15}{'redis us/req':>14}{'errors':>8}")


def _row(run: Run) -> str:
    result = run.result
    return (f"{run.upstream:<13}{run.replicas:>9} {run.scope:<8}{run.concurrency:>5}"
            f"{result.requests_per_s:>9,.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
            f"{run.gateway_cpu_us:>15,.0f}{run.redis_cpu_us:>14,.1f}{result.errors:>8}")


def table(runs: Sequence[Run]) -> str:
    """Every run, one row each."""
    return "\n".join([HEADER, *(_row(run) for run in runs)])


def _pairs(runs: Sequence[Run], differ: str) -> Iterator[tuple[Run, Run]]:
    """Runs that are alike but for ``differ`` (replicas or scope): (first value's, second's)."""
    def key(run: Run) -> tuple[Any, ...]:
        return tuple(getattr(run, name) for name in ("upstream", "replicas", "scope",
                                                     "concurrency") if name != differ)
    first_value = REPLICA_COUNTS[0] if differ == "replicas" else SCOPES[0]
    others = {key(run): run for run in runs if getattr(run, differ) != first_value}
    for run in runs:
        if getattr(run, differ) == first_value and key(run) in others:
            yield run, others[key(run)]


def scale_lines(runs: Sequence[Run]) -> list[str]:
    """Three replicas against one, alike otherwise: aggregate req/s and p99."""
    return [f"  {one.upstream:<13}{one.scope:<8} conc {one.concurrency:>3}: req/s"
            f" {one.result.requests_per_s:,.0f} -> {three.result.requests_per_s:,.0f}"
            f" (x{three.result.requests_per_s / max(one.result.requests_per_s, 1e-9):.2f}),"
            f" p99 {one.result.p99_ms:.2f} -> {three.result.p99_ms:.2f} ms"
            for one, three in _pairs(runs, "replicas")]


def fleet_cost_lines(runs: Sequence[Run]) -> list[str]:
    """Fleet scope against replica scope, alike otherwise: CPU and latency added per request."""
    return [f"  {local.upstream:<13}{local.replicas} replica{'s' if local.replicas > 1 else ' '}"
            f" conc {local.concurrency:>3}: replicas' CPU"
            f" {fleet.gateway_cpu_us - local.gateway_cpu_us:+,.0f} us/req, Redis's"
            f" {fleet.redis_cpu_us - local.redis_cpu_us:+,.1f} us/req, p50"
            f" {fleet.result.p50_ms - local.result.p50_ms:+.2f} ms, p99"
            f" {fleet.result.p99_ms - local.result.p99_ms:+.2f} ms, req/s"
            f" {fleet.result.requests_per_s / max(local.result.requests_per_s, 1e-9) - 1:+.0%}"
            for local, fleet in _pairs(runs, "scope")]


def method(arguments: argparse.Namespace, load_before: str) -> str:
    """How the figures were made."""
    body = dict(REQUEST_BODY)
    body.pop("model")
    levels = ", ".join(str(c) for c in arguments.concurrency)
    return (
        f"Method: {len(os.sched_getaffinity(0))} CPUs ({cpu_model()}), commit {commit(REPO)}."
        f" Replicas: `switchgear serve` (keys required, records to one PostgreSQL schema, limits'"
        f" state in Redis, one openai_http deployment with max_concurrency {MAX_CONCURRENCY}),"
        f" all pinned to core {arguments.gateway_core}; nginx balancing over them (round robin,"
        f" keep-alive), the upstream (nginx answering a fixed chat.completion at once, or"
        f" `switchgear simulate {' '.join(SIMULATOR_OPTIONS)}`) and wrk on core"
        f" {arguments.load_core}. Per run, fresh replicas; per concurrency ({levels} connections,"
        f" wrk threads = min(concurrency, 2)) a {arguments.warmup_seconds} s warm-up, then a"
        f" {arguments.seconds} s measured run, one run each (no repeats: differences of a few"
        f" percent are noise). Non-streaming POST /v1/chat/completions, body {json.dumps(body)}."
        f" Latency percentiles are wrk's; 'gw cpu' is the replicas' CPU time (user + system,"
        f" /proc) in the measured run per answered request, 'redis' the Redis server's (INFO"
        f" cpu). Load average before: {load_before}; after: {load_average()}."
        f" Versions: {wrk_version()}; {nginx_version()}."
        f"\nNote: on a machine with {len(os.sched_getaffinity(0))} cores, three replicas share"
        f" one core, and nginx, the upstream and wrk the other: 'three replicas' measures what"
        f" running as a fleet costs (balancing, shared state, coordination), not scale-out."
    )


def nginx_version() -> str:
    """nginx's version line (``nginx -v`` prints it on stderr)."""
    try:
        done = subprocess.run([nginx_binary() or "nginx", "-v"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "nginx (unknown version)"
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ") or "nginx"


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def _names(known: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        if not names or set(names) - set(known):
            raise argparse.ArgumentTypeError(f"a comma-separated subset of {','.join(known)}")
        return names
    return parse


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstreams", type=_names(UPSTREAMS), default=list(UPSTREAMS),
                        help=f"comma-separated subset of {','.join(UPSTREAMS)} (default: both)")
    parser.add_argument("--concurrency", type=_int_list, default=[16, 64],
                        help="comma-separated connection counts (default 16,64)")
    parser.add_argument("--seconds", type=int, default=8, help="measured run (default 8)")
    parser.add_argument("--warmup-seconds", type=int, default=2, help="warm-up (default 2)")
    parser.add_argument("--load-core", type=int, default=0, help="nginx, upstream, wrk (0)")
    parser.add_argument("--gateway-core", type=int, default=1, help="the replicas (1)")
    parser.add_argument("--work", type=Path, default=None,
                        help="where configs and logs go (default: a temporary directory)")
    return parser.parse_args(argv)


@contextmanager
def upstream_running(name: str, work: Path, core: int) -> Iterator[Upstream]:
    """The upstream ``name`` serving on a free port, pinned to ``core``; stopped at the end."""
    port = free_port()
    if name == "zero-latency":
        nginx = NginxUpstream(work / "upstream", port, core)
        process, upstream = nginx.process(), Upstream(name, nginx.base_url, UPSTREAM_MODEL)
        probe = nginx.endpoint()
    else:
        process = ServiceProcess("simulator", pinned(
            [str(SWITCHGEAR), "simulate", "--port", str(port), *SIMULATOR_OPTIONS], core),
            work / "simulator.log")
        upstream = Upstream(name, f"http://127.0.0.1:{port}/v1", "sim")
        probe = Endpoint(f"{upstream.base_url}/chat/completions", "sim",
                         {"Content-Type": "application/json"})
    with process:
        wait_until_answers(probe, json.dumps(probe.body(REQUEST_BODY)).encode(), process,
                           STARTUP_TIMEOUT_S)
        yield upstream


def main(argv: Sequence[str] | None = None, say: Callable[[str], None] = print) -> int:
    """Run every upstream x replica count x scope; 0 when no run had errors."""
    arguments = parse_arguments(argv)
    stop_everything_on_sigterm()
    if wrk_binary() is None or nginx_binary() is None:
        say("benchmark failed: nginx and wrk are needed: bash benchmarks/overhead/setup.sh"
            " --debian-only")
        return 1
    load_before = load_average()
    schema = f"sg_bench_fleet_{uuid.uuid4().hex}"
    store_url = f"{POSTGRES_URL}?schema={schema}"
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="sg-fleet-bench-") as temporary:
        arguments.work = arguments.work or Path(temporary)
        arguments.work.mkdir(parents=True, exist_ok=True)
        say(HEADER)
        try:
            for name in arguments.upstreams:
                with upstream_running(name, arguments.work, arguments.load_core) as upstream:
                    for count in REPLICA_COUNTS:
                        for scope in SCOPES:
                            runs += measure(upstream, count, scope, arguments, store_url, say)
        except BenchmarkError as error:
            say(f"benchmark failed: {error}")
            return 1
        finally:
            asyncio.run(drop_schema(schema))
    say("")
    say(table(runs))
    say("\nThree replicas against one (aggregate through the balancer):")
    for line in scale_lines(runs):
        say(line)
    say("\nWhat a fleet-wide limit costs a request (fleet scope minus replica scope):")
    for line in fleet_cost_lines(runs):
        say(line)
    errors = sum(run.result.errors for run in runs)
    if errors:
        say(f"\nPROBLEM: {errors} errors (non-2xx answers or socket errors) in the measured runs")
    say("")
    say(method(arguments, load_before))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
