"""The bench profile as the planner reads it: the JSON ``switchgear bench --json`` writes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

CLOSED_LOOP = "concurrency"
#: Latency growing this many seconds per second of a level or more: the server fell behind.
#: Measured on the simulator's sweep (tests/capacity/data): 0.06 at the rate bench found
#: saturating, at most 0.007 at the levels below it.
UNSERVED_GROWTH = 0.03
MIN_TREND_SAMPLES = 20


class ProfileError(ValueError):
    """The profile cannot be planned from (unreadable, or without the levels a model needs)."""


@dataclass(frozen=True)
class ClientCheck:
    """What bench measured of itself while a level ran: whether the client, not the server,
    limited the level (too busy to send on time), and why."""

    saturated: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Level:
    """One measured load level: closed loop at a concurrency, or open loop at a target rate.
    ``scheduled_at``: each completed request's scheduled send time, seconds from the level's
    start (as ``latencies``); ``stopped``: why bench stopped the level early; ``client``: None
    where the profile predates bench checking itself."""

    mode: str
    concurrency: int | None
    rate: float | None
    request_rate: float
    sent: int
    completed: int
    latencies: tuple[float, ...]
    input_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    scheduled_at: tuple[float, ...] = ()
    stopped: str | None = None
    client: ClientCheck | None = None

    @property
    def error_share(self) -> float:
        """Share of the requests sent that did not complete."""
        return (self.sent - self.completed) / self.sent if self.sent else 0.0

    @property
    def offered_rate(self) -> float:
        """Arrivals/s: an open-loop level's target rate (else what it served)."""
        return self.rate or self.request_rate

    @property
    def name(self) -> str:
        """The level as messages name it."""
        if self.mode == CLOSED_LOOP:
            return f"the closed-loop level at concurrency {self.concurrency}"
        return f"the {self.mode} level at {self.offered_rate:.2f} req/s"


def backlog_growth(level: Level) -> float | None:
    """How fast latency grew over the level: the least-squares slope of each request's latency
    against its scheduled send time (seconds per second; None without send times). A queue that
    keeps up holds it near 0; where arrivals outpace service by a share g, it is about g."""
    if len(level.scheduled_at) < MIN_TREND_SAMPLES:
        return None
    sent = np.array(level.scheduled_at)
    spread = sent - sent.mean()
    denominator = float(spread @ spread)
    return float(spread @ np.array(level.latencies)) / denominator if denominator > 0 else None


def why_not_served(level: Level, error_cap: float) -> str | None:
    """Why ``level`` shows the server not keeping up with its arrivals (None where it did, or
    its samples cannot tell): bench stopped it, more than ``error_cap`` of its requests failed,
    or its latency kept growing (``backlog_growth`` of ``UNSERVED_GROWTH`` or more: a queue
    that grows for as long as the level runs, whose p95 measures the level's length, not the
    rate)."""
    if level.stopped:
        return f"bench stopped it ({level.stopped})"
    if level.error_share > error_cap:
        return f"{level.error_share:.1%} of its requests failed"
    growth = backlog_growth(level)
    if growth is not None and growth >= UNSERVED_GROWTH:
        return (f"its latency grew {growth:.3f} s per second of the level, a backlog that kept "
                f"growing; it was served at about {level.request_rate:.2f} req/s")
    return None


@dataclass(frozen=True)
class Profile:
    """The levels of one bench run, the workload's token counts and the SLO it was run with."""

    levels: tuple[Level, ...]
    latency: str
    stream: bool
    slo: dict[str, Any]
    sweep: dict[str, Any] | None

    @property
    def closed_loop(self) -> tuple[Level, ...]:
        """The closed-loop levels, by rising concurrency."""
        return tuple(sorted((lv for lv in self.levels if lv.mode == CLOSED_LOOP),
                            key=lambda lv: lv.concurrency or 0))

    @property
    def open_loop(self) -> tuple[Level, ...]:
        """The open-loop levels (constant or Poisson arrivals), by rising rate."""
        return tuple(sorted((lv for lv in self.levels if lv.mode != CLOSED_LOOP),
                            key=lambda lv: lv.rate or 0.0))

    def mean_tokens(self) -> tuple[float, float]:
        """Mean input and output tokens per completed request over all levels."""
        inputs = [t for lv in self.levels for t in lv.input_tokens]
        outputs = [t for lv in self.levels for t in lv.output_tokens]
        return (sum(inputs) / len(inputs) if inputs else 0.0,
                sum(outputs) / len(outputs) if outputs else 0.0)


