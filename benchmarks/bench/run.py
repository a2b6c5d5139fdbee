"""``switchgear bench`` measured: (a) its own ceiling, (b) its agreement with wrk and hey.

Run ``.venv/bin/python benchmarks/bench/run.py`` (needs nginx, wrk and hey from Debian:
``bash benchmarks/overhead/setup.sh --debian-only``).

(a) Ceiling: nginx (benchmarks/overhead/upstream.py) answers every chat completion at once, pinned
to one core; ``switchgear bench`` runs in its own process pinned to another, closed loop with many
connections, then open loop at the target rate. Target: at least 5,000 requests/s from one core.

(b) Agreement: the simulator (``switchgear simulate``, fixed output length, so every answer takes
the same time) pinned to one core; wrk, hey and ``switchgear bench`` one after another against it,
pinned to another, closed loop at the same concurrency for the same time and the same body.
Printed: each tool's requests/s and p50/p90/p99, and bench's difference from each. Target: within
5% of wrk or hey on all four figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "benchmarks" / "overhead"))

from load import WrkLoad, wrk_binary, wrk_version  # noqa: E402
from processes import (  # noqa: E402
    BenchmarkError,
    Endpoint,
    ServiceProcess,
    free_port,
    pinned,
    wait_until_answers,
)
from upstream import UPSTREAM_MODEL, NginxUpstream, nginx_binary  # noqa: E402

from switchgear.capacity.machine import commit, cpu_model, load_average  # noqa: E402

CEILING_TARGET = 5_000.0
AGREEMENT_TARGET = 0.05
PROMPT = "Say hello to the benchmark in a few words."
_HEY_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_HEY_PERCENTILE = re.compile(r"(\d+)%+ in ([\d.]+) secs")


@dataclass(frozen=True)
class Figures:
    """One tool's requests/s and latency percentiles (ms)."""

    tool: str
    rate: float
    p50: float
    p90: float
    p99: float
    errors: int = 0

    def differences(self, other: Figures) -> list[float]:
        """This tool's relative differences from ``other``: rate, p50, p90, p99."""
        return [(mine - theirs) / theirs for mine, theirs in
                ((self.rate, other.rate), (self.p50, other.p50), (self.p90, other.p90),
                 (self.p99, other.p99))]


