"""Hostile input: slow half-open connections and junk requests beside a normal client.

Run ``.venv/bin/python benchmarks/hostile/run.py`` (about 45 s with the defaults). A real
``switchgear serve`` (its own process: one ``simulated`` model, the request log in SQLite under
``benchmarks/hostile/.work/``) is started fresh; then, for ``--seconds``, this process at once
holds ``--slow`` half-open connections (each sends a partial request line and headers, a few
bytes at a time, and never finishes), sends ``--junk`` junk requests (NUL bytes and control
characters, 100 KB model names, wrong JSON types, deep nesting, invalid UTF-8, missing keys) and
runs a normal client (the official ``openai`` client) sending valid chat requests one after
another. Then it stops the gateway with SIGTERM and counts the request-log rows against the
request ids the gateway answered with. Prints the normal client's success rate and p50/p99, the
gateway's open file descriptors and RSS, the junk answers per status, any 5xx, the rows lost and
the method; exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import aiohttp
import openai
import yaml

from switchgear.capacity.machine import commit, cpu_model, load_average
from switchgear.percentiles import nearest_rank
from switchgear.store import open_store

REPO = Path(__file__).resolve().parent.parent.parent
WORK = Path(__file__).resolve().parent / ".work"
SWITCHGEAR = REPO / ".venv" / "bin" / "switchgear"
MODEL = "sim"
CHAT = "/v1/chat/completions"
SAMPLE_SECONDS = 0.5
#: Seconds between the bytes a slow connection trickles.
TRICKLE_SECONDS = 1.0
#: Junk requests in flight at once.
JUNK_CONCURRENCY = 8


# --- junk ------------------------------------------------------------------------------------------

def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _nested(depth: int) -> bytes:
    return b'{"model": "sim", "messages": ' + b"[" * depth + b"]" * depth + b"}"


HELLO = [{"role": "user", "content": "hello"}]

#: Every kind of junk body: a name and a function of a random source giving the bytes to POST.
JUNK: dict[str, Callable[[random.Random], bytes]] = {
    "nul-in-model": lambda r: _json({"model": "sim\x00" + "\x00" * r.randrange(4),
                                     "messages": HELLO}),
    "control-chars": lambda r: _json({"model": "".join(chr(r.randrange(32)) for _ in range(16)),
                                      "messages": [{"role": "user",
                                                    "content": "\x01\x07\x1b[2J\x7f\x00"}]}),
    "raw-nul-bytes": lambda r: b'{"model": "s\x00im", "messages": [\x00]}',
    "model-100kb": lambda r: _json({"model": "m" * 100_000, "messages": HELLO}),
    "model-wrong-type": lambda r: _json({"model": r.choice([1, 2.5, True, None, [], {}]),
                                         "messages": HELLO}),
    "messages-wrong-type": lambda r: _json({"model": MODEL, "messages": r.choice(
        ["hi", 1, {}, [1], [None], [{"role": 5}], [{"role": "user", "content": 7}],
         [{"role": "user", "content": [{"type": 1}]}], [{"role": "user", "name": []}]])}),
    "sampling-wrong-type": lambda r: _json({"model": MODEL, "messages": HELLO,
                                            r.choice(["max_tokens", "temperature", "n", "stop",
                                                      "stream", "top_p", "seed"]):
                                            r.choice(["x", -1, 1e308, [], {}, True, "\x00"])}),
    "deep-nesting": lambda r: _nested(r.choice([200, 1000, 5000])),
    "invalid-utf8": lambda r: b'{"model": "sim\xff\xfe", "messages": [{"role": "user", '
                              b'"content": "\xc3\x28\xa0\xa1"}]}',
    "missing-keys": lambda r: _json(r.choice([{}, {"model": MODEL}, {"messages": HELLO},
                                              {"model": MODEL, "messages": []}])),
    "not-an-object": lambda r: r.choice([b"[]", b"null", b"1", b'"x"', b"", b"{", b"\x00" * 64]),
    "unknown-model": lambda r: _json({"model": "no-such-model-" + str(r.random()),
                                      "messages": HELLO}),
}


def junk_body(index: int, seed: int) -> tuple[str, bytes]:
    """The ``index``-th junk request: its kind (round robin) and its body."""
    kinds = list(JUNK)
    kind = kinds[index % len(kinds)]
    return kind, JUNK[kind](random.Random(seed * 1_000_003 + index))


# --- measuring ------------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: int) -> float:
    """The nearest-rank ``q`` percentile (1-100) of ``values``, as `latency report` takes it;
    NaN when empty."""
    return nearest_rank(sorted(values), q) if values else float("nan")


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` holds open (-1 where /proc cannot tell)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def rss_kib(pid: int) -> int:
    """``pid``'s resident set size in KiB (0 where /proc is missing)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's open-file soft limit to its hard limit (the gateway inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass
class Results:
    """Everything one run saw."""

    normal_ok: int = 0
    normal_failed: Counter[str] = field(default_factory=Counter)
    normal_latencies: list[float] = field(default_factory=list)
    junk_sent: int = 0
    junk_status: Counter[str] = field(default_factory=Counter)
    junk_5xx: Counter[str] = field(default_factory=Counter)  # kind -> count
    junk_by_kind: dict[str, Counter[str]] = field(default_factory=dict)  # kind -> status -> count
    request_ids: set[str] = field(default_factory=set)  # every x-request-id on an OpenAI path
    slow_opened: int = 0
    slow_refused: Counter[str] = field(default_factory=Counter)
    slow_closed_by_server: int = 0
    slow_open_max: int = 0
    slow_held: list[float] = field(default_factory=list)  # closed by the gateway: seconds open
    slow_answers: Counter[str] = field(default_factory=Counter)
    fds: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    rows: int = -1
    lost: int = -1
    exit_status: int | None = None
    drain_seconds: float = float("nan")


# --- the three loads ------------------------------------------------------------------------------

async def slow_connection(port: int, stop: asyncio.Event, results: Results,
                          alive: list[int]) -> None:
    """One half-open request: a partial request line and headers, a few bytes a second, never
    finished; notes whether the server closes it (and what it answered, if anything)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError) as error:
        results.slow_refused[type(error).__name__] += 1
        return
    results.slow_opened += 1
    alive[0] += 1
    results.slow_open_max = max(results.slow_open_max, alive[0])
    head = f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    trickle = (head + "".join(f"X-Slow-{i}: {'a' * 8}\r\n" for i in range(1000))).encode()
    position = 0
    opened = time.monotonic()
    read = asyncio.ensure_future(reader.read(4096))
    try:
        while not stop.is_set() and position < len(trickle):
            writer.write(trickle[position:position + 4])
            position += 4
            await writer.drain()
            done, _ = await asyncio.wait({read}, timeout=TRICKLE_SECONDS)
            if done:
                data = read.result() if not read.exception() else b""
                first = data.split(b"\r\n", 1)[0].decode("latin-1")[:40]
                results.slow_answers[first or "closed without an answer"] += 1
                results.slow_closed_by_server += 1
                results.slow_held.append(time.monotonic() - opened)
                return
    except OSError:
        results.slow_closed_by_server += 1
        results.slow_held.append(time.monotonic() - opened)
        results.slow_answers["reset"] += 1
    finally:
        alive[0] -= 1
        read.cancel()
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2)


async def slow_connections(port: int, count: int, stop: asyncio.Event, results: Results,
                           ramp_seconds: float) -> None:
    """Open ``count`` slow connections spread over ``ramp_seconds``, hold them until ``stop``."""
    alive = [0]
    tasks = []
    for index in range(count):
        if stop.is_set():
            break
        tasks.append(asyncio.create_task(slow_connection(port, stop, results, alive)))
        if index % 50 == 49:
            await asyncio.sleep(ramp_seconds * 50 / count)
    await asyncio.gather(*tasks)


async def junk_requests(base: str, count: int, seed: int, stop: asyncio.Event,
                        results: Results) -> None:
    """POST ``count`` junk bodies (or as many as fit before ``stop``), a few at once."""
    next_index = 0
    connector = aiohttp.TCPConnector(limit=JUNK_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def worker() -> None:
            nonlocal next_index
            while not stop.is_set() and next_index < count:
                index = next_index
                next_index += 1
                kind, body = junk_body(index, seed)
                results.junk_sent += 1
                try:
                    async with session.post(base + CHAT, data=body, headers={
                            "Content-Type": "application/json"}) as response:
                        await response.read()
                        status = response.status
                        request_id = response.headers.get("x-request-id")
                except (aiohttp.ClientError, TimeoutError) as error:
                    results.junk_status[type(error).__name__] += 1
                    results.junk_by_kind.setdefault(kind, Counter())[type(error).__name__] += 1
                    continue
                results.junk_status[str(status)] += 1
                results.junk_by_kind.setdefault(kind, Counter())[str(status)] += 1
                if status >= 500:
                    results.junk_5xx[kind] += 1
                if request_id:
                    results.request_ids.add(request_id)

        await asyncio.gather(*(worker() for _ in range(JUNK_CONCURRENCY)))


async def normal_client(base: str, stop: asyncio.Event, results: Results) -> None:
    """Valid chat requests, one after another, with the official client, until ``stop``."""
    async with openai.AsyncOpenAI(base_url=base + "/v1", api_key="sk-hostile-benchmark",
                                  max_retries=0, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=[{"role": "user", "content": "Say hello"}],
                    max_tokens=8)
                raw.parse()
            except openai.APIStatusError as error:
                results.normal_failed[str(error.status_code)] += 1
                if error.response.headers.get("x-request-id"):
                    results.request_ids.add(error.response.headers["x-request-id"])
                continue
            except openai.APIError as error:
                results.normal_failed[type(error).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            results.normal_latencies.append(time.perf_counter() - started)
            results.normal_ok += 1
            results.request_ids.add(raw.headers["x-request-id"])


async def sample(pid: int, stop: asyncio.Event, results: Results) -> None:
    """The gateway's open file descriptors and RSS, every half second until ``stop``."""
    while not stop.is_set():
        results.fds.append(open_fds(pid))
        results.rss.append(rss_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)


async def hostile(pid: int, port: int, arguments: argparse.Namespace, results: Results) -> None:
    """All three loads at once for ``arguments.seconds``."""
    base = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(arguments.seconds, stop.set)
    results.fds.append(open_fds(pid))
    results.rss.append(rss_kib(pid))
    await asyncio.gather(
        sample(pid, stop, results),
        slow_connections(port, arguments.slow, stop, results, min(5.0, arguments.seconds / 3)),
        junk_requests(base, arguments.junk, arguments.seed, stop, results),
        normal_client(base, stop, results),
    )
    results.fds.append(open_fds(pid))
    results.rss.append(rss_kib(pid))


# --- the gateway ----------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(work: Path, port: int) -> Path:
    """The gateway's config: one simulated model, the request log in SQLite under ``work``."""
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "models": {MODEL: {"deployments": [{
            "name": "local", "backend": "simulated",
            "simulated": {"ttft_ms": 5, "tpot_ms": 1, "mean_output_tokens": 8}}]}},
        "store": {"url": f"sqlite:///{work / 'records.db'}"},
    }
    path = work / "switchgear.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_gateway(work: Path, port: int) -> subprocess.Popen[bytes]:
    """``switchgear serve`` in its own process, answering /healthz (or raise)."""
    config = write_config(work, port)
    environment = {key: value for key, value in os.environ.items()
                   if key != "SWITCHGEAR_ADMIN_KEY"}  # keys not required: the body is read
    with (work / "server.log").open("wb") as log:  # the child keeps its own copy
        server = subprocess.Popen([str(SWITCHGEAR), "serve", "--config", str(config),
                                   "--log-level", "warning"], stdout=log,
                                  stderr=subprocess.STDOUT, env=environment, cwd=work)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the gateway exited at start-up; see {work / 'server.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), 1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("the gateway did not answer /healthz within 60 s")


def stop_gateway(server: subprocess.Popen[bytes], results: Results) -> None:
    """SIGTERM, and wait for the drain (kill after 60 s)."""
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        results.exit_status = server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
        results.exit_status = server.wait()
    results.drain_seconds = time.monotonic() - started


def count_rows(work: Path, results: Results) -> None:
    """Rows in the store, and how many answered request ids have none."""
    async def fetch() -> set[str]:
        store = open_store(f"sqlite:///{work / 'records.db'}")
        await store.open()
        try:
            return {row.request_id for row in await store.fetch()}
        finally:
            await store.close()

    rows = asyncio.run(fetch())
    results.rows = len(rows)
    results.lost = len(results.request_ids - rows)


# --- report ---------------------------------------------------------------------------------------

def version(package: str) -> str:
    """An installed package's version ('-' when missing)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def gateway_fd_limit(pid: int) -> str:
    """The gateway's own open-files soft limit, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return line.split()[3]
    except OSError:
        pass
    return "?"


def report(results: Results, arguments: argparse.Namespace, limits: tuple[int, int],
           gateway_limit: str, load_before: str, elapsed: float) -> int:
    """Print the figures, the goals and the method; 1 when a goal is missed."""
    normal_total = results.normal_ok + sum(results.normal_failed.values())
    rate = results.normal_ok / normal_total * 100 if normal_total else 0.0
    latencies = results.normal_latencies
    fds = [value for value in results.fds if value >= 0]
    five_xx = sum(results.junk_5xx.values()) + sum(
        count for status, count in results.normal_failed.items()
        if status.isdigit() and int(status) >= 500)
    print(f"Normal client: {results.normal_ok}/{normal_total} succeeded ({rate:.2f}%), "
          f"p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 "
          f"{percentile(latencies, 99) * 1000:.1f} ms"
          + (f"; failures: {dict(results.normal_failed)}" if results.normal_failed else ""))
    print(f"Slow connections: {results.slow_opened} of {arguments.slow} opened "
          f"(refused: {dict(results.slow_refused) or 0}), at most {results.slow_open_max} held "
          f"at once, {results.slow_closed_by_server} closed by the gateway before the end"
          + (f" after {min(results.slow_held):.1f} s at least, "
             f"{percentile(results.slow_held, 50):.1f} s at p50, "
             f"{max(results.slow_held):.1f} s at most" if results.slow_held else "")
          + (f" (first line of its answer: {dict(results.slow_answers)})"
             if results.slow_answers else ""))
    print(f"Junk requests: {results.junk_sent} of {arguments.junk} sent; answers per status: "
          + ", ".join(f"{status}: {count}" for status, count in sorted(results.junk_status.items())))
    print("  by kind: " + "; ".join(
        f"{kind} " + ", ".join(f"{status}: {count}" for status, count in sorted(counts.items()))
        for kind, counts in results.junk_by_kind.items()))
    print(f"5xx answers: {five_xx}" + (f" (junk by kind: {dict(results.junk_5xx)})"
                                       if results.junk_5xx else ""))
    print(f"Gateway: open fds {fds[0] if fds else '?'} at the start, {max(fds, default=-1)} at "
          f"most, {fds[-1] if fds else '?'} at the end; RSS {results.rss[0] / 1024:.1f} MiB at "
          f"the start, {max(results.rss) / 1024:.1f} MiB at most, {results.rss[-1] / 1024:.1f} "
          f"MiB at the end")
    print(f"Request log: {len(results.request_ids)} rows expected (request ids answered on "
          f"{CHAT}), {results.rows} in the store after SIGTERM, {results.lost} lost; the gateway "
          f"exited with {results.exit_status} after {results.drain_seconds:.1f} s")
    goals = [
        ("normal client success rate 100%", normal_total > 0 and results.normal_ok == normal_total),
        ("no 5xx", five_xx == 0),
        ("no request-log row lost", results.lost == 0),
    ]
    for name, met in goals:
        print(f"target: {name}: {'met' if met else 'MISSED'}")
    print(f"Method: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
          f"{platform.release()}; CPython {platform.python_version()}, switchgear "
          f"{version('switchgear')} at commit {commit(REPO)}, openai {version('openai')}, "
          f"aiohttp {version('aiohttp')}, uvicorn {version('uvicorn')}. `switchgear serve` in its "
          f"own process (one simulated model: 5 ms to first token, 1 ms per token, about 8 "
          f"tokens; request log in SQLite; keys not required, so bodies are read), started "
          f"fresh. For {arguments.seconds:g} s from one asyncio process: {arguments.slow} slow "
          f"connections opened over the first {min(5.0, arguments.seconds / 3):g} s, each "
          f"trickling 4 bytes of an unfinished POST's headers every {TRICKLE_SECONDS:g} s; "
          f"{arguments.junk} junk POSTs to {CHAT} ({len(JUNK)} kinds round robin: "
          f"{', '.join(JUNK)}), {JUNK_CONCURRENCY} in flight, aiohttp; one normal client (openai "
          f"AsyncOpenAI, max_retries 0) sending valid chat requests back to back. fds and RSS from "
          f"/proc/<pid> every {SAMPLE_SECONDS:g} s. Rows counted after SIGTERM, against every "
          f"x-request-id answered. Client open-files limit {limits[0]}, the gateway's "
          f"{gateway_limit}. Load average {load_before} before, {load_average()} after; "
          f"{elapsed:.0f} s in all.", flush=True)
    return 0 if all(met for _, met in goals) else 1


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=2000,
                        help="slow half-open connections held (2000)")
    parser.add_argument("--junk", type=int, default=10_000,
                        help="junk requests sent, at most (10000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the loads run (30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=WORK, help="work folder (.work beside this)")
    arguments = parser.parse_args(argv)
    if arguments.slow < 0 or arguments.junk < 0 or not 0 < arguments.seconds <= 600:
        parser.error("--slow and --junk >= 0, --seconds within (0, 600]")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gateway, the loads and the count; print; 1 when a goal is missed."""
    arguments = parse_arguments(argv)
    started = time.monotonic()
    limits = raise_fd_limit()
    if limits[0] < arguments.slow + 256:
        print(f"warning: open-files limit {limits[0]} is below --slow {arguments.slow} + 256",
              file=sys.stderr)
    work: Path = arguments.work
    work.mkdir(parents=True, exist_ok=True)
    for name in ("records.db", "records.db-wal", "records.db-shm"):
        (work / name).unlink(missing_ok=True)
    load_before = load_average()
    port = free_port()
    results = Results()
    server = start_gateway(work, port)
    try:
        gateway_limit = gateway_fd_limit(server.pid)
        asyncio.run(hostile(server.pid, port, arguments, results))
    finally:
        if server.poll() is None:
            stop_gateway(server, results)
    count_rows(work, results)
    return report(results, arguments, limits, gateway_limit, load_before,
                  time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
