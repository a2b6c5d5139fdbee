"""A level's figures, in the shape of the bench profile (one entry of its ``levels``).

Percentiles are nearest-rank (``switchgear.percentiles``): always an observed value. Latencies
count from each request's scheduled time. TTFT is the first streamed text; ITL the gaps
between streamed chunks with text; TPOT vLLM's (e2e - TTFT) / (output tokens - 1). The measured
duration is the span of the completions stretched by one mean gap (n completions span n - 1
gaps), so a level that cannot keep up reports the rate it really served. ``client`` says whether
the client itself kept up (``monitor``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

from switchgear.capacity.bench.client import Outcome
from switchgear.capacity.bench.load import CONCURRENCY, LevelRun
from switchgear.capacity.bench.monitor import client_health
from switchgear.percentiles import nearest_rank

#: benchmarks/capacity takes its p95s from here: the same definition as bench's.
percentile = nearest_rank

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True, slots=True)
class SLO:
    """Targets a level must meet: p95 of TTFT, e2e and TPOT (None: no target), and the largest
    share of failed requests."""

    ttft_p95_s: float | None = None
    e2e_p95_s: float | None = None
    tpot_p95_s: float | None = None
    error_rate: float = 0.01

    def as_dict(self) -> dict[str, Any]:
        """The profile's ``slo``."""
        return asdict(self)

    def request_meets(self, e2e: float, ttft: float | None, tpot: float | None) -> bool:
        """Whether one successful request met every per-request target (goodput counts these)."""
        return (_within(e2e, self.e2e_p95_s) and _within(ttft, self.ttft_p95_s)
                and _within(tpot, self.tpot_p95_s))

    def level_meets(self, level: dict[str, Any]) -> bool:
        """Whether a level's p95s and error rate are all within target."""
        latency = level["latency_s"]
        return (level["completed"] > 0 and level["error_rate"] <= self.error_rate
                and _within(latency["e2e"]["p95"], self.e2e_p95_s)
                and _within(latency["ttft"]["p95"], self.ttft_p95_s)
                and _within(latency["tpot"]["p95"], self.tpot_p95_s))


def _within(value: float | None, target: float | None) -> bool:
    return target is None or (value is not None and value <= target)


def summary(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, p50/p90/p95/p99 (nearest-rank) and max (all None when there are no values)."""
    if not values:
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}, "max": None}
    ordered = sorted(values)
    return {"mean": sum(ordered) / len(ordered),
            **{f"p{q}": nearest_rank(ordered, q) for q in PERCENTILES}, "max": ordered[-1]}


@dataclass(frozen=True, slots=True)
class RequestTimes:
    """One successful request's latencies (seconds from its scheduled time)."""

    e2e: float
    ttft: float | None
    tpot: float | None
    itl: list[float]

    @classmethod
    def of(cls, outcome: Outcome) -> RequestTimes:
        """The latencies of ``outcome``."""
        e2e = outcome.done_at - outcome.scheduled_at
        first = outcome.first_token_at
        ttft = None if first is None else first - outcome.scheduled_at
        tpot = None
        if ttft is not None and outcome.output_tokens > 1:
            tpot = (e2e - ttft) / (outcome.output_tokens - 1)
        times = outcome.token_times
        return cls(e2e, ttft, tpot, [b - a for a, b in pairwise(times)])


def measured_seconds(outcomes: Sequence[Outcome], planned: float) -> float:
    """The span of the completions stretched by one mean gap; ``planned`` when fewer than two."""
    if len(outcomes) < 2:
        return planned
    ends = [outcome.done_at for outcome in outcomes]
    span = max(ends) - min(ends)
    return span * len(ends) / (len(ends) - 1) if span > 0 else planned


def level_figures(run: LevelRun, slo: SLO) -> dict[str, Any]:
    """The profile entry of one level."""
    level, outcomes = run.level, run.outcomes
    good = [outcome for outcome in outcomes if outcome.error is None]
    times = [RequestTimes.of(outcome) for outcome in good]
    seconds = measured_seconds(outcomes, level.duration_s)
    errors = Counter(outcome.error for outcome in outcomes if outcome.error is not None)
    within = sum(1 for t in times if slo.request_meets(t.e2e, t.ttft, t.tpot))
    figures: dict[str, Any] = {
        "label": level.label,
        "mode": level.mode,
        "concurrency": level.concurrency if level.mode == CONCURRENCY else None,
        "rate": level.rate,
        "duration_s": round(seconds, 6),
        "warmup_s": level.warmup_s,
        "warmup_requests": run.warmup_outcomes,
        "stopped": run.stopped,
        "sent": len(outcomes),
        "completed": len(good),
        "errors": dict(sorted(errors.items())),
        "error_rate": (len(outcomes) - len(good)) / len(outcomes) if outcomes else 0.0,
        "request_rate": len(good) / seconds,
        "input_tokens_per_s": sum(o.input_tokens for o in good) / seconds,
        "output_tokens_per_s": sum(o.output_tokens for o in good) / seconds,
        "goodput": within / seconds,
        "latency_s": {
            "e2e": summary([t.e2e for t in times]),
            "ttft": summary([t.ttft for t in times if t.ttft is not None]),
            "itl": summary([gap for t in times for gap in t.itl]),
            "tpot": summary([t.tpot for t in times if t.tpot is not None]),
        },
        "samples": {
            "e2e": [round(t.e2e, 6) for t in times],
            "ttft": [round(t.ttft, 6) for t in times if t.ttft is not None],
            "output_tokens": [o.output_tokens for o in good],
            "input_tokens": [o.input_tokens for o in good],
            "scheduled_at": [round(o.scheduled_at - run.start, 6) for o in good],
        },
    }
    figures["meets_slo"] = slo.level_meets(figures)
    late = None if level.mode == CONCURRENCY else [o.sent_at - o.scheduled_at for o in good]
    figures["client"] = client_health(run.client, late, len(outcomes) + run.warmup_outcomes,
                                      run.queued)
    return figures
