"""``switchgear bench`` against wrk and hey, in one interleaved run at three targets.

Run ``.venv/bin/python benchmarks/bench/run.py`` (needs nginx, wrk and hey from Debian:
``bash benchmarks/overhead/setup.sh --debian-only``). About seven minutes with the defaults
(5 rounds of 8 s: through the gateway, 3 rounds of 6 s left p99 too noisy to judge 5%, as wrk
and hey themselves differed by 48% there).

Targets, each on the server core (the load tools on the other):
  zero-latency  nginx answering every chat completion at once (benchmarks/overhead/upstream.py):
                the client is the bottleneck, and bench must say so (its saturation mark).
  50 ms         ``switchgear simulate`` answering every request after 50 ms (TTFT 50 ms, one
                token, no slowdown under load): latency-bound, the client mostly waits.
  gateway       ``switchgear serve`` (the full path of benchmarks/overhead) in front of nginx.
For each target, after an unmeasured wrk warm-up of the server, ``--rounds`` rounds; in each,
wrk, hey and bench run one after another for the same seconds at the same concurrency (16; 64 at
zero latency, where 16 connections leave any client idle between round trips) with the same
body, the order rotated every round so drift in the machine hits every tool alike. Printed per
target: each tool's req/s, p50/p90/p99 and CPU per request (medians over the rounds), bench's
ratios to wrk and to hey (the median of each round's ratio), wrk against hey for scale, bench's
saturation mark and its reasons, and whether bench is within 5% of wrk or hey on each figure
where it did not mark itself saturated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "benchmarks" / "overhead"))

from gateways import SwitchgearGateway  # noqa: E402
from load import WrkLoad, wrk_binary, wrk_version  # noqa: E402
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

from switchgear.capacity.bench.monitor import LAG_PROBE_INTERVAL_S, ClientMonitor  # noqa: E402
from switchgear.capacity.machine import commit, cpu_model, load_average  # noqa: E402

AGREEMENT_TARGET = 0.05
PROMPT = "Say hello to the benchmark in a few words."
TOOLS = ("wrk", "hey", "bench")
FIGURES = ("req/s", "p50", "p90", "p99")
ZERO, FIFTY, GATEWAY = "zero-latency", "50 ms", "gateway"
FIFTY_MS = 50.0
_HEY_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_HEY_PERCENTILE = re.compile(r"(\d+)%+ in ([\d.]+) secs")
_HEY_STATUS = re.compile(r"\[(\d+)\]\s+(\d+) responses")
_HEY_ERROR = re.compile(r"^\s*\[(\d+)\]", re.MULTILINE)


@dataclass(frozen=True)
class Figures:
    """One tool's run: requests/s, latency percentiles (ms), errors, CPU seconds per request of
    its whole process, and (bench only) its ``client`` object."""

    tool: str
    rate: float
    p50: float
    p90: float
    p99: float
    errors: int = 0
    cpu_per_request_s: float | None = None
    client: dict[str, Any] | None = None

    def values(self) -> list[float]:
        """req/s, p50, p90, p99 in the order of ``FIGURES``."""
        return [self.rate, self.p50, self.p90, self.p99]

    def ratios(self, other: Figures) -> list[float]:
        """This tool's figures over ``other``'s: req/s, p50, p90, p99."""
        return [mine / theirs for mine, theirs in zip(self.values(), other.values(), strict=True)]

    def differences(self, other: Figures) -> list[float]:
        """This tool's relative differences from ``other``: req/s, p50, p90, p99."""
        return [ratio - 1 for ratio in self.ratios(other)]


@dataclass(frozen=True)
class Running:
    """A started target: its base URL, the model to ask for, the bearer key."""

    base_url: str
    model: str
    api_key: str

    @property
    def endpoint(self) -> Endpoint:
        """Its chat completions endpoint with the headers every tool sends."""
        return Endpoint(f"{self.base_url}/chat/completions", self.model,
                        {"Content-Type": "application/json",
                         "Authorization": f"Bearer {self.api_key}"})

    def body(self) -> dict[str, object]:
        """The one request body every tool sends (bench encodes the same keys, in order)."""
        return {"model": self.model, "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": 1}


