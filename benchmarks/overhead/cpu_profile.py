"""Where each microsecond goes: a Switchgear row's server run under cProfile for the measured
requests only, its CPU per request attributed to the pipeline's stages and the parts around them
(HTTP server, the gateway app, JSON, upstream client, records, metrics, other).

The same server answers a run without the profiler first (its CPU per request, from /proc, is
the real figure) and then the profiled run. cProfile's own cost inflates Python calls (many small
ones more than C): the profiled microseconds are shown with their shares, and the shares applied
to the unprofiled CPU per request give an estimate of each part's real cost.
"""

from __future__ import annotations

import os
import pstats
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from gateways import SwitchgearGateway, running
from load import WrkLoad
from processes import BenchmarkError, thread_cpu_seconds
from upstream import NginxUpstream

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "profiled_serve.py"
SIGNAL_WAIT_S = 15.0
#: How many functions the profile lists by their own time.
TOP_FUNCTIONS = 12

Function = tuple[str, int, str]
#: pstats' raw entry for a function: calls, primitive calls, own time, cumulative time and, by
#: caller, that caller's (calls, primitive calls, own time, cumulative time).
Entry = tuple[int, int, float, float, Mapping[Function, tuple[int, int, float, float]]]

HTTP_SERVER = "HTTP server (uvicorn, httptools)"
GATEWAY_APP = "gateway app (switchgear/gateway: body, exchange, answer, SSE)"
RECORDS = "records (Record stage, store writer, ledger, quality)"
METRICS = "metrics (switchgear/telemetry/metrics)"
TRACES = "traces (switchgear/telemetry/tracing)"
UPSTREAM_CLIENT = "upstream client (switchgear/backends)"
JSON = "JSON (orjson, json)"
EVENT_LOOP = "event loop (asyncio's Python parts)"
OTHER = "other (no caller seen)"
RESIDUAL = "not seen by cProfile (uvloop's C loop, sockets) and its timer's gaps"

#: Which part of a request a function is, by where it is defined, first match wins (the stages
#: in request order: pipeline/__init__.py). A function matching none (the standard library,
#: builtins, switchgear's shared modules) is its callers' part, in proportion to the time each
#: call took.
PARTS: tuple[tuple[str, str], ...] = (
    ("switchgear/pipeline/record.py", RECORDS),
    ("switchgear/pipeline/resolve.py", "stage Resolve"),
    ("switchgear/admission/tiers.py", "stage Prioritize (tiers gate)"),
    ("switchgear/pipeline/admit.py", "stage Admit (key, limits, budget)"),
    ("switchgear/admission/", "stage Admit (key, limits, budget)"),
    ("switchgear/pipeline/prompt.py", "stage Prompt"),
    ("switchgear/prompts/", "stage Prompt"),
    ("switchgear/pipeline/guard.py", "stage Guard (input and output)"),
    ("switchgear/guards/", "stage Guard (input and output)"),
    ("switchgear/pipeline/cache.py", "stage Cache"),
    ("switchgear/cache/", "stage Cache"),
    ("switchgear/pipeline/prioritize.py", "stage Prioritize (tiers gate)"),
    ("switchgear/pipeline/route.py", "stage Route"),
    ("switchgear/routing/", "stage Route"),
    ("switchgear/backends/", UPSTREAM_CLIENT),
    ("switchgear/store/", RECORDS),
    ("switchgear/ledger/", RECORDS),
    ("switchgear/quality/", RECORDS),
    ("switchgear/telemetry/tracing", TRACES),
    ("switchgear/telemetry/", METRICS),
    ("prometheus_client/", METRICS),
    ("switchgear/gateway/", GATEWAY_APP),
    ("switchgear/protocols/", GATEWAY_APP),
    ("uvicorn/", HTTP_SERVER),
    ("httptools", HTTP_SERVER),
    ("orjson", JSON),
    ("/json/", JSON),
    ("_json", JSON),
    ("asyncio/", EVENT_LOOP),
    ("uvloop", EVENT_LOOP),
)


def part_of(function: Function) -> str | None:
    """The part ``function`` is by where it is defined, or None when its callers decide."""
    filename, _, name = function
    where = f"{filename}:{name}"
    return next((part for fragment, part in PARTS if fragment in where), None)


