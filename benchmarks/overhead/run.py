"""Measure the gateway's own overhead against LiteLLM's proxy and Portkey's gateway.

Run ``bash benchmarks/overhead/setup.sh`` once, then ``.venv/bin/python benchmarks/overhead/run.py``.
Every target is put in front of the same zero-latency nginx upstream and loaded by wrk; the table
shows requests/s, p50/p99 latency and the p50 each gateway adds over the upstream, then the
targets' checks, issue 28's goals against the featureless Python proxy (proxy.py) of the same
run, and, when asked, a CPU profile per pipeline stage (--profile) and RSS over a long run
(--rss-requests). The harness is stdlib only; the proxy runs on the venv's uvicorn and aiohttp.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from cpu_profile import profile_row
from gateways import (
    DirectUpstream,
    InboundAPI,
    Launch,
    LiteLLMProxy,
    PortkeyGateway,
    PythonProxy,
    SwitchgearGateway,
    Target,
    running,
)
from load import LoadResult, WrkLoad, wrk_binary, wrk_version
from processes import (
    BenchmarkError,
    ServiceProcess,
    free_port,
    stop_everything_on_sigterm,
    wait_until_answers,
)
from report import (
    CACHE_HIT,
    FULL,
    FULL_STREAM,
    GUARDED,
    MESSAGES,
    PROXY,
    PROXY_STREAM,
    RECORDS,
    REDIS_CACHE_HIT,
    RESPONSES,
    STREAM_BASELINE,
    SWITCHGEAR_STREAM,
    Measurement,
    Method,
    Round,
    TargetOutcome,
    api_checks,
    cache_checks,
    chat_levels,
    goal_checks,
    goal_levels,
    problems,
    table,
    target_checks,
    write_json,
)
from rss import rss_run
from upstream import NginxUpstream, completion_json, stream_body

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


SWITCHGEAR_COMMAND = REPO / ".venv" / "bin" / "switchgear"
RSS_CONCURRENCY = 16


def full_path(name: str, streamed: bool) -> SwitchgearGateway:
    """Switchgear with every feature a deployment turns on (issue 28's full path): the
    switchgear row's key auth, per-key rate limits and daily budget, tiers gate and request
    records and metrics, plus GUARDS (PII redacted in and out, the injection heuristic, size
    limits, empty answers flagged); the in-process cache is on, but the requests carry no
    temperature 0 and no seed, which the default ``cacheable: deterministic`` asks for, so for
    each one the Cache stage reads its rule, marks it "bypass" (x-switchgear-cache) and passes it
    on to the upstream: no key is hashed, nothing is looked up or stored."""
    return SwitchgearGateway(SWITCHGEAR_COMMAND, name=name, extra=GUARDS, streamed=streamed)


def all_targets() -> list[Target]:
    """Every target, in the order they are measured; the upstreams first (the baselines), then
    the featureless proxy (the Python limit)."""
    return [
        DirectUpstream(),
        DirectUpstream(STREAM_BASELINE, streamed=True),
        PythonProxy(REPO / ".venv" / "bin" / "python", PROXY),
        PythonProxy(REPO / ".venv" / "bin" / "python", PROXY_STREAM, streamed=True),
        PythonProxy(REPO / ".venv" / "bin" / "python", "proxy-aiohttp-server", server="aiohttp"),
        PythonProxy(REPO / ".venv" / "bin" / "python", "proxy-granian-server", server="granian"),
        PythonProxy(REPO / ".venv" / "bin" / "python", "proxy-httpx-client", client="httpx"),
        PythonProxy(REPO / ".venv" / "bin" / "python", "proxy-switchgear-client",
                    client="switchgear"),
        PythonProxy(REPO / ".venv" / "bin" / "python", "proxy-switchgear-client-stream",
                    streamed=True, client="switchgear"),
        SwitchgearGateway(SWITCHGEAR_COMMAND, name=RECORDS, admission=False),
        SwitchgearGateway(SWITCHGEAR_COMMAND),
        SwitchgearGateway(SWITCHGEAR_COMMAND, name=SWITCHGEAR_STREAM, streamed=True),
        full_path(FULL, streamed=False),
        full_path(FULL_STREAM, streamed=True),
        SwitchgearGateway(SWITCHGEAR_COMMAND, name=CACHE_HIT, fields={"temperature": 0}),
        SwitchgearGateway(SWITCHGEAR_COMMAND, name=REDIS_CACHE_HIT, redis_cache=True,
                          fields={"temperature": 0}),
        SwitchgearGateway(SWITCHGEAR_COMMAND, name=GUARDED, extra=GUARDS),
        SwitchgearGateway(SWITCHGEAR_COMMAND, name=MESSAGES, api=MESSAGES_API),
        SwitchgearGateway(SWITCHGEAR_COMMAND, name=RESPONSES, api=RESPONSES_API),
        LiteLLMProxy(WORK / "litellm-venv"),
        PortkeyGateway(WORK / "portkey" / "node_modules" / "@portkey-ai" / "gateway"),
    ]


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def switchgear_rows() -> dict[str, SwitchgearGateway]:
    """The Switchgear targets by name: what --profile and --rss-row may name."""
    return {t.name: t for t in all_targets() if isinstance(t, SwitchgearGateway)}


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    names = [target.name for target in all_targets()]
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=lambda s: [n.strip() for n in s.split(",") if n.strip()],
                        default=names, help=f"comma-separated subset of {','.join(names)}"
                        " ('' for none: only --profile or --rss-requests)")
    parser.add_argument("--seconds", type=int, default=10, help="measured run length (default 10)")
    parser.add_argument("--warmup-seconds", type=int, default=3,
                        help="warm-up run length before each measured run (default 3)")
    parser.add_argument("--concurrency", type=_int_list, default=[1, 16, 64],
                        help="comma-separated connection counts (default 1,16,64)")
    parser.add_argument("--load-core", type=int, default=0,
                        help="core for nginx and wrk (default 0)")
    parser.add_argument("--goal-rounds", type=int, default=3,
                        help="rounds at each level issue 28 sets a goal at, judged on the median"
                        " (default 3)")
    parser.add_argument("--load-threads", type=int, default=2,
                        help="wrk threads at most (default 2; fewer than the connections)")
    parser.add_argument("--gateway-core", type=int, default=1,
                        help="core for the gateway under test (default 1)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"results file ({RESULTS})")
    parser.add_argument("--profile", nargs="?", const=FULL, default=None, metavar="ROW",
                        choices=sorted(switchgear_rows()),
                        help=f"after the table, CPU per request per pipeline stage of a"
                        f" Switchgear row under cProfile (default row {FULL})")
    parser.add_argument("--profile-seconds", type=int, default=5,
                        help="length of the profiled run and of the unprofiled one before it"
                        " (default 5)")
    parser.add_argument("--profile-concurrency", type=int, default=16,
                        help="connections in the profiled runs (default 16)")
    parser.add_argument("--rss-requests", type=int, default=0, metavar="N",
                        help="after the table, RSS of --rss-row over N requests at concurrency"
                        f" {RSS_CONCURRENCY} (issue 28: 1000000; default 0: off)")
    parser.add_argument("--rss-row", default=FULL, choices=sorted(switchgear_rows()),
                        help=f"the row --rss-requests loads (default {FULL})")
    arguments = parser.parse_args(argv)
    unknown = sorted(set(arguments.only) - set(names))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {names}")
    if min(arguments.seconds, arguments.warmup_seconds, arguments.profile_seconds,
           arguments.profile_concurrency, arguments.goal_rounds) < 1:
        parser.error("--seconds, --warmup-seconds, --profile-seconds, --profile-concurrency and"
                     " --goal-rounds must be at least 1")
    if arguments.rss_requests < 0:
        parser.error("--rss-requests must not be negative")
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
    """Measures one target: start it, check it answers 200, warm-up + measured run per level;
    at a level of a goal or an API check (``levels``: each with the row it is compared with,
    or None) the run is repeated ``--goal-rounds`` times, each after a run of that row's
    partner (a second process of it, kept up for the whole run: ``partners`` by row)."""

    def __init__(self, load: WrkLoad, upstream: NginxUpstream, arguments: argparse.Namespace,
                 partners: dict[str, tuple[str, Launch]] | None = None,
                 levels: dict[tuple[str, int], str | None] | None = None):
        self.load = load
        self.upstream = upstream
        self.arguments = arguments
        self.partners = partners or {}
        self.levels = levels or {}

    def measure(self, target: Target) -> TargetOutcome:
        """The outcome for ``target``; its process is stopped before this returns."""
        outcome = TargetOutcome(name=target.name)
        reason = target.missing()
        if reason is not None:
            outcome.status, outcome.reason = "skipped", reason
            say(f"[{target.name}] skipped: {reason}")
            return outcome
        outcome.version = target.version()
        say(f"[{target.name}] {outcome.version}: starting")
        try:
            with running(target, self.upstream, self.arguments.gateway_core, WORK, REQUEST_BODY,
                         say) as answering:
                say(f"[{target.name}] answers 200 after {answering.seconds_to_answer:.1f} s:"
                    f" {answering.answer.body[:120].decode('utf-8', errors='replace')}")
                for concurrency in self.arguments.concurrency:
                    outcome.measurements.append(
                        self._measure_level(target.name, answering.launch, concurrency))
        except BenchmarkError as error:
            outcome.status, outcome.reason = "failed", str(error)
            say(f"[{target.name}] FAILED: {error}")
        return outcome

    def _measure_level(self, name: str, launch: Launch, concurrency: int) -> Measurement:
        if (name, concurrency) not in self.levels:
            return self._run_level(name, launch, concurrency)
        compared_with = self.levels[(name, concurrency)]
        beside = None if compared_with is None else self.partners.get(compared_with)
        runs, rounds = [], []
        for number in range(1, self.arguments.goal_rounds + 1):
            say(f"[{name}] concurrency {concurrency}: round {number} of"
                f" {self.arguments.goal_rounds}")
            base = None if beside is None else self._run_level(*beside, concurrency)
            runs.append(self._run_level(name, launch, concurrency))
            rounds.append(Round.of(runs[-1], base))
        return replace(runs[0], rounds=tuple(rounds))

    def _run_level(self, name: str, launch: Launch, concurrency: int) -> Measurement:
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


@dataclass
class Findings:
    """What a run found: each target's outcome, and the lines and problems of the profile and
    the RSS run (when asked for)."""

    outcomes: list[TargetOutcome]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def run_benchmark(arguments: argparse.Namespace, targets: Sequence[Target]) -> Findings:
    """Start the upstream, measure each target in turn, then profile and the RSS run when
    asked; stop everything."""
    if wrk_binary() is None:
        raise BenchmarkError("wrk is not installed: run benchmarks/overhead/setup.sh")
    WORK.mkdir(parents=True, exist_ok=True)
    upstream = NginxUpstream(WORK / "nginx", free_port(), arguments.load_core)
    nginx: ServiceProcess = upstream.process()
    with nginx:
        probe = json.dumps(upstream.endpoint().body(REQUEST_BODY)).encode()
        wait_until_answers(upstream.endpoint(), probe, nginx, timeout_s=10.0)
        say(f"[nginx] upstream answering on {upstream.base_url} (core {arguments.load_core})")
        load = WrkLoad(WORK, arguments.load_core, REQUEST_BODY, arguments.load_threads)
        levels = {**chat_levels([target.name for target in targets], arguments.concurrency),
                  **goal_levels()}
        with ExitStack() as partners_running:
            runner = TargetRun(load, upstream, arguments,
                               _partners(targets, upstream, arguments, partners_running, levels),
                               levels)
            findings = Findings([runner.measure(target) for target in targets])
        for name, job in (("profile", _profile), ("RSS run", _rss)):
            try:
                findings.notes += job(arguments, upstream, load)
            except BenchmarkError as error:
                findings.problems.append(f"{name}: {error}")
                say(f"[{name}] FAILED: {error}")
        return findings


def _partners(targets: Sequence[Target], upstream: NginxUpstream, arguments: argparse.Namespace,
              stack: ExitStack, levels: dict[tuple[str, int], str | None]
              ) -> dict[str, tuple[str, Launch]]:
    """A second process of each row that ``levels`` compare others with (the proxy, the chat
    path), started in ``stack`` to be measured beside them, by row; only rows selected, and
    compared with a row selected."""
    selected = {target.name: target for target in targets}
    partners: dict[str, tuple[str, Launch]] = {}
    for (row, _), base in levels.items():
        if base in selected and row in selected and base not in partners:
            say(f"[{base}] a second one, kept up to be measured beside the rows compared with it")
            started = stack.enter_context(running(selected[base], upstream, arguments.gateway_core,
                                                  WORK / "beside" / base, REQUEST_BODY, say))
            partners[base] = f"{base} (beside)", started.launch
    return partners


def _profile(arguments: argparse.Namespace, upstream: NginxUpstream, load: WrkLoad) -> list[str]:
    """The --profile table (none when not asked)."""
    if arguments.profile is None:
        return []
    profile = profile_row(switchgear_rows()[arguments.profile], upstream, load,
                          arguments.gateway_core, WORK, REQUEST_BODY,
                          arguments.profile_concurrency, arguments.profile_seconds, say)
    return profile.lines()


def _rss(arguments: argparse.Namespace, upstream: NginxUpstream, load: WrkLoad) -> list[str]:
    """The --rss-requests result (none when not asked)."""
    if not arguments.rss_requests:
        return []
    target = switchgear_rows()[arguments.rss_row]
    say(f"[rss] {target.name}: {arguments.rss_requests:,} requests at concurrency"
        f" {RSS_CONCURRENCY}")
    with running(target, upstream, arguments.gateway_core, WORK, REQUEST_BODY, say) as answering:
        process = answering.launch.process
        assert process is not None
        found = rss_run(target.name, answering.launch.endpoint, process, load,
                        arguments.rss_requests, RSS_CONCURRENCY, say)
    if found.errors:
        raise BenchmarkError(f"{found.errors} errors in the RSS run")
    return found.lines()


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
        load_threads=arguments.load_threads,
        goal_rounds=arguments.goal_rounds,
        gateway_core=arguments.gateway_core,
        seconds=arguments.seconds,
        warmup_seconds=arguments.warmup_seconds,
        concurrencies=list(arguments.concurrency),
        request_body=json.dumps(request),
        response_body=completion_json(),
        stream_body=stream_body(),
        tools=list(dict.fromkeys(
            [wrk_version(), *(t.version() for t in targets if t.missing() is None)])),
        load_average_before=load_before,
        load_average_after=load_average(),
    )


def main(argv: Sequence[str] | None = None, announce: Callable[[str], None] = say) -> int:
    """Run the benchmark; 0 when every selected target was measured without errors."""
    arguments = parse_arguments(argv)
    stop_everything_on_sigterm()
    targets = [t for t in all_targets() if t.name in arguments.only]
    load_before = load_average()
    if _busy(load_before):
        announce(f"WARNING: load average {load_before} (other work on this machine): the"
                 " figures will be noisy; a quiet machine gives reproducible ones")
    try:
        findings = run_benchmark(arguments, targets)
    except BenchmarkError as error:
        announce(f"benchmark failed: {error}")
        return 1
    outcomes = findings.outcomes
    method = method_of(arguments, targets, load_before)
    announce("")
    if outcomes:
        announce(table(outcomes))
        announce("")
    for line in [*target_checks(outcomes), *cache_checks(outcomes), *api_checks(outcomes),
                 *goal_checks(outcomes)]:
        announce(line)
    if findings.notes:
        announce("")
    for line in findings.notes:
        announce(line)
    found = [*problems(outcomes), *findings.problems]
    for line in found:
        announce(f"PROBLEM: {line}")
    announce("")
    announce(method.paragraph())
    write_json(arguments.json, outcomes, method, findings.notes)
    announce(f"\nResults written to {arguments.json}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