@dataclass
class TargetResult:
    """Every round's figures at one target, by tool."""

    name: str
    runs: dict[str, list[Figures]] = field(default_factory=lambda: {tool: [] for tool in TOOLS})


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(running: Running, concurrency: int, seconds: float, core: int,
            work: Path) -> Figures:
    """wrk, closed loop at ``concurrency`` for ``seconds``."""
    before = _child_cpu()
    result = WrkLoad(work, core, running.body()).run(running.endpoint, concurrency,
                                                     max(1, round(seconds)))
    cpu = _child_cpu() - before
    return Figures("wrk", result.requests_per_s, result.percentiles_ms[50.0],
                   result.percentiles_ms[90.0], result.percentiles_ms[99.0], result.errors,
                   cpu / max(1, result.requests))


def run_hey(running: Running, concurrency: int, seconds: float, core: int,
            work: Path) -> Figures:
    """hey, closed loop at ``concurrency`` for ``seconds``."""
    body_path = work / "body.json"
    body_path.write_text(json.dumps(running.body(), separators=(",", ":")))
    argv = ["hey", "-c", str(concurrency), "-z", f"{seconds:g}s", "-m", "POST", "-T",
            "application/json", "-H", f"Authorization: Bearer {running.api_key}",
            "-D", str(body_path), "-t", "30", running.endpoint.url]
    before = _child_cpu()
    out = subprocess.run(pinned(argv, core), capture_output=True, text=True, check=True,
                         timeout=seconds + 60).stdout
    cpu = _child_cpu() - before
    return parse_hey(out, cpu)


def parse_hey(out: str, cpu_s: float) -> Figures:
    """hey's summary as Figures (its CPU seconds given)."""
    rate = _HEY_RATE.search(out)
    percentiles = {int(p): float(v) * 1000 for p, v in _HEY_PERCENTILE.findall(out)}
    if rate is None or not {50, 90, 99} <= percentiles.keys():
        raise BenchmarkError(f"cannot read hey's output (p99 needs 100 answers):\n{out}")
    statuses = {int(status): int(count) for status, count in _HEY_STATUS.findall(out)}
    answered = sum(statuses.values())
    _, _, failures = out.partition("Error distribution:")
    errors = answered - statuses.get(200, 0) + sum(
        int(count) for count in _HEY_ERROR.findall(failures))
    return Figures("hey", float(rate.group(1)), percentiles[50], percentiles[90],
                   percentiles[99], errors, cpu_s / max(1, answered))


def run_bench(running: Running, concurrency: int, seconds: float, core: int,
              work: Path) -> Figures:
    """``switchgear bench`` in its own process pinned to ``core``, closed loop, no warm-up (as
    wrk and hey have none); CPU per request of the whole process, start-up included."""
    prompts = work / "prompts.jsonl"
    body = running.body()
    prompts.write_text(json.dumps({"messages": body["messages"],
                                   "max_tokens": body["max_tokens"]}) + "\n")
    profile_path = work / "profile.json"
    argv = [sys.executable, "-m", "switchgear", "bench", "--url", running.base_url, "--model",
            running.model, "--api-key", running.api_key, "--no-stream", "--jsonl", str(prompts),
            "-c", str(concurrency), "--duration", f"{seconds:g}", "--warmup", "0",
            "--json", str(profile_path)]
    before = _child_cpu()
    done = subprocess.run(pinned(argv, core), capture_output=True, text=True, check=False,
                          timeout=seconds + 120)
    cpu = _child_cpu() - before
    if done.returncode != 0:
        raise BenchmarkError(f"switchgear bench failed:\n{done.stderr}{done.stdout}")
    level = json.loads(profile_path.read_text())["levels"][0]
    e2e = level["latency_s"]["e2e"]
    return Figures("bench", float(level["request_rate"]), e2e["p50"] * 1000, e2e["p90"] * 1000,
                   e2e["p99"] * 1000, int(level["sent"]) - int(level["completed"]),
                   cpu / max(1, int(level["sent"])), level.get("client"))


RUNNERS: dict[str, Callable[[Running, int, float, int, Path], Figures]] = {
    "wrk": run_wrk, "hey": run_hey, "bench": run_bench}


