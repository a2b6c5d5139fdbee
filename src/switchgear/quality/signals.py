"""Quality signals: answers counted per route, deployment and served alias in time buckets.

Each finished answer adds to one bucket in O(1) (a Recorder step): its combination's, whose
names are the keys it counts in; windows are sums of buckets, built only when the detector or
the admin API asks. A key is ``(dimension, name)``; the
dimensions are the ``DIMENSIONS`` table. Each config version has signals of its own (its
``Serving``), so config versions, and the template versions they carry, are compared apart.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from switchgear.config import QualityConfig
from switchgear.exchange import Exchange, Operation

#: How a dimension names an exchange's group (None: the exchange has none in this dimension).
Namer = Callable[[Exchange], str | None]
Key = tuple[str, str]


def _deployment(exchange: Exchange) -> str | None:
    return f"{exchange.served_alias or exchange.model}/{exchange.deployment}"


#: The dimensions signals are kept in: the alias asked for (the route), the alias whose
#: deployment answered (a variant or fallback may differ), that deployment, and the managed
#: prompt template the request named (none: not kept in that dimension).
DIMENSIONS: tuple[tuple[str, Namer], ...] = (
    ("route", lambda exchange: exchange.model),
    ("served", lambda exchange: exchange.served_alias or exchange.model),
    ("deployment", _deployment),
    ("prompt", lambda exchange: exchange.prompt_name),
)

#: Rates the detector watches: name → (hits, out of how many) in a tally. The guard-flag rate
#: counts answers any guard objected to (flag, redact or block).
RATES: Mapping[str, Callable[[Tally], tuple[int, int]]] = MappingProxyType({
    "refusal_rate": lambda t: (t.refused, t.judged),
    "empty_rate": lambda t: (t.empty, t.answers),
    "schema_valid_rate": lambda t: (t.schema_valid, t.schema_checked),
    "guard_flag_rate": lambda t: (t.guard_flagged, t.answers),
    "length_cut_rate": lambda t: (t.finish_reasons.get("length", 0), t.answers),
})


@dataclass(slots=True)
class Tally:
    """Sums over a set of answers, from which every signal follows; tallies add up."""

    answers: int = 0
    output_tokens: int = 0
    output_tokens_squared: int = 0
    judged: int = 0
    refused: int = 0
    schema_checked: int = 0
    schema_valid: int = 0
    guard_flagged: int = 0
    empty: int = 0
    finish_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, exchange: Exchange, empty: bool) -> None:
        """Count one answer."""
        self.answers += 1
        tokens = exchange.usage.completion_tokens
        self.output_tokens += tokens
        self.output_tokens_squared += tokens * tokens
        if exchange.refused is not None:
            self.judged += 1
            self.refused += exchange.refused
        if exchange.schema_valid is not None:
            self.schema_checked += 1
            self.schema_valid += exchange.schema_valid
        self.guard_flagged += exchange.guard_action is not None
        self.empty += empty
        reason = exchange.finish_reason or "unknown"
        self.finish_reasons[reason] = self.finish_reasons.get(reason, 0) + 1

    def merge(self, other: Tally) -> None:
        """Add ``other``'s answers to these."""
        self.answers += other.answers
        self.output_tokens += other.output_tokens
        self.output_tokens_squared += other.output_tokens_squared
        self.judged += other.judged
        self.refused += other.refused
        self.schema_checked += other.schema_checked
        self.schema_valid += other.schema_valid
        self.guard_flagged += other.guard_flagged
        self.empty += other.empty
        for reason, count in other.finish_reasons.items():
            self.finish_reasons[reason] = self.finish_reasons.get(reason, 0) + count

    @classmethod
    def total(cls, tallies: Iterable[Tally]) -> Tally:
        """The sum of ``tallies``."""
        result = cls()
        for tally in tallies:
            result.merge(tally)
        return result

    @property
    def mean_output_tokens(self) -> float | None:
        """Mean completion tokens per answer."""
        return self.output_tokens / self.answers if self.answers else None

    @property
    def output_tokens_variance(self) -> float | None:
        """Sample variance of completion tokens per answer (None below two answers)."""
        if self.answers < 2:
            return None
        mean = self.output_tokens / self.answers
        return max(0.0, (self.output_tokens_squared - self.answers * mean * mean)
                   / (self.answers - 1))

    def summary(self) -> dict[str, Any]:
        """The signals as JSON: counts, mean output length, each rate (None: nothing to count),
        and the finish-reason mix as shares."""
        report: dict[str, Any] = {"answers": self.answers}
        mean = self.mean_output_tokens
        report["output_tokens"] = None if mean is None else round(mean, 3)
        for name, rate in RATES.items():
            hits, out_of = rate(self)
            report[name] = round(hits / out_of, 4) if out_of else None
        report["finish_reasons"] = {reason: round(count / self.answers, 4)
                                    for reason, count in sorted(self.finish_reasons.items())}
        return report


