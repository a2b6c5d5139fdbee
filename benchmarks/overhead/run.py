"""Measure the gateway's own overhead against LiteLLM's proxy and Portkey's gateway.

Run ``bash benchmarks/overhead/setup.sh`` once, then ``.venv/bin/python benchmarks/overhead/run.py``.
Every target is put in front of the same zero-latency nginx upstream and loaded by wrk; the table
shows requests/s, p50/p99 latency and the p50 each gateway adds over the upstream. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gateways import (
    DirectUpstream,
    InboundAPI,
    Launch,
    LiteLLMProxy,
    PortkeyGateway,
    SwitchgearGateway,
    Target,
)
from load import LoadResult, WrkLoad, wrk_binary, wrk_version
from processes import BenchmarkError, ServiceProcess, free_port, wait_until_answers
from report import (
    CACHE_HIT,
    GUARDED,
    MESSAGES,
    REDIS_CACHE_HIT,
    RESPONSES,
    Measurement,
    Method,
    TargetOutcome,
    api_checks,
    cache_checks,
    problems,
    table,
    target_checks,
    write_json,
)
from upstream import NginxUpstream, completion_json

from switchgear.capacity.machine import cpu_model

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORK = HERE / ".work"
RESULTS = WORK / "results" / "latest.json"
BUSY_LOAD_AVERAGE = 0.5

#: Guards for the guarded row: PII redaction both ways, the injection heuristic, size limits and
#: empty answers flagged.
GUARDS = (
    "guards:\n"
    "  input: [{check: pii, action: redact}, {check: injection, action: flag},\n"
    "          {check: size, max_chars: 20000, max_messages: 50, action: block}]\n"
    "  output: [{check: pii, action: redact}, {check: empty, action: flag}]\n"
)

REQUEST_BODY: dict[str, object] = {
    "model": "(set per target)",
    "messages": [{"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 16,
    "stream": False,
}
#: The same conversation through Anthropic's Messages API (the key in x-api-key, as Claude Code
#: and the anthropic SDKs send it) and OpenAI's Responses API (stored, the API's default, so
#: each request also keeps its response for previous_response_id); Switchgear asks the upstream
#: the same chat request.
MESSAGES_API = InboundAPI("/v1/messages", REQUEST_BODY, key_header="x-api-key",
                          headers={"anthropic-version": "2023-06-01"})
RESPONSES_API = InboundAPI("/v1/responses", {
    "model": "(set per target)", "input": "Say hello in five words.", "max_output_tokens": 16,
    "stream": False})


def all_targets() -> list[Target]:
    """Every target, in the order they are measured; the upstream first (it is the baseline)."""
    return [
        DirectUpstream(),
        SwitchgearGateway(REPO / ".venv" / "bin" / "switchgear"),
        SwitchgearGateway(REPO / ".venv" / "bin" / "switchgear", name=CACHE_HIT,
                          fields={"temperature": 0}),
        SwitchgearGateway(REPO / ".venv" / "bin" / "switchgear", name=REDIS_CACHE_HIT,
                          extra='cache: {url: "redis://127.0.0.1:6379/0", prefix: "sgbench:"}\n',
                          fields={"temperature": 0}),
        SwitchgearGateway(REPO / ".venv" / "bin" / "switchgear", name=GUARDED, extra=GUARDS),
        SwitchgearGateway(REPO / ".venv" / "bin" / "switchgear", name=MESSAGES, api=MESSAGES_API),
        SwitchgearGateway(REPO / ".venv" / "bin" / "switchgear", name=RESPONSES,
                          api=RESPONSES_API),
        LiteLLMProxy(WORK / "litellm-venv"),
        PortkeyGateway(WORK / "portkey" / "node_modules" / "@portkey-ai" / "gateway"),
    ]


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    names = [target.name for target in all_targets()]
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=lambda s: [n.strip() for n in s.split(",") if n.strip()],
                        default=names, help=f"comma-separated subset of {','.join(names)}")
    parser.add_argument("--seconds", type=int, default=10, help="measured run length (default 10)")
    parser.add_argument("--warmup-seconds", type=int, default=3,
                        help="warm-up run length before each measured run (default 3)")
    parser.add_argument("--concurrency", type=_int_list, default=[1, 16, 64],
                        help="comma-separated connection counts (default 1,16,64)")
    parser.add_argument("--load-core", type=int, default=0,
                        help="core for nginx and wrk (default 0)")
    parser.add_argument("--gateway-core", type=int, default=1,
                        help="core for the gateway under test (default 1)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"results file ({RESULTS})")
    arguments = parser.parse_args(argv)
    unknown = sorted(set(arguments.only) - set(names))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {names}")
    if arguments.seconds < 1 or arguments.warmup_seconds < 1:
        parser.error("--seconds and --warmup-seconds must be at least 1")
    usable = os.sched_getaffinity(0)
    if arguments.load_core not in usable or arguments.gateway_core not in usable:
        parser.error(f"cores {arguments.load_core} and {arguments.gateway_core} must be among the"
                     f" usable cores {sorted(usable)}")
    return arguments


def load_average() -> str:
    """The 1, 5 and 15 minute load averages from /proc/loadavg."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _busy(load: str) -> bool:
    try:
        return float(load.split()[0]) > BUSY_LOAD_AVERAGE
    except (ValueError, IndexError):
        return False


def say(message: str) -> None:
    """Progress, printed at once."""
    print(message, flush=True)


def _describe(result: LoadResult) -> str:
    return (f"{result.requests_per_s:,.0f} req/s, p50 {result.p50_ms:.3f} ms,"
            f" p99 {result.p99_ms:.3f} ms, {result.errors} errors")