def rotated(round_index: int) -> list[str]:
    """The tools' order in round ``round_index``: wrk, hey, bench rotated by one each round."""
    shift = round_index % len(TOOLS)
    return [*TOOLS[shift:], *TOOLS[:shift]]


@contextlib.contextmanager
def started(name: str, arguments: argparse.Namespace, work: Path) -> Iterator[Running]:
    """Start target ``name`` pinned to the server core; stop it (and its upstream) after."""
    core = arguments.server_core
    with contextlib.ExitStack() as stack:
        if name == FIFTY:
            port = free_port()
            simulator = ServiceProcess("simulator", pinned(
                [sys.executable, "-m", "switchgear", "simulate", "--port", str(port),
                 "--slots", "4096", "--ttft-ms", f"{FIFTY_MS:g}", "--tpot-ms", "0",
                 "--load-factor", "0", "--seed", "1"], core), work / "simulator.log")
            running = Running(f"http://127.0.0.1:{port}/v1", "sim", "x")
            stack.enter_context(simulator)
            wait_until_answers(running.endpoint, _encoded(running), simulator, 30)
            yield running
            return
        nginx = NginxUpstream(work / "nginx", free_port(), core)
        process = stack.enter_context(nginx.process())
        direct = Running(nginx.base_url, UPSTREAM_MODEL, "x")
        wait_until_answers(direct.endpoint, _encoded(direct), process, 10)
        if name == ZERO:
            yield direct
            return
        launch = SwitchgearGateway(Path(sys.executable).parent / "switchgear").launch(
            nginx, free_port(), core, work)
        assert launch.process is not None
        gateway = stack.enter_context(launch.process)
        key = launch.endpoint.headers["Authorization"].removeprefix("Bearer ")
        running = Running(launch.endpoint.url.removesuffix("/chat/completions"),
                          launch.endpoint.model, key)
        wait_until_answers(running.endpoint, _encoded(running), gateway, 60)
        yield running


def _encoded(running: Running) -> bytes:
    return json.dumps(running.body()).encode()


def concurrency_at(name: str, arguments: argparse.Namespace) -> int:
    """Connections at target ``name``: more at zero latency, where a client with 16 would
    still idle between round trips."""
    return arguments.zero_concurrency if name == ZERO else arguments.concurrency


def measure(name: str, arguments: argparse.Namespace, work: Path) -> TargetResult:
    """Every round at target ``name``, after an unmeasured wrk warm-up of the server."""
    result = TargetResult(name)
    concurrency = concurrency_at(name, arguments)
    with started(name, arguments, work) as running:
        if arguments.warmup_seconds > 0:
            run_wrk(running, concurrency, arguments.warmup_seconds, arguments.load_core, work)
        for round_index in range(arguments.rounds):
            for tool in rotated(round_index):
                figures = RUNNERS[tool](running, concurrency, arguments.seconds,
                                        arguments.load_core, work)
                result.runs[tool].append(figures)
    return result


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def median_figures(runs: Sequence[Figures]) -> Figures:
    """The median of each figure over the rounds."""
    cpus = [run.cpu_per_request_s for run in runs if run.cpu_per_request_s is not None]
    return Figures(runs[0].tool, _median([r.rate for r in runs]), _median([r.p50 for r in runs]),
                   _median([r.p90 for r in runs]), _median([r.p99 for r in runs]),
                   sum(r.errors for r in runs), _median(cpus) if cpus else None)


def median_ratios(ours: Sequence[Figures], theirs: Sequence[Figures]) -> list[float]:
    """The median over the rounds of each round's ratio (same round, nearest in time)."""
    per_round = [mine.ratios(other) for mine, other in zip(ours, theirs, strict=True)]
    return [_median(column) for column in zip(*per_round, strict=True)]


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.1f}"