def run_switchgear_bench(url: str, model: str, args: Sequence[str], core: int,
                         work: Path) -> tuple[dict[str, object], float]:
    """``switchgear bench`` in its own process pinned to ``core``: its profile and CPU seconds."""
    profile_path = work / "profile.json"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [sys.executable, "-m", "switchgear", "bench", "--url", url, "--model", model,
            "--no-stream", "--json", str(profile_path), *args]
    done = subprocess.run(pinned(argv, core), capture_output=True, text=True, check=False,
                          timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchmarkError(f"switchgear bench failed:\n{done.stderr}{done.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    profile: dict[str, object] = json.loads(profile_path.read_text())
    return profile, cpu


def bench_figures(level: dict[str, object]) -> Figures:
    """A profile level as Figures."""
    e2e = level["latency_s"]["e2e"]  # type: ignore[index]
    errors = int(level["sent"]) - int(level["completed"])  # type: ignore[call-overload]
    return Figures("switchgear bench", float(level["request_rate"]),  # type: ignore[arg-type]
                   e2e["p50"] * 1000, e2e["p90"] * 1000, e2e["p99"] * 1000, errors)


def ceiling(arguments: argparse.Namespace, work: Path) -> bool:
    """Part (a); True when the target was met."""
    nginx = NginxUpstream(work / "nginx", free_port(), arguments.server_core)
    endpoint = nginx.endpoint()
    print(f"(a) ceiling: switchgear bench on core {arguments.load_core} against nginx on core "
          f"{arguments.server_core} (zero-latency upstream)")
    with nginx.process() as process:
        wait_until_answers(endpoint, json.dumps(_body(UPSTREAM_MODEL, 7)).encode(), process, 10)
        closed, cpu = run_switchgear_bench(
            nginx.base_url, UPSTREAM_MODEL,
            ["-c", str(arguments.ceiling_connections), "--duration", str(arguments.seconds),
             "--warmup", "1"], arguments.load_core, work)
        opened, _ = run_switchgear_bench(
            nginx.base_url, UPSTREAM_MODEL,
            ["-r", str(CEILING_TARGET), "--arrival", "constant", "--duration",
             str(arguments.seconds), "--warmup", "1"], arguments.load_core, work)
    closed_level = closed["levels"][0]  # type: ignore[index]
    open_level = opened["levels"][0]  # type: ignore[index]
    rate = float(closed_level["request_rate"])
    sent = int(closed_level["sent"]) + int(open_level["sent"])
    print(f"    closed loop, {arguments.ceiling_connections} connections: {rate:,.0f} req/s "
          f"(errors {closed_level['errors'] or 0}); CPU of the bench process over both runs "
          f"{cpu * 1e6 / max(1, sent):.1f} us per request sent (start-up included)")
    e2e = open_level["latency_s"]["e2e"]
    print(f"    open loop, constant {CEILING_TARGET:,.0f}/s: {open_level['request_rate']:,.0f} "
          f"req/s served, p50 {e2e['p50'] * 1000:.2f} ms, p99 {e2e['p99'] * 1000:.2f} ms from "
          f"the scheduled time (errors {open_level['errors'] or 0})")
    met = rate >= CEILING_TARGET and not closed_level["errors"]
    print(f"    target: at least {CEILING_TARGET:,.0f} req/s from one core: "
          f"{rate:,.0f}: {'met' if met else 'MISSED'}")
    return met


def run_hey(url: str, body_path: Path, concurrency: int, seconds: float, core: int) -> Figures:
    """hey, closed loop at ``concurrency`` for ``seconds``."""
    argv = ["hey", "-c", str(concurrency), "-z", f"{seconds}s", "-m", "POST", "-T",
            "application/json", "-D", str(body_path), "-t", "30", url]
    out = subprocess.run(pinned(argv, core), capture_output=True, text=True, check=True,
                         timeout=seconds + 60).stdout
    rate = _HEY_RATE.search(out)
    percentiles = {int(p): float(v) * 1000 for p, v in _HEY_PERCENTILE.findall(out)}
    if rate is None or not {50, 90, 99} <= percentiles.keys():
        raise BenchmarkError(f"cannot read hey's output (p99 needs 100 answers):\n{out}")
    errors = sum(int(n) for n in re.findall(r"\[(?!200)\d+\]\s+(\d+) responses", out))
    return Figures("hey", float(rate.group(1)), percentiles[50], percentiles[90],
                   percentiles[99], errors)


def agreement(arguments: argparse.Namespace, work: Path) -> bool:
    """Part (b); True when bench is within 5% of wrk or hey on every figure."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    body = _body("sim", arguments.output_tokens)
    body_path = work / "body.json"
    body_path.write_text(json.dumps(body))
    prompts = work / "prompts.jsonl"
    prompts.write_text(json.dumps({"messages": body["messages"],
                                   "max_tokens": arguments.output_tokens}) + "\n")
    simulator = ServiceProcess("simulator", pinned(
        [sys.executable, "-m", "switchgear", "simulate", "--port", str(port), "--slots", "1024",
         "--ttft-ms", str(arguments.ttft_ms), "--tpot-ms", str(arguments.tpot_ms),
         "--load-factor", "0", "--seed", "1"], arguments.server_core), work / "simulator.log")
    endpoint = Endpoint(f"{url}/chat/completions", "sim", {"Content-Type": "application/json"})
    seconds, concurrency = arguments.seconds, arguments.concurrency
    print(f"(b) agreement: the simulator on core {arguments.server_core} (time to first token "
          f"{arguments.ttft_ms:g} ms, {arguments.tpot_ms:g} ms per further token, "
          f"{arguments.output_tokens} tokens per answer), each tool on core "
          f"{arguments.load_core}: closed loop, {concurrency} connections, {seconds:g} s, "
          "non-streaming, the same body")
    with simulator:
        wait_until_answers(endpoint, json.dumps(body).encode(), simulator, 30)
        results = []
        wrk = WrkLoad(work, arguments.load_core, body).run(endpoint, concurrency, int(seconds))
        results.append(Figures("wrk", wrk.requests_per_s, wrk.percentiles_ms[50.0],
                               wrk.percentiles_ms[90.0], wrk.percentiles_ms[99.0], wrk.errors))
        results.append(run_hey(endpoint.url, body_path, concurrency, seconds,
                               arguments.load_core))
        profile, _ = run_switchgear_bench(
            url, "sim", ["-c", str(concurrency), "--duration", str(seconds), "--warmup", "0",
                         "--jsonl", str(prompts), "--ignore-eos"], arguments.load_core, work)
        ours = bench_figures(profile["levels"][0])  # type: ignore[index]
    print(f"    {'tool':<18} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} errors")
    for figures in [*results, ours]:
        print(f"    {figures.tool:<18} {figures.rate:>9.1f} {figures.p50:>8.2f} "
              f"{figures.p90:>8.2f} {figures.p99:>8.2f} {figures.errors}")
    agreeing = []
    for other in results:
        differences = ours.differences(other)
        within = all(abs(d) <= AGREEMENT_TARGET for d in differences)
        agreeing.append(within)
        shown = ", ".join(f"{name} {d:+.1%}" for name, d in
                          zip(("req/s", "p50", "p90", "p99"), differences, strict=True))
        print(f"    bench against {other.tool}: {shown}: "
              f"{'within' if within else 'NOT within'} {AGREEMENT_TARGET:.0%}")
    met = any(agreeing)
    print(f"    target: within {AGREEMENT_TARGET:.0%} of wrk or hey on req/s, p50, p90, p99: "
          f"{'met' if met else 'MISSED'}")
    return met


def _body(model: str, output_tokens: int) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": output_tokens, "ignore_eos": True, "min_tokens": output_tokens}


def _hey_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True,
                             text=True, check=False, timeout=10).stdout
    except OSError:
        out = ""
    return f"hey {out or '(version unknown)'}"


def method(arguments: argparse.Namespace) -> str:
    """The Method line: machine, versions, pinning, durations."""
    return (f"Method: {platform.python_implementation()} {platform.python_version()} on "
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}); "
            f"switchgear at commit {commit(REPO)}; {wrk_version()}, {_hey_version()}, nginx "
            f"from Debian; servers on core {arguments.server_core}, load tools on core "
            f"{arguments.load_core} (taskset), one at a time; {arguments.seconds:g} s per run "
            f"(switchgear bench: 1 s warm-up more in (a), none in (b), like the others); "
            f"latency percentiles of each tool's own measurement; load average "
            f"{load_average()} at the start")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the parts asked for; 0 when every target was met, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="ceiling,agreement",
                        help="parts to run: ceiling, agreement (comma-separated)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=16, help="(b) connections")
    parser.add_argument("--ceiling-connections", type=int, default=64,
                        help="(a) closed-loop connections")
    parser.add_argument("--ttft-ms", type=float, default=20.0, help="(b) simulator TTFT")
    parser.add_argument("--tpot-ms", type=float, default=2.0, help="(b) simulator TPOT")
    parser.add_argument("--output-tokens", type=int, default=16, help="(b) tokens per answer")
    parser.add_argument("--load-core", type=int, default=1, help="core of the load tools")
    parser.add_argument("--server-core", type=int, default=0, help="core of the servers")
    arguments = parser.parse_args(argv)
    parts = arguments.only.split(",")
    missing = [tool for tool, found in (("nginx", nginx_binary()), ("wrk", wrk_binary()),
                                        ("hey", shutil.which("hey"))) if not found]
    if missing:
        print(f"missing {', '.join(missing)}: run bash benchmarks/overhead/setup.sh "
              "--debian-only", file=sys.stderr)
        return 2
    print(method(arguments))
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="switchgear-bench-") as directory:
        work = Path(directory)
        if "ceiling" in parts:
            results.append(ceiling(arguments, work))
        if "agreement" in parts:
            results.append(agreement(arguments, work))
    print(f"Took {time.monotonic() - started:.0f} s; load average {load_average()} at the end.")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
