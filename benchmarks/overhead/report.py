"""What the benchmark prints and writes: the results table, target checks, method and JSON."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from load import LoadResult

BASELINE = "upstream"
#: The upstream's streamed answer measured directly: the baseline of the ``-stream`` rows.
STREAM_BASELINE = "upstream-stream"
STREAMED_SUFFIX = "-stream"
SWITCHGEAR = "switchgear"
#: The featureless Python proxy (proxy.py), plain and streamed: the Python limit.
PROXY = "proxy"
PROXY_STREAM = "proxy-stream"
#: Switchgear's rows of issue 28: the switchgear row's config streamed, and the full path
#: (guards in and out on top of it) plain and streamed.
SWITCHGEAR_STREAM = "switchgear-stream"
FULL = "switchgear-full"
FULL_STREAM = "switchgear-full-stream"
#: Switchgear with request records and metrics only, as issue 28 names that row: no keys,
#: limits, budget, tiers gate, cache or guards.
RECORDS = "switchgear-records"
#: Switchgear answering every request from its cache (in process, and in Redis).
CACHE_HIT = "switchgear-hit"
REDIS_CACHE_HIT = "switchgear-redis-hit"
#: Switchgear with input and output guards on.
GUARDED = "switchgear-guards"
#: Switchgear called through Anthropic's Messages API and OpenAI's Responses API.
MESSAGES = "switchgear-messages"
RESPONSES = "switchgear-responses"
#: How much more than the chat path's overhead another API's may add (0.2: within 20%).
API_OVERHEAD_MARGIN = 0.2
TARGET_REQUESTS_PER_S = 1_000.0
TARGET_ADDED_P50_MS_AT_1 = 0.5


@dataclass(frozen=True)
class Measurement:
    """One target at one concurrency: the warm-up run, the measured run and the gateway's CPU.

    ``cpu_ms_per_request`` is the CPU time the target's processes used during the measured run
    divided by the requests answered (None for the upstream, which has no process of its own).
    """

    target: str
    concurrency: int
    warmup: LoadResult
    measured: LoadResult
    cpu_ms_per_request: float | None = None
    #: At a goal's or an API check's level: every round measured there (the first is
    #: ``measured``), each with the row it is compared with (the proxy, the chat path) measured
    #: just before, so that a check compares runs seconds apart and takes the median round
    #: (this machine's speed drifts by a quarter in minutes).
    rounds: tuple[Round, ...] = ()


@dataclass
class TargetOutcome:
    """How one target fared: measured, skipped (not installed) or failed (with the reason)."""

    name: str
    version: str = ""
    status: str = "measured"
    reason: str = ""
    measurements: list[Measurement] = field(default_factory=list)


@dataclass(frozen=True)
class Method:
    """How the figures were made, printed under the table."""

    cpu_count: int
    cpu_model: str
    load_core: int
    gateway_core: int
    seconds: int
    warmup_seconds: int
    concurrencies: Sequence[int]
    request_body: str
    response_body: str
    tools: Sequence[str]
    load_average_before: str
    load_average_after: str
    #: The streamed answer the upstream gives under /stream/v1 (the -stream rows').
    stream_body: str = ""
    #: wrk's threads at most (never more than the connections).
    load_threads: int = 2
    #: Rounds measured at each goal's level.
    goal_rounds: int = 1

    def paragraph(self) -> str:
        """The method as prose."""
        levels = ", ".join(str(c) for c in self.concurrencies)
        return (
            f"Method: {self.cpu_count} CPUs ({self.cpu_model}). The upstream is nginx (one worker,"
            f" keep-alive, access log off) answering every POST /v1/chat/completions with a fixed"
            f" {len(self.response_body)}-byte chat.completion (with usage), pinned to core"
            f" {self.load_core} with taskset; the load generator wrk runs in its own process on"
            f" the same core {self.load_core}; each gateway runs alone, pinned to core"
            f" {self.gateway_core}, started fresh and pointed at the same nginx, one after another."
            f" Per target and concurrency ({levels} keep-alive connections, wrk threads ="
            f" min(concurrency, {self.load_threads})): a {self.warmup_seconds} s warm-up run, then a"
            f" {self.seconds} s measured run; request body"
            f" ({len(self.request_body)} bytes, model name per target; the -hit targets add"
            f' "temperature": 0, so every request after the first is a cache hit, and the'
            f" -redis-hit target's cache is a redis-server of its own pinned to core"
            f" {self.load_core} beside nginx; the -messages"
            f" and -responses targets send the same conversation through /v1/messages (key in"
            f" x-api-key) and /v1/responses (input text, max_output_tokens 16, stored as the API"
            f" does by default), which Switchgear asks nginx as the same chat request):"
            f" {self.request_body}. The -stream rows add \"stream\": true and stream_options"
            f" include_usage, and their upstream (POST /stream/v1/chat/completions on the same"
            f" nginx) answers a fixed {len(self.stream_body)}-byte text/event-stream: 11"
            f" chat.completion.chunk events (role, 8 content deltas, finish, usage) then"
            f" data: [DONE]; their 'added' is over upstream-stream when it was measured. The -full"
            f" rows add input and output guards (PII redacted both ways, injection flagged, size"
            f" limits, empty answers flagged); like the switchgear row's, their requests are not"
            f" deterministic (no temperature 0, no seed), so the in-process cache lets them"
            f" bypass it. The proxy"
            f" rows are benchmarks/overhead/proxy.py, a featureless Python proxy (uvicorn +"
            f" httptools + uvloop, an aiohttp keep-alive session, orjson: parse the body, set the"
            f" model, forward, relay the answer, streams chunk by chunk), pinned like the"
            f" gateways: the Python limit issue 28's goals are measured against. At each level a"
            f" goal is set at, the row is measured {self.goal_rounds} times (rounds), each time"
            f" just after a run of a second proxy process kept up for the whole run when the goal"
            f" is relative to the proxy; the goal is judged on the median round (the table shows"
            f" the first), as this machine's speed drifts by a quarter within minutes. The"
            f" -messages, -responses and -hit rows are measured so too at every level, each round"
            f" just after a run of a second switchgear (chat) process, when the switchgear row"
            f" is selected; their checks are judged on the median round's share."
            f" Latency percentiles are wrk's (--latency); 'added' is the target's p50 minus the"
            f" upstream's p50 at the same concurrency; 'cpu ms/req' is the CPU time (user +"
            f" system, from /proc) the gateway's processes used in the measured run divided by the"
            f" requests answered; 'errors' counts non-2xx/3xx answers and socket errors in the"
            f" measured run. Load average (1/5/15 min) before: {self.load_average_before};"
            f" after: {self.load_average_after} (other work on the machine skews the figures)."
            f" Versions: {'; '.join(self.tools)}."
        )


def _baseline_p50(outcomes: Sequence[TargetOutcome], name: str = BASELINE) -> dict[int, float]:
    """The p50 by concurrency that ``name``'s added p50 is taken from: the streamed upstream's
    for a streamed row when it was measured, else the upstream's."""
    measured = {o.name: {m.concurrency: m.measured.p50_ms for m in o.measurements}
                for o in outcomes if o.measurements}
    if name.endswith(STREAMED_SUFFIX) and STREAM_BASELINE in measured:
        return measured[STREAM_BASELINE]
    return measured.get(BASELINE, {})