def report(result: TargetResult) -> tuple[list[str], bool]:
    """The lines printed for one target, and whether its checks passed: at the zero-latency
    target the saturation mark fired in every round; elsewhere, in the rounds where bench was
    not saturated, every figure within 5% of wrk or hey."""
    runs = result.runs
    lines = [f"    {'tool':<6} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
             f"{'CPU us/req':>10} errors"]
    for tool in TOOLS:
        m = median_figures(runs[tool])
        lines.append(f"    {tool:<6} {m.rate:>9.1f} {m.p50:>8.3f} {m.p90:>8.3f} {m.p99:>8.3f} "
                     f"{_us(m.cpu_per_request_s):>10} {m.errors}")
    for index in range(len(runs["bench"])):
        lines.append(f"    round {index + 1}: " + " | ".join(
            f"{tool} {f.rate:.0f}/s {f.p50:.2f}/{f.p90:.2f}/{f.p99:.2f} ms"
            for tool in rotated(index) for f in [runs[tool][index]]))
    clients = [run.client or {} for run in runs["bench"]]
    in_level = [c["cpu_per_request_s"] for c in clients if c.get("cpu_per_request_s")]
    lines.append(f"    in the level, bench's CPU per request (event-loop thread, start-up left "
                 f"out): {_us(_median(in_level) if in_level else None)} us; its CPU share "
                 + ", ".join(f"{c.get('cpu_share', 0):.0%}" for c in clients)
                 + "; waiting for a CPU " + ", ".join(
                     f"{c.get('cpu_wait_share', 0):.0%}" for c in clients)
                 + "; loop lag p99 " + ", ".join(
                     f"{(c.get('loop_lag_p99_s') or 0) * 1000:.2f}" for c in clients) + " ms")
    for label, ratios in (("bench/wrk", median_ratios(runs["bench"], runs["wrk"])),
                          ("bench/hey", median_ratios(runs["bench"], runs["hey"])),
                          ("hey/wrk", median_ratios(runs["hey"], runs["wrk"]))):
        lines.append(f"    {label:<10} " + "  ".join(
            f"{name} {ratio:.3f}" for name, ratio in zip(FIGURES, ratios, strict=True)))
    saturated = [bool(c.get("saturated")) for c in clients]
    reasons = sorted({reason for c in clients for reason in c.get("reasons", [])})
    notes = sorted({note for c in clients for note in c.get("notes", [])})
    lines.append(f"    bench's saturation mark: fired in {sum(saturated)} of {len(saturated)} "
                 "rounds" + (": " + " | ".join(reasons) if reasons else ""))
    if notes:
        lines.append("    bench's notes: " + " | ".join(notes))
    if result.name == ZERO:
        fired = all(saturated)
        lines.append(f"    check: the mark fires at the zero-latency target: "
                     f"{'yes' if fired else 'NO'}")
        return lines, fired
    calm = [index for index, flag in enumerate(saturated) if not flag]
    if not calm:
        lines.append("    goal not judged: bench marked itself saturated in every round")
        return lines, True
    ours = [runs["bench"][i] for i in calm]
    verdicts = []
    for name, wrk, hey in zip(FIGURES, median_ratios(ours, [runs["wrk"][i] for i in calm]),
                              median_ratios(ours, [runs["hey"][i] for i in calm]),
                              strict=True):
        within = min(abs(wrk - 1), abs(hey - 1)) <= AGREEMENT_TARGET
        verdicts.append(within)
        lines.append(f"    goal {name}: bench {wrk - 1:+.1%} from wrk, {hey - 1:+.1%} from hey: "
                     f"{'met' if within else 'MISSED'} (within {AGREEMENT_TARGET:.0%} of either)")
    return lines, all(verdicts)


def probe_cost() -> tuple[float, float]:
    """CPU seconds of one lag-probe tick (the monitor's only running cost), measured by ticking
    as fast as the loop allows for half a second, loop overhead included; and the share of a
    core it takes at the monitor's rate."""
    async def tick_flat_out() -> float:
        monitor = ClientMonitor(interval_s=0.0)
        monitor.start()
        await asyncio.sleep(0.5)
        load = monitor.stop()
        return load.cpu_s / max(1, len(load.lags_s))

    per_tick = asyncio.run(tick_flat_out())
    return per_tick, per_tick / LAG_PROBE_INTERVAL_S


def _hey_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True,
                             text=True, check=False, timeout=10).stdout
    except OSError:
        out = ""
    return f"hey {out or '(version unknown)'}"