def _client(raw: Any) -> ClientCheck | None:
    if raw is None:
        return None
    return ClientCheck(bool(raw["saturated"]), tuple(str(reason) for reason in raw.get("reasons") or ()))


def _level(raw: dict[str, Any], latency: str) -> Level:
    samples = raw.get("samples") or {}
    latencies = tuple(float(x) for x in samples.get(latency) or () if x is not None)
    scheduled = tuple(float(x) for x in samples.get("scheduled_at") or ())
    return Level(mode=str(raw["mode"]), concurrency=raw.get("concurrency"), rate=raw.get("rate"),
                 request_rate=float(raw["request_rate"]), sent=int(raw.get("sent") or 0),
                 completed=int(raw.get("completed") or 0), latencies=latencies,
                 input_tokens=tuple(int(t) for t in samples.get("input_tokens") or ()),
                 output_tokens=tuple(int(t) for t in samples.get("output_tokens") or ()),
                 scheduled_at=scheduled if len(scheduled) == len(latencies) else (),
                 stopped=raw.get("stopped") or None, client=_client(raw.get("client")))


def parse_profile(raw: dict[str, Any], latency: str = "e2e") -> Profile:
    """A profile from its JSON document; ``latency`` picks the samples modelled (e2e or ttft)."""
    if raw.get("tool") != "switchgear bench":
        raise ProfileError("not a switchgear bench profile (its 'tool' is not 'switchgear bench')")
    try:
        levels = tuple(_level(level, latency) for level in raw["levels"])
    except (KeyError, TypeError, ValueError) as error:
        raise ProfileError(f"a level of the profile is malformed: {error!r}") from error
    workload = raw.get("workload") or {}
    return Profile(levels=levels, latency=latency, stream=bool(workload.get("stream")),
                   slo=dict(raw.get("slo") or {}), sweep=raw.get("sweep"))


def require_model_levels(profile: Profile, bench: str) -> None:
    """Raise ``ProfileError`` naming the closed-loop levels ``profile`` lacks for the model: one
    at concurrency 1 (a request served alone: the work every request brings, which the model
    scales by load) that completed requests. ``bench`` is the command that measured it (the
    advice names the flags to add)."""
    closed = profile.closed_loop
    if not closed:
        raise ProfileError(
            f"the profile has no closed-loop level (it has {len(profile.levels)} open-loop "
            "level(s)); the model is built from closed-loop levels from concurrency 1 to past "
            f"saturation: bench them with `{bench} -c 1 -c 2 -c 4 -c 8` (up to twice the "
            "server's slots) or `--sweep`")
    lowest = closed[0]
    if lowest.concurrency != 1:
        levels = ", ".join(str(level.concurrency) for level in closed)
        raise ProfileError(
            f"the profile has no closed-loop level at concurrency 1 (its closed-loop levels: "
            f"concurrency {levels}); the model scales from the latency of a request served "
            f"alone: bench one with `{bench} -c 1` (same workload) and give both profiles to "
            "--profile")
    if not any(level.latencies for level in closed if level.concurrency == 1):
        raise ProfileError(
            f"the profile's closed-loop level at concurrency 1 completed no request ("
            f"{lowest.sent} sent): bench it again with `{bench} -c 1`")


def load_profiles(paths: Sequence[Path], latency: str = "e2e") -> Profile:
    """Read the profiles at ``paths`` as one: runs of one workload against one model (say,
    Poisson levels repeated with other arrival seeds), their levels planned from together; the
    SLO and sweep are the first's. Raises ``ProfileError`` when they lack a level the model
    needs (``require_model_levels``)."""
    profiles, workloads = [], set()
    for path in paths:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ProfileError(f"cannot read the profile {path}: {error}") from error
        profiles.append(parse_profile(raw, latency))
        workload = {key: value for key, value in (raw.get("workload") or {}).items() if key != "seed"}
        target = raw.get("target") or {}
        workloads.add(json.dumps([workload, target.get("model"), target.get("endpoint")], sort_keys=True))
    if len(workloads) > 1:
        raise ProfileError("the profiles measured different workloads or models: plan from each apart")
    merged = replace(profiles[0], levels=tuple(level for profile in profiles for level in profile.levels))
    require_model_levels(merged, _bench_command(target))
    return merged


def _bench_command(target: dict[str, Any]) -> str:
    """The start of the ``switchgear bench`` command line that measured ``target``."""
    url, model = target.get("url") or "URL", target.get("model") or "MODEL"
    endpoint = " --endpoint completions" if target.get("endpoint") == "completions" else ""
    return f"switchgear bench --url {url} --model {model}{endpoint}"