def table(outcomes: Sequence[TargetOutcome]) -> str:
    """The results as a fixed-width text table, one row per target and concurrency."""
    header = ("target", "conc", "req/s", "p50 ms", "p99 ms", "p50 added ms", "cpu ms/req",
              "errors")
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes:
        if outcome.status != "measured" and not outcome.measurements:
            rows.append((outcome.name, "-", outcome.status, "", "", "", "", ""))
            continue
        baseline = _baseline_p50(outcomes, outcome.name)
        for m in outcome.measurements:
            result = m.measured
            added = (
                f"{result.p50_ms - baseline[m.concurrency]:+.3f}"
                if m.concurrency in baseline and outcome.name not in (BASELINE, STREAM_BASELINE)
                else "-"
            )
            cpu = "-" if m.cpu_ms_per_request is None else f"{m.cpu_ms_per_request:.3f}"
            rows.append((
                outcome.name, str(m.concurrency), f"{result.requests_per_s:,.0f}",
                f"{result.p50_ms:.3f}", f"{result.p99_ms:.3f}", added, cpu, str(result.errors),
            ))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def target_checks(outcomes: Sequence[TargetOutcome]) -> list[str]:
    """Switchgear against its targets (>= 1,000 req/s; <= 0.5 ms added p50 at concurrency 1),
    plain and, when measured, with guards on."""
    measured = {o.name: o for o in outcomes if o.measurements}
    if SWITCHGEAR not in measured:
        return ["Switchgear targets: not checked (Switchgear was not measured)."]
    baseline = _baseline_p50(outcomes)
    lines = []
    for name, label in ((SWITCHGEAR, "Switchgear"), (GUARDED, "Switchgear with guards")):
        if name not in measured:
            continue
        best = max(measured[name].measurements, key=lambda m: m.measured.requests_per_s)
        lines.append(
            f"{label} throughput: {best.measured.requests_per_s:,.0f} req/s at concurrency"
            f" {best.concurrency} (target >= {TARGET_REQUESTS_PER_S:,.0f}):"
            f" {'met' if best.measured.requests_per_s >= TARGET_REQUESTS_PER_S else 'MISSED'}")
        at_one = next((m for m in measured[name].measurements if m.concurrency == 1), None)
        if at_one is None or 1 not in baseline:
            lines.append(f"{label} added p50 at concurrency 1: not checked (needs upstream and"
                         " c=1).")
            continue
        added = at_one.measured.p50_ms - baseline[1]
        verdict = "met" if added <= TARGET_ADDED_P50_MS_AT_1 else "MISSED"
        lines.append(f"{label} added p50 at concurrency 1: {added:.3f} ms"
                     f" (target <= {TARGET_ADDED_P50_MS_AT_1} ms): {verdict}")
    return lines