def method(arguments: argparse.Namespace) -> str:
    """The Method line: machine, versions, pinning, durations, body."""
    return (f"Method: {platform.python_implementation()} {platform.python_version()} on "
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}); "
            f"switchgear at commit {commit(REPO)}; {wrk_version()}, {_hey_version()}, nginx "
            f"from Debian; servers on core {arguments.server_core}, load tools on core "
            f"{arguments.load_core} (taskset), one at a time; {arguments.rounds} rounds per "
            f"target, tool order rotated each round; {arguments.seconds:g} s per run, closed "
            f"loop, {arguments.zero_concurrency} connections at zero latency and "
            f"{arguments.concurrency} elsewhere, each server warmed by "
            f"{arguments.warmup_seconds:g} s of wrk first, no warm-up within a run; the same "
            f"non-streaming body (max_tokens 1); each tool's own latency measurement (hey "
            f"prints 0.1 ms steps); percentiles nearest-rank for bench; medians over rounds; "
            f"CPU per request of each tool's whole process (rusage; bench's includes its "
            f"Python start-up); load average {load_average()} at the start")


def main(argv: Sequence[str] | None = None) -> int:
    """Run every target; 0 when every check passed, 1 otherwise."""
    stop_everything_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=f"{ZERO},{FIFTY},{GATEWAY}",
                        help=f"targets, comma-separated: {ZERO}, {FIFTY}, {GATEWAY}")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per target")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="connections, every tool, at the 50 ms target and the gateway")
    parser.add_argument("--zero-concurrency", type=int, default=64,
                        help="connections, every tool, at the zero-latency target")
    parser.add_argument("--warmup-seconds", type=float, default=2.0,
                        help="unmeasured wrk run against each server before its rounds")
    parser.add_argument("--load-core", type=int, default=1, help="core of the load tools")
    parser.add_argument("--server-core", type=int, default=0, help="core of the servers")
    arguments = parser.parse_args(argv)
    targets = [name.strip() for name in arguments.only.split(",") if name.strip()]
    unknown = [name for name in targets if name not in (ZERO, FIFTY, GATEWAY)]
    if unknown or arguments.rounds < 1 or arguments.seconds <= 0:
        parser.error(f"--only takes {ZERO}, {FIFTY}, {GATEWAY}; --rounds and --seconds must "
                     "be positive")
    missing = [tool for tool, found in (("nginx", nginx_binary()), ("wrk", wrk_binary()),
                                        ("hey", shutil.which("hey"))) if not found]
    if missing:
        print(f"missing {', '.join(missing)}: run bash benchmarks/overhead/setup.sh "
              "--debian-only", file=sys.stderr)
        return 2
    print(method(arguments))
    per_tick, share = probe_cost()
    print(f"bench's self-measurement: one lag-probe tick costs at most {per_tick * 1e6:.1f} us "
          f"of CPU (ticking flat out, loop overhead included); at {1 / LAG_PROBE_INTERVAL_S:g} "
          f"ticks/s that is {share:.2%} of a core; CPU and lateness are read from clocks and "
          "stamps bench keeps anyway")
    started_at = time.monotonic()
    passed = []
    with tempfile.TemporaryDirectory(prefix="switchgear-bench-") as directory:
        for name in targets:
            work = Path(directory) / name.replace(" ", "-")
            work.mkdir()
            print(f"{name}: {DESCRIPTIONS[name]}; {concurrency_at(name, arguments)} connections",
                  flush=True)
            lines, ok = report(measure(name, arguments, work))
            print("\n".join(lines), flush=True)
            passed.append(ok)
    print(f"Took {time.monotonic() - started_at:.0f} s; load average {load_average()} at the "
          "end.")
    return 0 if all(passed) else 1


DESCRIPTIONS = {
    ZERO: "nginx answers at once; the load tool is the bottleneck",
    FIFTY: f"switchgear simulate answers every request after {FIFTY_MS:g} ms",
    GATEWAY: "switchgear serve (full path) in front of nginx, both on the server core",
}


if __name__ == "__main__":
    sys.exit(main())