def counts(exchange: Exchange) -> bool:
    """Whether an exchange is an answer the signals count: a chat or completions answer produced
    by a deployment for this request (not a cache hit), delivered whole or blocked by a guard."""
    return (exchange.operation is not Operation.EMBEDDINGS and exchange.deployment is not None
            and exchange.cache_status in ("miss", "bypass") and not exchange.truncated
            and (exchange.status == 200 or exchange.guard_action == "block"))


class QualitySignals:
    """Per combination of names an answer has (one per dimension, None where it has none), a
    bucket per ``bucket_s`` seconds, as many as the two windows need. An answer is added to one
    tally, not one per dimension; a key's window sums the combinations that name it."""

    def __init__(self, config: QualityConfig,
                 dimensions: Sequence[tuple[str, Namer]] = DIMENSIONS) -> None:
        self.bucket_s = config.bucket_s
        self.recent_buckets = max(1, math.ceil(config.recent_s / config.bucket_s))
        self.baseline_buckets = max(1, math.ceil(config.baseline_s / config.bucket_s))
        self.dimensions = tuple(dimensions)
        self._namers = tuple(name_of for _, name_of in self.dimensions)
        self._position = {dimension: at for at, (dimension, _) in enumerate(self.dimensions)}
        self._series: dict[tuple[str | None, ...], deque[tuple[int, Tally]]] = {}

    def observe(self, exchange: Exchange) -> None:
        """A Recorder step: count a finished answer in its combination's current bucket."""
        if not counts(exchange):
            return
        index = int((exchange.done or time.time()) // self.bucket_s)
        names = tuple([name_of(exchange) for name_of in self._namers])
        series = self._series.get(names)
        if series is None:
            series = self._series[names] = deque()
        if not series or series[-1][0] < index:
            series.append((index, Tally()))
            keep = self.recent_buckets + self.baseline_buckets
            while series[0][0] <= index - keep:
                series.popleft()
        series[-1][1].add(exchange, not any(part.strip() for part in exchange.completion_text))

    def groups(self) -> list[Key]:
        """Every key seen, in order of dimension then name."""
        keys = {(dimension, name) for names in self._series
                for (dimension, _), name in zip(self.dimensions, names, strict=True)
                if name is not None}
        return sorted(keys, key=lambda key: (self._position[key[0]], key[1]))

    def windows(self, key: Key, now: float) -> tuple[Tally, Tally]:
        """The recent and the baseline window of ``key`` at ``now``."""
        current = int(now // self.bucket_s)
        recent_from = current - self.recent_buckets
        baseline_from = recent_from - self.baseline_buckets
        dimension, name = key
        at = self._position.get(dimension)
        buckets = [] if at is None else [
            bucket for names, series in self._series.items() if names[at] == name
            for bucket in series]
        recent = Tally.total(t for index, t in buckets if recent_from < index <= current)
        baseline = Tally.total(t for index, t in buckets if baseline_from < index <= recent_from)
        return recent, baseline