def cache_checks(outcomes: Sequence[TargetOutcome]) -> list[str]:
    """Each cache-hit target against the miss path: a hit's whole latency must not exceed what
    the gateway adds to a request that goes to the model (the switchgear row's added p50).
    Measured in rounds (each after a run of the chat row, ``chat_levels``), the verdict is on
    the median round's share of the miss path's overhead beside it; else on the two rows' own
    runs."""
    by_name = {o.name: {m.concurrency: m for m in o.measurements} for o in outcomes}
    baseline = _baseline_p50(outcomes)
    lines = []
    for name in (CACHE_HIT, REDIS_CACHE_HIT):
        for concurrency, hit in sorted(by_name.get(name, {}).items()):
            miss = by_name.get(SWITCHGEAR, {}).get(concurrency)
            rounds = [one for one in hit.rounds if one.beside is not None]
            if concurrency not in baseline or (miss is None and not rounds):
                lines.append(f"{name} at concurrency {concurrency}: not checked (needs upstream"
                             " and switchgear at the same concurrency).")
                continue
            upstream_p50 = baseline[concurrency]
            label = (f"{name} at concurrency {concurrency}: p50 {hit.measured.p50_ms:.3f} ms,"
                     f" p99 {hit.measured.p99_ms:.3f} ms, {hit.measured.requests_per_s:,.0f}"
                     " req/s; ")
            if not rounds:
                assert miss is not None
                overhead = miss.measured.p50_ms - upstream_p50
                verdict = "met" if hit.measured.p50_ms <= overhead else "MISSED"
                lines.append(f"{label}miss-path overhead p50 {overhead:.3f} ms: {verdict}")
                continue
            shares = [_share(one.measured.p50_ms, _beside(one).p50_ms - upstream_p50)
                      for one in rounds]
            share = statistics.median(shares)
            verdict = "met" if share <= 1 + ROUNDING else "MISSED"
            lines.append(f"{label}its p50 a median {_percent(share)} of the miss path's overhead"
                         f" p50, run just before each of {len(rounds)} rounds"
                         f" ({', '.join(map(_percent, shares))}) (target <= 100%): {verdict}")
    return lines


