"""The bench profile as the planner reads it: the JSON ``switchgear bench --json`` writes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

CLOSED_LOOP = "concurrency"


class ProfileError(ValueError):
    """The profile cannot be planned from (unreadable, or without the levels a model needs)."""


@dataclass(frozen=True)
class Level:
    """One measured load level: closed loop at a concurrency, or open loop at a target rate."""

    mode: str
    concurrency: int | None
    rate: float | None
    request_rate: float
    sent: int
    completed: int
    latencies: tuple[float, ...]
    input_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]

    @property
    def error_share(self) -> float:
        """Share of the requests sent that did not complete."""
        return (self.sent - self.completed) / self.sent if self.sent else 0.0


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


def _level(raw: dict[str, Any], latency: str) -> Level:
    samples = raw.get("samples") or {}
    latencies = tuple(float(x) for x in samples.get(latency) or () if x is not None)
    return Level(mode=str(raw["mode"]), concurrency=raw.get("concurrency"), rate=raw.get("rate"),
                 request_rate=float(raw["request_rate"]), sent=int(raw.get("sent") or 0),
                 completed=int(raw.get("completed") or 0), latencies=latencies,
                 input_tokens=tuple(int(t) for t in samples.get("input_tokens") or ()),
                 output_tokens=tuple(int(t) for t in samples.get("output_tokens") or ()))


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