def _mix(weights: Mapping[Function, float],
         owners: Callable[[Function], Mapping[str, float]]) -> dict[str, float]:
    """The parts' shares of time spent for ``weights``' callers, each split as ``owners`` says."""
    total = sum(weights.values())
    if total <= 0:
        return {OTHER: 1.0}
    mixed: dict[str, float] = defaultdict(float)
    for caller, weight in weights.items():
        for part, share in owners(caller).items():
            mixed[part] += share * weight / total
    return mixed


def attribute(stats: Mapping[Function, Entry]) -> dict[str, float]:
    """Seconds of own time per part: a function's own time goes to its part, or to its callers'
    parts in proportion to the own time each call took (callers without a part: theirs, in
    proportion to cumulative time, up the call graph)."""
    known: dict[Function, Mapping[str, float]] = {}

    def owners(function: Function, path: frozenset[Function]) -> Mapping[str, float]:
        part = part_of(function)
        if part is not None:
            return {part: 1.0}
        if function not in known:
            callers = stats[function][4] if function in stats else {}
            inner = path | {function}
            known[function] = _mix({c: edge[3] for c, edge in callers.items() if c not in path},
                                   lambda caller: owners(caller, inner))
        return known[function]

    seconds: dict[str, float] = defaultdict(float)
    for function, (_, _, own, _, callers) in stats.items():
        part = part_of(function)
        if part is not None:
            seconds[part] += own
            continue
        shares = _mix({c: edge[2] for c, edge in callers.items()},
                      partial(owners, path=frozenset({function})))
        for name, share in shares.items():
            seconds[name] += own * share
    return dict(seconds)


def _label(function: Function) -> str:
    """``function`` as path:line:name, the path from the package (or '~' for a builtin)."""
    filename, line, name = function
    if not line:
        return name
    for marker in ("site-packages/", "/src/", "/lib/python"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            if marker == "/lib/python":  # the standard library: past "3.11/"
                filename = filename.split("/", 1)[-1]
            break
    return f"{filename}:{line}:{name}"


@dataclass(frozen=True)
class Hotspot:
    """A function among the most expensive by own time: where it is, its part, its own
    seconds and its calls in the profiled run."""

    function: str
    part: str
    own_s: float
    calls: int


def hotspots(stats: Mapping[Function, Entry], count: int = TOP_FUNCTIONS) -> list[Hotspot]:
    """The ``count`` functions with the most own time, most first."""
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:count]
    return [Hotspot(_label(function), part_of(function) or "(its callers')", entry[2], entry[1])
            for function, entry in ranked]


def _order(part: str) -> int:
    """Table order: the parts in PARTS' order (stages in request order), then the rest."""
    names = [HTTP_SERVER, GATEWAY_APP, *(p for _, p in PARTS if p.startswith("stage ")),
             UPSTREAM_CLIENT, RECORDS, METRICS, TRACES, JSON, EVENT_LOOP, OTHER, RESIDUAL]
    ordered = list(dict.fromkeys(names))
    return ordered.index(part) if part in ordered else len(ordered)