def api_checks(outcomes: Sequence[TargetOutcome]) -> list[str]:
    """The Messages and Responses rows against the chat row: the p50 each adds over the
    upstream within ``API_OVERHEAD_MARGIN`` of the chat path's, at each concurrency (the CPU per
    request beside it: on a quiet machine the steadier figure). Measured in rounds (each after
    a run of the chat row, ``chat_levels``), the verdict is on the median round's share; else on
    the two rows' own runs."""
    by_name = {o.name: {m.concurrency: m for m in o.measurements} for o in outcomes}
    baseline = _baseline_p50(outcomes)
    lines = []
    for name in (MESSAGES, RESPONSES):
        for concurrency, row in sorted(by_name.get(name, {}).items()):
            chat = by_name.get(SWITCHGEAR, {}).get(concurrency)
            rounds = [one for one in row.rounds if one.beside is not None]
            if concurrency not in baseline or (chat is None and not rounds):
                lines.append(f"{name} at concurrency {concurrency}: not checked (needs upstream"
                             " and switchgear at the same concurrency).")
                continue
            if not rounds:
                assert chat is not None
                rounds = [Round.of(row, chat)]
            lines.append(_api_check(f"{name} at concurrency {concurrency}", rounds,
                                    baseline[concurrency]))
    return lines


def _api_check(label: str, rounds: Sequence[Round], upstream_p50: float) -> str:
    """One API row's check over ``rounds`` (each with the chat row's run beside it)."""
    shares = [_share(one.measured.p50_ms - upstream_p50, _beside(one).p50_ms - upstream_p50)
              for one in rounds]
    cpu_shares = [_share(one.cpu_ms, one.beside_cpu_ms) for one in rounds]
    share = statistics.median(shares)
    verdict = "met" if share <= 1 + API_OVERHEAD_MARGIN + ROUNDING else "MISSED"
    first = rounds[0]
    added, chat_added = (first.measured.p50_ms - upstream_p50,
                         _beside(first).p50_ms - upstream_p50)
    if len(rounds) == 1:
        shown = f"added p50 {added:.3f} ms, {_percent(share)} of the chat path's {chat_added:.3f} ms"
        cpu = ("" if first.cpu_ms is None or cpu_shares[0] == math.inf else
               f"; cpu {first.cpu_ms:.3f} ms/req, {_percent(cpu_shares[0])} of chat's")
    else:
        shown = (f"added p50 a median {_percent(share)} of the chat path's, run just before"
                 f" each of {len(rounds)} rounds ({', '.join(map(_percent, shares))})")
        cpu = ("" if math.inf in cpu_shares else
               f"; cpu a median {_percent(statistics.median(cpu_shares))} of chat's"
               f" ({', '.join(map(_percent, cpu_shares))})")
    return f"{label}: {shown}{cpu} (target <= {1 + API_OVERHEAD_MARGIN:.0%}): {verdict}"


def _beside(one: Round) -> LoadResult:
    assert one.beside is not None
    return one.beside


def _share(value: float | None, base: float | None) -> float:
    """``value`` as a share of ``base``; infinite when either is missing or ``base`` is not
    above zero (no share can be taken)."""
    if value is None or base is None or base <= 0:
        return math.inf
    return value / base


def _percent(share: float) -> str:
    return "n/a" if share == math.inf else f"{share:.0%}"


def chat_levels(selected: Collection[str], concurrencies: Sequence[int]
                ) -> dict[tuple[str, int], str]:
    """Each (row, concurrency) an API or cache check is made at, with the row it compares
    with (chat): only when that row is selected too."""
    if SWITCHGEAR not in selected:
        return {}
    return {(name, concurrency): SWITCHGEAR
            for name in (MESSAGES, RESPONSES, CACHE_HIT, REDIS_CACHE_HIT)
            if name in selected for concurrency in concurrencies}


Figure = Literal["req/s", "p50", "p99"]
#: A figure exactly on its goal meets it, whatever the floating point sum or product rounds to.
ROUNDING = 1e-9