class TargetRun:
    """Measures one target: start it, check it answers 200, warm-up + measured run per level."""

    def __init__(self, load: WrkLoad, upstream: NginxUpstream, arguments: argparse.Namespace):
        self.load = load
        self.upstream = upstream
        self.arguments = arguments

    def measure(self, target: Target) -> TargetOutcome:
        """The outcome for ``target``; its process is stopped before this returns."""
        outcome = TargetOutcome(name=target.name)
        reason = target.missing()
        if reason is not None:
            outcome.status, outcome.reason = "skipped", reason
            say(f"[{target.name}] skipped: {reason}")
            return outcome
        outcome.version = target.version()
        launch = target.launch(self.upstream, free_port(), self.arguments.gateway_core, WORK)
        say(f"[{target.name}] {outcome.version}: starting")
        try:
            if launch.process is not None:
                launch.process.start()
            body = json.dumps(launch.endpoint.body(REQUEST_BODY)).encode()
            started = time.monotonic()
            answer = wait_until_answers(launch.endpoint, body, launch.process,
                                        target.startup_timeout_s)
            say(f"[{target.name}] answers 200 after {time.monotonic() - started:.1f} s:"
                f" {answer.body[:120].decode('utf-8', errors='replace')}")
            for concurrency in self.arguments.concurrency:
                outcome.measurements.append(self._measure_level(target.name, launch, concurrency))
        except BenchmarkError as error:
            outcome.status, outcome.reason = "failed", str(error)
            say(f"[{target.name}] FAILED: {error}")
        finally:
            if launch.process is not None:
                say(f"[{target.name}] stopping")
                launch.process.stop()
        return outcome

    def _measure_level(self, name: str, launch: Launch, concurrency: int) -> Measurement:
        endpoint, process = launch.endpoint, launch.process
        say(f"[{name}] concurrency {concurrency}: warm-up {self.arguments.warmup_seconds} s")
        warmup = self.load.run(endpoint, concurrency, self.arguments.warmup_seconds)
        if warmup.errors:
            say(f"[{name}] WARNING: {warmup.non_2xx} non-2xx answers and"
                f" {warmup.socket_errors} socket errors in the warm-up")
        say(f"[{name}] concurrency {concurrency}: measuring {self.arguments.seconds} s")
        cpu_before = process.cpu_seconds() if process else 0.0
        measured = self.load.run(endpoint, concurrency, self.arguments.seconds)
        cpu_ms_per_request = (
            (process.cpu_seconds() - cpu_before) * 1000.0 / max(measured.requests, 1)
            if process
            else None
        )
        say(f"[{name}] concurrency {concurrency}: {_describe(measured)}")
        return Measurement(name, concurrency, warmup, measured, cpu_ms_per_request)


def run_benchmark(arguments: argparse.Namespace, targets: Sequence[Target]) -> list[TargetOutcome]:
    """Start the upstream, measure each target in turn, stop everything."""
    if wrk_binary() is None:
        raise BenchmarkError("wrk is not installed: run benchmarks/overhead/setup.sh")
    WORK.mkdir(parents=True, exist_ok=True)
    upstream = NginxUpstream(WORK / "nginx", free_port(), arguments.load_core)
    nginx: ServiceProcess = upstream.process()
    with nginx:
        probe = json.dumps(upstream.endpoint().body(REQUEST_BODY)).encode()
        wait_until_answers(upstream.endpoint(), probe, nginx, timeout_s=10.0)
        say(f"[nginx] upstream answering on {upstream.base_url} (core {arguments.load_core})")
        load = WrkLoad(WORK, arguments.load_core, REQUEST_BODY)
        runner = TargetRun(load, upstream, arguments)
        return [runner.measure(target) for target in targets]


def method_of(
    arguments: argparse.Namespace, targets: Sequence[Target], load_before: str
) -> Method:
    """The method paragraph's facts for this run."""
    request = dict(REQUEST_BODY)
    request.pop("model")
    return Method(
        cpu_count=len(os.sched_getaffinity(0)),
        cpu_model=cpu_model(),
        load_core=arguments.load_core,
        gateway_core=arguments.gateway_core,
        seconds=arguments.seconds,
        warmup_seconds=arguments.warmup_seconds,
        concurrencies=list(arguments.concurrency),
        request_body=json.dumps(request),
        response_body=completion_json(),
        tools=[wrk_version(), *(t.version() for t in targets if t.missing() is None)],
        load_average_before=load_before,
        load_average_after=load_average(),
    )


def main(argv: Sequence[str] | None = None, announce: Callable[[str], None] = say) -> int:
    """Run the benchmark; 0 when every selected target was measured without errors."""
    arguments = parse_arguments(argv)
    # SIGTERM unwinds like Ctrl-C, so every server started so far is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    targets = [t for t in all_targets() if t.name in arguments.only]
    load_before = load_average()
    if _busy(load_before):
        announce(f"WARNING: load average {load_before} (other work on this machine): the"
                 " figures will be noisy; a quiet machine gives reproducible ones")
    try:
        outcomes = run_benchmark(arguments, targets)
    except BenchmarkError as error:
        announce(f"benchmark failed: {error}")
        return 1
    method = method_of(arguments, targets, load_before)
    announce("")
    announce(table(outcomes))
    announce("")
    for line in [*target_checks(outcomes), *cache_checks(outcomes), *api_checks(outcomes)]:
        announce(line)
    found = problems(outcomes)
    for line in found:
        announce(f"PROBLEM: {line}")
    announce("")
    announce(method.paragraph())
    write_json(arguments.json, outcomes, method)
    announce(f"\nResults written to {arguments.json}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