@dataclass(frozen=True)
class StageProfile:
    """A profiled run's figures: own seconds per part under cProfile, the requests answered in
    it, and the main thread's and the other threads' CPU seconds (from /proc) in it and in the
    unprofiled run before it."""

    row: str
    concurrency: int
    seconds_by_part: Mapping[str, float]
    requests: int
    main_cpu_s: float
    unprofiled_requests: int
    unprofiled_main_cpu_s: float
    unprofiled_other_cpu_s: float
    top: tuple[Hotspot, ...] = ()

    def lines(self) -> list[str]:
        """The table "where each microsecond goes", with its notes."""
        per_request = 1e6 / max(self.requests, 1)
        parts = dict(self.seconds_by_part)
        profiled_total = sum(parts.values())
        residual = self.main_cpu_s - profiled_total
        if residual > 0:
            parts[RESIDUAL] = residual
        total = sum(parts.values())
        real_main_us = self.unprofiled_main_cpu_s * 1e6 / max(self.unprofiled_requests, 1)
        real_other_us = self.unprofiled_other_cpu_s * 1e6 / max(self.unprofiled_requests, 1)
        header = ("part", "us/req profiled", "share", "us/req est.")
        rows = [(name, f"{seconds * per_request:,.1f}", f"{seconds / total:.1%}",
                 f"{real_main_us * seconds / total:,.1f}")
                for name, seconds in sorted(parts.items(), key=lambda item: _order(item[0]))
                if seconds > 0]
        rows.append(("main thread, all parts", f"{total * per_request:,.1f}", "100.0%",
                     f"{real_main_us:,.1f}"))
        rows.append(("other threads (from /proc, not profiled)", "", "", f"{real_other_us:,.1f}"))
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        table = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                           for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
                 for row in [header, *rows]]
        table.insert(1, "  ".join("-" * w for w in widths))
        inflation = (total * per_request) / real_main_us if real_main_us else 0.0
        top = [f"  {spot.own_s * per_request:8,.1f} us/req own, {spot.calls / max(self.requests, 1):5.1f}"
               f" calls/req  {spot.function}  [{spot.part}]" for spot in self.top]
        return [
            f"Where each microsecond goes: {self.row} at concurrency {self.concurrency},"
            f" {self.requests:,} requests under cProfile after {self.unprofiled_requests:,}"
            " without it, same server:",
            *table,
            f"'us/req profiled' is cProfile's own time per part (a function's own time goes to"
            f" the part its file belongs to, else to its callers'), plus the main thread's /proc"
            f" CPU that the profile does not hold ('not seen by cProfile'); cProfile's own cost"
            f" inflates these {inflation:.1f}x over the unprofiled run's main-thread CPU, more"
            f" for many small Python calls than for C, so 'us/req est.' (each share times the"
            f" unprofiled CPU per request) is an estimate, fairer to C-heavy parts than to"
            f" Python-heavy ones. uvloop's transport methods are Cython, which cProfile does not"
            f" see as calls: their socket writes count in their Python caller's own time (uvicorn's"
            f" send, the upstream client's send). The other threads (the store's writer) are not"
            f" profiled.",
            *([f"The {len(top)} functions with the most own time (profiled; a coroutine's calls"
               " count each time it was resumed):", *top] if top else []),
        ]


def _wait_for(path: Path, process_alive: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SIGNAL_WAIT_S
    while not path.exists():
        if not process_alive() or time.monotonic() > deadline:
            raise BenchmarkError(f"the profiled server did not {what} ({path} missing)")
        time.sleep(0.05)


def profile_row(target: SwitchgearGateway, upstream: NginxUpstream, load: WrkLoad, core: int,
                work_dir: Path, request_body: Mapping[str, object], concurrency: int,
                seconds: int, announce: Callable[[str], None]) -> StageProfile:
    """Start ``target`` under the signalled profiler, warm it up, measure ``seconds`` without
    the profiler and ``seconds`` with it at ``concurrency``, and attribute the profile."""
    directory = work_dir / "profile"
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / f"{target.name}.prof"
    for stale in (output, output.with_name(output.name + ".on")):
        stale.unlink(missing_ok=True)
    profiled = replace(target, wrapper=(sys.executable, str(LAUNCHER), str(output)))
    announce(f"[profile] {target.name}: starting under {LAUNCHER.name}")
    with running(profiled, upstream, core, work_dir, request_body, announce) as answering:
        endpoint, process = answering.launch.endpoint, answering.launch.process
        assert process is not None
        pid = process.pid

        def alive() -> bool:
            return process.exit_code() is None

        load.run(endpoint, concurrency, max(1, seconds // 2))  # warm-up
        before = thread_cpu_seconds(pid)
        plain = load.run(endpoint, concurrency, seconds)
        after = thread_cpu_seconds(pid)
        announce(f"[profile] without the profiler: {plain.requests_per_s:,.0f} req/s")
        os.kill(pid, signal.SIGUSR1)
        _wait_for(output.with_name(output.name + ".on"), alive, "switch the profiler on")
        main_before = thread_cpu_seconds(pid).get(pid, 0.0)
        under = load.run(endpoint, concurrency, seconds)
        main_after = thread_cpu_seconds(pid).get(pid, 0.0)
        os.kill(pid, signal.SIGUSR2)
        _wait_for(output, alive, "write its profile")
        announce(f"[profile] under cProfile: {under.requests_per_s:,.0f} req/s")
    if plain.errors or under.errors:
        raise BenchmarkError(f"the profiled runs had errors ({plain.errors} without the"
                             f" profiler, {under.errors} with it)")
    other = sum(cpu - before.get(tid, 0.0) for tid, cpu in after.items() if tid != pid)
    stats: Mapping[Function, Entry] = pstats.Stats(str(output)).stats  # type: ignore[attr-defined]
    return StageProfile(target.name, concurrency, attribute(stats), under.requests,
                        main_after - main_before, plain.requests,
                        after.get(pid, 0.0) - before.get(pid, 0.0), other, tuple(hotspots(stats)))

