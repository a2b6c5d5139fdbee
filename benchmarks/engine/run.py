"""Measure the embedded engine's continuous batching against llama.cpp's own servers.

Run ``bash benchmarks/engine/setup.sh`` once (builds llama-server), then
``python benchmarks/engine/run.py``. For each target, one after another, with the same GGUF
(SmolLM2-135M-Instruct Q4_1) and the same thread count: greedy chat requests (128 output tokens
at most, short prompts) from 1, 2, 4 and 8 concurrent clients, each sending requests back to back;
reported are aggregate completion tokens/s (usage.completion_tokens summed over the wall time) and
p50/p95 end-to-end latency. All targets are started first and measured in turn at each
concurrency, so a change in the machine's load affects them alike. Targets:

- switchgear: ``switchgear serve`` with the embedded engine (8 slots), through the gateway
  (``Cache-Control: no-store``: greedy answers would otherwise come from the response cache);
- llama-cpp-python: ``python -m llama_cpp.server`` (one Llama, requests serialized);
- llama-server: llama.cpp's own server built from the same sources, ``--parallel 8``.

Then the priority check on Switchgear: time to first token of a standard-tier stream on the idle
engine, and again while 8 batch-tier streams (``x-switchgear-priority: batch``) run; each probe
asks a question the engine has not seen (a prompt some slot still holds whole would be answered
idle without being read, a like-for-like comparison needs both to be read).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORK = HERE / ".work"
sys.path.append(str(HERE.parent / "overhead"))

from processes import (  # noqa: E402 - benchmarks/overhead's helpers, by path
    BenchmarkError,
    Endpoint,
    ServiceProcess,
    free_port,
    stop_everything_on_sigterm,
    wait_until_answers,
)

from switchgear.capacity.machine import commit, cpu_model, load_average  # noqa: E402
from switchgear.engine.runner import default_model_path  # noqa: E402

PROMPTS = [f"Write a long story about {topic}." for topic in (
    "a cat who learns to sail", "a lighthouse keeper", "a robot gardener", "a winter market",
    "a baker's apprentice", "a train across the desert", "a map of the moon", "a lost violin")]
MAX_TOKENS = 128
START_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Row:
    """One target at one concurrency."""

    target: str
    concurrency: int
    requests: int
    tokens_per_s: float
    p50_s: float
    p95_s: float
    mean_completion_tokens: float


def chat_body(model: str, index: int, stream: bool = False, max_tokens: int = MAX_TOKENS,
              content: str | None = None) -> bytes:
    """A greedy chat body asking ``content`` (default: the ``index``-th of PROMPTS)."""
    text = PROMPTS[index % len(PROMPTS)] if content is None else content
    body = {"model": model, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    return json.dumps(body).encode()


def complete(endpoint: Endpoint, index: int) -> tuple[float, int]:
    """One non-streamed request: its latency and completion tokens."""
    request = urllib.request.Request(endpoint.url, chat_body(endpoint.model, index),
                                     dict(endpoint.headers), method="POST")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        answer = json.load(response)
    return time.perf_counter() - started, int(answer["usage"]["completion_tokens"])


def first_token_s(endpoint: Endpoint, index: int, headers: dict[str, str] | None = None,
                  max_tokens: int = MAX_TOKENS, read_all: bool = False,
                  content: str | None = None) -> float:
    """Seconds from sending a streamed request to its first content chunk."""
    request = urllib.request.Request(
        endpoint.url, chat_body(endpoint.model, index, stream=True, max_tokens=max_tokens,
                                content=content),
        {**endpoint.headers, **(headers or {})}, method="POST")
    started = time.perf_counter()
    first = None
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        for line in response:
            if first is None and line.startswith(b"data: {") and b'"content":"' in line:
                first = time.perf_counter() - started
                if not read_all:
                    break
    if first is None:
        raise BenchmarkError("a stream ended without content")
    return first


def measure(name: str, endpoint: Endpoint, concurrency: int, rounds: int) -> Row:
    """``concurrency`` clients each sending ``rounds`` requests back to back."""
    results: list[tuple[float, int]] = []
    failures: list[BaseException] = []

    def client(number: int) -> None:
        try:
            for round_ in range(rounds):
                results.append(complete(endpoint, number + round_ * concurrency))
        except (OSError, ValueError, KeyError) as error:
            failures.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise BenchmarkError(f"{name}: {len(failures)} requests failed: {failures[0]}")
    latencies = sorted(latency for latency, _ in results)
    tokens = [count for _, count in results]
    return Row(name, concurrency, len(results), sum(tokens) / wall,
               statistics.median(latencies), latencies[max(0, round(0.95 * len(latencies)) - 1)],
               statistics.fmean(tokens))


def switchgear_target(port: int, threads: int) -> tuple[ServiceProcess, Endpoint]:
    config = WORK / "switchgear.yaml"
    config.write_text(
        "models:\n  smollm2:\n    deployments:\n    - name: embedded\n      backend: embedded\n"
        f"      embedded: {{n_ctx: 2048, n_threads: {threads}, max_sequences: 8}}\n"
        f"store: {{url: 'sqlite:///{WORK}/records.db'}}\n")
    argv = [sys.executable, "-m", "switchgear", "serve", "--config", str(config),
            "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return (ServiceProcess("switchgear", argv, WORK / "logs" / "switchgear.log", env),
            Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", "smollm2",
                     {"Content-Type": "application/json", "Cache-Control": "no-store"}))


def llama_cpp_python_target(port: int, threads: int) -> tuple[ServiceProcess, Endpoint]:
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()),
            "--n_ctx", "2048", "--n_threads", str(threads), "--host", "127.0.0.1",
            "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(WORK / "server-libs")}
    return (ServiceProcess("llama-cpp-python", argv, WORK / "logs" / "llama-cpp-python.log",
                           env),
            Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", "smollm2",
                     {"Content-Type": "application/json"}))


def llama_server_target(port: int, threads: int) -> tuple[ServiceProcess, Endpoint]:
    binary = WORK / "llama-server"
    if not binary.is_file():
        raise BenchmarkError(f"{binary} is missing: run benchmarks/engine/setup.sh first")
    argv = [str(binary), "-m", str(default_model_path()), "--parallel", "8", "-c", "16384",
            "-t", str(threads), "--host", "127.0.0.1", "--port", str(port)]
    return (ServiceProcess("llama-server", argv, WORK / "logs" / "llama-server.log"),
            Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", "smollm2",
                     {"Content-Type": "application/json"}))


TARGETS = {"switchgear": switchgear_target, "llama-cpp-python": llama_cpp_python_target,
           "llama-server": llama_server_target}


def probe(endpoint: Endpoint, number: int) -> float:
    """TTFT of a standard-tier stream whose prompt the engine has not seen (so that no slot
    holds it whole: idle, a kept slot would answer it without reading it, which a busy engine's
    slots cannot)."""
    return first_token_s(endpoint, number, max_tokens=4,
                         content=f"Question {number}: what is {number} plus {number}?")


def priority_check(endpoint: Endpoint, tries: int) -> tuple[float, float]:
    """Median TTFT of a standard-tier stream on the idle engine, then beside 8 batch streams."""
    idle = statistics.median(probe(endpoint, n) for n in range(tries))
    batch = [threading.Thread(target=first_token_s, args=(endpoint, n),
                              kwargs={"headers": {"x-switchgear-priority": "batch"},
                                      "max_tokens": 1000, "read_all": True})
             for n in range(8)]
    for thread in batch:
        thread.start()
    time.sleep(3.0)  # the batch streams are decoding
    loaded = statistics.median(probe(endpoint, n) for n in range(tries, 2 * tries))
    for thread in batch:
        thread.join()
    return idle, loaded


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--concurrency", default="1,2,4,8", help="client counts (1,2,4,8)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="requests each client sends back to back (default 2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="model threads for every target (default: all cores)")
    parser.add_argument("--priority-tries", type=int, default=3,
                        help="TTFT samples on the idle and on the loaded engine (default 3)")
    parser.add_argument("--json", type=Path, default=WORK / "results" / "latest.json")
    return parser.parse_args(argv)


def checks(rows: list[Row], ttft: tuple[float, float] | None) -> list[str]:
    """The issue's targets, each met or MISSED (only where its rows were measured)."""
    rate = {(row.target, row.concurrency): row.tokens_per_s for row in rows}
    lines = []

    def check(label: str, value: float | None, bound: float | None, ratio: float) -> None:
        if value is not None and bound is not None:
            verdict = "met" if value >= ratio * bound else "MISSED"
            lines.append(f"{verdict}: {label}: {value:.1f} vs {ratio:g} x {bound:.1f}")

    mine = rate.get(("switchgear", 8))
    check("switchgear c8 >= 90% of llama-server c8", mine, rate.get(("llama-server", 8)), 0.9)
    check("switchgear c8 >= 1.5x switchgear c1", mine, rate.get(("switchgear", 1)), 1.5)
    check("switchgear c1 >= 95% of llama-cpp-python c1", rate.get(("switchgear", 1)),
          rate.get(("llama-cpp-python", 1)), 0.95)
    if ttft is not None:
        idle, loaded = ttft
        verdict = "met" if loaded <= 2 * idle else "MISSED"
        lines.append(f"{verdict}: TTFT beside 8 batch streams <= 2x idle: {loaded * 1000:.0f} ms"
                     f" vs 2 x {idle * 1000:.0f} ms")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    stop_everything_on_sigterm()
    names = [name.strip() for name in arguments.only.split(",") if name.strip()]
    levels = [int(level) for level in arguments.concurrency.split(",")]
    before = load_average()
    print(f"Method: {cpu_model()}, {os.cpu_count()} cores, load average {before} at start; "
          f"commit {commit(REPO)}; model {default_model_path().name}; {arguments.threads} model "
          f"threads per target; greedy chat, max_tokens {MAX_TOKENS}, short prompts; "
          f"{arguments.rounds} requests per client back to back at concurrency {levels}.",
          flush=True)
    rows: list[Row] = []
    ttft = None
    with contextlib.ExitStack() as running:
        endpoints = {}
        for name in names:  # all up at once, idle while another is measured
            process, endpoint = TARGETS[name](free_port(), arguments.threads)
            running.enter_context(process)
            wait_until_answers(endpoint, chat_body(endpoint.model, 0), process, START_TIMEOUT_S)
            endpoints[name] = endpoint
        for level in levels:  # targets in turn at each level, so load drift hits all alike
            for name, endpoint in endpoints.items():
                row = measure(name, endpoint, level, arguments.rounds)
                rows.append(row)
                print(f"{name:17} c={level}: {row.tokens_per_s:6.1f} tok/s  p50 "
                      f"{row.p50_s:6.2f} s  p95 {row.p95_s:6.2f} s  ({row.requests} requests, "
                      f"{row.mean_completion_tokens:.0f} tokens each)", flush=True)
        if "switchgear" in endpoints and arguments.priority_tries:
            ttft = priority_check(endpoints["switchgear"], arguments.priority_tries)
            print(f"switchgear TTFT: idle {ttft[0] * 1000:.0f} ms, beside 8 batch streams "
                  f"{ttft[1] * 1000:.0f} ms", flush=True)
    print(f"load average at end: {load_average()} (a busy machine makes every figure noisy)")
    for line in checks(rows, ttft):
        print(line)
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps(
        {"rows": [asdict(row) for row in rows], "ttft_s": ttft, "load_before": before},
        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