@dataclass(frozen=True)
class Round:
    """One round of a goal's or an API check's level: the row's run and, when it is compared
    with another row (the proxy, the chat path), that row's run just before it (``beside``),
    with the CPU per request of each when known."""

    measured: LoadResult
    beside: LoadResult | None = None
    cpu_ms: float | None = None
    beside_cpu_ms: float | None = None

    @classmethod
    def of(cls, run: Measurement, beside: Measurement | None) -> Round:
        """The round of ``run``, with ``beside`` (the row it is compared with) when measured."""
        return cls(run.measured, None if beside is None else beside.measured,
                   run.cpu_ms_per_request, None if beside is None else beside.cpu_ms_per_request)


@dataclass(frozen=True)
class Goal:
    """One of issue 28's "done when" figures: ``row``'s ``figure`` at ``concurrency`` against
    ``limit``; with ``relative_to``, a share of that row's req/s (0.55: at least 55%) or a margin
    in ms over its latency (0.15: at most 0.15 ms above), both measured in the same run so that
    the machine's speed cancels; without, an absolute floor (req/s) or ceiling (ms)."""

    row: str
    concurrency: int
    figure: Figure
    limit: float
    relative_to: str | None = None

    def check(self, by_name: dict[str, dict[int, LoadResult]],
              rounds: Sequence[Round] = ()) -> str:
        """The goal as one line: the figures and met or MISSED (or why it was not checked).
        Given ``rounds`` (the level measured again and again, the base beside the row each
        time), the verdict is on the median round's figure; else on the row's run against the
        base row's own."""
        label = f"{self.row} {self.figure} at concurrency {self.concurrency}"
        base_name = f"{self.relative_to} (beside it)" if rounds else self.relative_to
        if not rounds:
            row = by_name.get(self.row, {}).get(self.concurrency)
            base = by_name.get(self.relative_to or "", {}).get(self.concurrency)
            rounds = () if row is None else (Round(row, base),)
        if not rounds or (self.relative_to is not None and any(r.beside is None for r in rounds)):
            needed = " and ".join(n for n in (self.row, self.relative_to) if n)
            return f"{label}: not checked (needs {needed} at concurrency {self.concurrency})."
        scores = [self._score(one) for one in rounds]
        score = statistics.median(scores)
        met = (score >= self.limit - ROUNDING if self.figure == "req/s"
               else score <= self.limit + ROUNDING)
        target = (f">= {self.limit:.0%}" if self.figure == "req/s" and self.relative_to else
                  f">= {self.limit:,.0f}" if self.figure == "req/s" else
                  f"<= +{self.limit} ms" if self.relative_to else f"<= {self.limit} ms")
        if len(rounds) == 1:
            shown = self._one(rounds[0], base_name)
        else:
            shown = (f"median of {len(rounds)} rounds {self._format(score)}"
                     f"{self._against(base_name)} ({', '.join(map(self._format, scores))})")
        return f"{label}: {shown} (target {target}): {'met' if met else 'MISSED'}"

    def _score(self, one: Round) -> float:
        """What the limit is held to: the figure, or its share of (or margin over) the base's."""
        value = _figure(one.measured, self.figure)
        base = _figure(one.beside, self.figure) if self.relative_to else None
        assert value is not None
        if base is None:
            return value
        return value / base if self.figure == "req/s" else value - base

    def _format(self, score: float) -> str:
        if self.figure == "req/s":
            return f"{score:.0%}" if self.relative_to else f"{score:,.0f}"
        return f"{score:+.3f} ms" if self.relative_to else f"{score:.3f} ms"

    def _against(self, base_name: str | None) -> str:
        if not self.relative_to:
            return ""
        return f" {'of' if self.figure == 'req/s' else 'over'} {base_name}'s {self.figure}"

    def _one(self, one: Round, base_name: str | None) -> str:
        """One round's figures: the row's, and against the base's."""
        value = _figure(one.measured, self.figure)
        base = _figure(one.beside, self.figure) if self.relative_to else None
        assert value is not None
        if self.figure == "req/s":
            return f"{value:,.0f}" + ("" if base is None else
                                      f", {value / base:.0%} of {base_name}'s {base:,.0f}")
        return f"{value:.3f} ms" + ("" if base is None else
                                    f", {value - base:+.3f} ms over {base_name}'s {base:.3f} ms")


def _figure(result: LoadResult | None, figure: Figure) -> float | None:
    if result is None:
        return None
    return {"req/s": result.requests_per_s, "p50": result.p50_ms, "p99": result.p99_ms}[figure]


#: Issue 28's "done when", against the featureless proxy in the same run.
GOALS = (
    Goal(FULL, 16, "req/s", 0.55, PROXY),
    Goal(FULL, 1, "p50", 0.15, PROXY),
    Goal(FULL, 16, "p99", 10.0),
    Goal(RECORDS, 16, "req/s", 0.70, PROXY),
    Goal(FULL_STREAM, 16, "req/s", 2_000.0),
    Goal(FULL_STREAM, 1, "p50", 0.7),
)


def goal_checks(outcomes: Sequence[TargetOutcome], goals: Sequence[Goal] = GOALS) -> list[str]:
    """Each goal whose row was selected, as a line: met, MISSED or not checked. A miss is
    reported, not a problem: the exit status says whether the figures are sound (every target
    measured without errors), not whether the gateway is fast enough yet."""
    by_name = {o.name: {m.concurrency: m.measured for m in o.measurements} for o in outcomes}
    rounds = {(o.name, m.concurrency): m.rounds for o in outcomes for m in o.measurements}
    selected = {o.name for o in outcomes}
    return [goal.check(by_name, rounds.get((goal.row, goal.concurrency), ()))
            for goal in goals if goal.row in selected]


def goal_levels(goals: Sequence[Goal] = GOALS) -> dict[tuple[str, int], str | None]:
    """Each (row, concurrency) a goal is set at, with the row its goal is relative to (None:
    an absolute goal)."""
    levels: dict[tuple[str, int], str | None] = {}
    for goal in goals:
        levels[(goal.row, goal.concurrency)] = (goal.relative_to
                                                or levels.get((goal.row, goal.concurrency)))
    return levels


def problems(outcomes: Sequence[TargetOutcome]) -> list[str]:
    """Failures, skips and runs with errors: each makes the figures of that target worthless."""
    found = [
        f"{o.name}: {o.status}: {o.reason.splitlines()[0] if o.reason else ''}"
        for o in outcomes
        if o.status != "measured"
    ]
    for outcome in outcomes:
        for m in outcome.measurements:
            if m.warmup.errors or m.measured.errors:
                found.append(
                    f"{outcome.name} at concurrency {m.concurrency}: {m.warmup.errors} errors in"
                    f" warm-up, {m.measured.errors} in the measured run"
                    f" ({m.measured.non_2xx} non-2xx, {m.measured.socket_errors} socket)"
                )
            for number, one in enumerate(m.rounds[1:], start=2):
                if one.measured.errors:
                    found.append(f"{outcome.name} at concurrency {m.concurrency}:"
                                 f" {one.measured.errors} errors in round {number}")
            for number, one in enumerate(m.rounds, start=1):
                if one.beside is not None and one.beside.errors:
                    found.append(f"the row beside {outcome.name} at concurrency"
                                 f" {m.concurrency}: {one.beside.errors} errors in round {number}")
    return found


def _added_p50(outcomes: Sequence[TargetOutcome], outcome: TargetOutcome) -> dict[str, float]:
    baseline = _baseline_p50(outcomes, outcome.name)
    return {str(m.concurrency): m.measured.p50_ms - baseline[m.concurrency]
            for m in outcome.measurements if m.concurrency in baseline}


def write_json(path: Path, outcomes: Sequence[TargetOutcome], method: Method,
               notes: Sequence[str] = ()) -> None:
    """Everything measured, with the method and ``notes`` (the profile, the RSS run), as JSON
    at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "method": {**asdict(method), "paragraph": method.paragraph()},
        "targets": [
            {**asdict(outcome), "added_p50_ms": _added_p50(outcomes, outcome)}
            for outcome in outcomes
        ],
        "checks": [*target_checks(outcomes), *cache_checks(outcomes), *api_checks(outcomes),
                   *goal_checks(outcomes)],
        "notes": list(notes),
        "problems": problems(outcomes),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
