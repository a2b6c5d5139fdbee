"""Is the planner right? Bench a profile, plan from it, then measure.

For each target (the simulator with a known slot count and speed; the embedded engine through
`switchgear serve` with its default config): `switchgear bench` runs closed-loop levels and
Poisson levels at 50% and 80% of their modelled saturation (``--calibrate-at``) and writes a profile; the
planner's model (`switchgear.capacity.plan`, the same code `switchgear plan` runs: the closed-loop
levels give its shape, the Poisson levels its time scale) predicts the highest Poisson arrival
rate whose p95 meets an SLO and the p95 at two other loads; then
`switchgear bench` measures them with Poisson arrivals. The measured highest rate within the SLO
is where the measured p95 crosses it: Poisson levels at 0.9x and 1.1x the predicted rate (and
further out while both land on one side), the crossing interpolated between the two levels around
it. Levels a p95 is read from are long and start after a warm-up long enough for the queue to
settle (a short level at 95% of saturation starts empty and ends before the queue builds, so it
"meets" an SLO it would miss in steady state). It prints predicted against measured, the error,
and met/MISSED at 10%, with the standard error of each measurement (batch means: a level's
requests in time order cut into six batches; the spread of their p95s over sqrt(6)), the noise a
single level's p95 carries.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORK = HERE / ".work"
sys.path.append(str(HERE.parent / "overhead"))

from processes import Endpoint, ServiceProcess, free_port, wait_until_answers  # noqa: E402

from switchgear.capacity.bench.figures import percentile  # noqa: E402
from switchgear.capacity.machine import commit, cpu_model, load_average  # noqa: E402
from switchgear.capacity.plan.calibration import calibrate  # noqa: E402
from switchgear.capacity.plan.planner import PlanInputs, Targets, make_plan  # noqa: E402
from switchgear.capacity.plan.profile import parse_profile  # noqa: E402

TOLERANCE = 0.10
BATCHES = 6
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class TargetSpec:
    """A server to plan for: how to start it, the model it serves, its slots (requests it serves
    at once), the closed-loop levels that profile it, and seconds per level (a slow server needs
    longer levels for as many samples; ``poisson_s`` and ``poisson_warmup_s`` for the levels a
    p95 is measured on)."""

    name: str
    model: str
    argv: Callable[[int], list[str]]
    slots: int
    concurrencies: tuple[int, ...]
    level_s: float
    poisson_s: float
    warmup_s: float
    poisson_warmup_s: float
    input_tokens: int
    output_tokens: int


def simulator_argv(port: int) -> list[str]:
    """The simulator: 8 slots, 20 ms to first token, 2 ms a token, slower under load."""
    return [sys.executable, "-m", "switchgear", "simulate", "--port", str(port), "--slots", "8",
            "--ttft-ms", "20", "--tpot-ms", "2", "--seed", "1"]


def engine_argv(port: int) -> list[str]:
    """`switchgear serve` with its default config: the embedded engine and SmolLM2."""
    return [sys.executable, "-m", "switchgear", "serve", "--port", str(port), "--log-level", "warning"]


TARGETS = {
    "simulator": TargetSpec("simulator", "sim", simulator_argv, 8, (1, 2, 4, 8, 16), 10.0, 60.0, 2.0,
                            5.0, 128, 32),
    "engine": TargetSpec("engine", "smollm2", engine_argv, 8, (1, 2, 4, 8), 60.0, 360.0, 3.0, 20.0,
                         16, 8),
}


@dataclass(frozen=True)
class Comparison:
    """One predicted figure against its measurement (and the requests measured for it)."""

    target: str
    figure: str
    predicted: float
    measured: float
    samples: int
    noise: float | None = None  # standard error of the measurement, relative to it

    @property
    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted - self.measured) / self.measured

    @property
    def met(self) -> bool:
        """Whether the prediction is within the tolerance."""
        return abs(self.error) <= TOLERANCE


class Bench:
    """`switchgear bench` against one running target, each call writing a profile in ``directory``."""

    def __init__(self, spec: TargetSpec, base_url: str, directory: Path) -> None:
        self.spec, self.base_url, self.directory = spec, base_url, directory
        self.calls = 0

    def run(self, *level_args: str, poisson: bool = False) -> dict[str, Any]:
        """Run bench with ``level_args`` (``poisson``: with the timing of the levels a p95 is read
        from), its progress bar on our stderr; the profile it wrote."""
        self.calls += 1
        out = self.directory / f"{self.spec.name}-{self.calls}.json"
        argv = [sys.executable, "-m", "switchgear", "bench", "--url", self.base_url,
                "--model", self.spec.model, "--input-tokens", str(self.spec.input_tokens),
                "--output-tokens", str(self.spec.output_tokens), "--ignore-eos",
                "--duration", f"{self.spec.poisson_s if poisson else self.spec.level_s:g}",
                "--warmup", f"{self.spec.poisson_warmup_s if poisson else self.spec.warmup_s:g}",
                "--json", str(out), *level_args]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        document: dict[str, Any] = json.loads(out.read_text())
        return document

    def closed_loop(self) -> dict[str, Any]:
        """The profile: one closed-loop level per concurrency."""
        return self.run(*(arg for n in self.spec.concurrencies for arg in ("-c", str(n))))

    def poisson_p95(self, rates: Sequence[float]) -> list[Measured]:
        """The e2e p95 measured by a Poisson level at each rate."""
        document = self.run("--arrival", "poisson", *(arg for r in rates for arg in ("-r", f"{r:.4f}")),
                            poisson=True)
        return [Measured.of(level) for level in document["levels"]]

    def highest_rate(self, slo: float, predicted: float, saturation: float) -> tuple[Measured, int]:
        """Where the measured p95 crosses ``slo`` (with its standard error, from the p95s'),
        and the requests it took: Poisson levels at 0.9x and 1.1x ``predicted``, then 20%
        further out (up to 2 more, never at or beyond ``saturation``) while every level lands
        on one side; linear between the two levels around the crossing."""
        rates = [0.9 * predicted, 1.1 * predicted]
        p95s: dict[float, Measured] = {}
        while rates:
            p95s.update(zip(rates, self.poisson_p95(rates), strict=True))
            passed = [rate for rate, p95 in p95s.items() if p95.value <= slo]
            failed = [rate for rate, p95 in p95s.items() if p95.value > slo]
            if len(p95s) >= 4 or (passed and failed):
                break
            further = max(p95s) * 1.2 if passed else min(p95s) / 1.2
            rates = [further] if further < saturation else []
        return crossing(p95s, slo), sum(p95.samples for p95 in p95s.values())


@dataclass(frozen=True)
class Measured:
    """A figure measured on Poisson levels: its value, requests, and standard error relative to
    the value (None where too few requests for batch means)."""

    value: float
    samples: int
    noise: float | None

    @classmethod
    def of(cls, level: dict[str, Any]) -> Measured:
        """The e2e p95 of one level of a bench profile."""
        samples = level["samples"]
        latencies = [e2e for _, e2e in sorted(zip(samples["scheduled_at"], samples["e2e"], strict=True))]
        p95 = level["latency_s"]["e2e"]["p95"]
        if len(latencies) < 10 * BATCHES or not p95:
            return cls(p95, level["completed"], None)
        size = len(latencies) / BATCHES
        batches = [percentile(sorted(latencies[round(i * size):round((i + 1) * size)]), 95)
                   for i in range(BATCHES)]
        return cls(p95, level["completed"], statistics.stdev(batches) / BATCHES ** 0.5 / p95)


def crossing(p95s: dict[float, Measured], slo: float) -> Measured:
    """The rate where p95 reaches ``slo``, linear between the highest rate within it and the
    next rate above (its standard error from theirs); the highest rate within it when none
    above misses it, 0 when none is within."""
    passed = [rate for rate, p95 in p95s.items() if p95.value <= slo]
    samples = sum(p95.samples for p95 in p95s.values())
    if not passed:
        return Measured(0.0, samples, None)
    low = max(passed)
    above = [rate for rate in p95s if rate > low]
    if not above:
        return Measured(low, samples, None)
    high = min(above)
    below_p95, above_p95 = p95s[low], p95s[high]
    span = above_p95.value - below_p95.value
    rate = low + (slo - below_p95.value) / span * (high - low)
    if below_p95.noise is None or above_p95.noise is None:
        return Measured(rate, samples, None)
    # d rate / d p95 at each end, times that end's absolute standard error
    from_below = (high - low) * (above_p95.value - slo) / span ** 2 * below_p95.noise * below_p95.value
    from_above = (high - low) * (slo - below_p95.value) / span ** 2 * above_p95.noise * above_p95.value
    return Measured(rate, samples, (from_below ** 2 + from_above ** 2) ** 0.5 / rate)


@contextlib.contextmanager
def running(spec: TargetSpec, directory: Path) -> Iterator[str]:
    """Start the target in ``directory``; yield its /v1 base URL once it answers."""
    port = free_port()
    process = ServiceProcess(spec.name, spec.argv(port), WORK / "logs" / f"{spec.name}.log",
                             {**os.environ, "PYTHONPATH": str(REPO / "src")}, directory)
    endpoint = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", spec.model,
                        {"Content-Type": "application/json"})
    body = json.dumps(endpoint.body({"messages": [{"role": "user", "content": "hi"}],
                                     "max_tokens": 4})).encode()
    with process:
        wait_until_answers(endpoint, body, process, START_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}/v1"


def check_target(spec: TargetSpec, slo_at: float, loads: Sequence[float],
                 calibrate_at: Sequence[float]) -> list[Comparison]:
    """Profile one target, plan from the profile, then measure what the plan predicts."""
    directory = WORK / spec.name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    with running(spec, directory) as base_url:
        bench = Bench(spec, base_url, directory)
        document = bench.closed_loop()
        closed = calibrate(parse_profile(document), spec.slots).model.saturation
        if calibrate_at:
            poisson = bench.run("--arrival", "poisson", *(arg for share in calibrate_at
                                                          for arg in ("-r", f"{share * closed:.4f}")),
                                poisson=True)
            document = {**document, "levels": document["levels"] + poisson["levels"]}
        profile = parse_profile(document)
        model = calibrate(profile, spec.slots).model
        saturation = model.saturation
        slo = model.percentile(slo_at * saturation, 0.95)
        plan = make_plan(profile, PlanInputs(Targets(peak_rate=saturation / 2, slo_p95_s=slo),
                                             slots=spec.slots))
        scales = ", ".join(f"{scale:.3f} at {rate:.2f} req/s" for rate, scale in model.time_scales)
        print(f"{spec.name}: {spec.input_tokens} prompt and {spec.output_tokens} output tokens, "
              f"{spec.level_s:g} s per level ({spec.poisson_s:g} s for a p95); {spec.slots} slots, "
              f"saturation {saturation:.2f} req/s (closed loop up to concurrency {model.n_max}: "
              f"{closed:.2f}; time scale {scales or 'none'}); "
              f"SLO p95 <= {slo:.3f} s (the model's p95 at {slo_at:.0%} of saturation)", flush=True)
        rates = [load * saturation for load in loads]
        comparisons = [Comparison(spec.name, f"p95 at {load:.0%} of saturation (s)",
                                  model.percentile(rate, 0.95), p95.value, p95.samples, p95.noise)
                       for load, rate, p95 in zip(loads, rates, bench.poisson_p95(rates), strict=True)]
        predicted = float(plan["predicted"]["max_rate_within_slo"])
        measured, samples = bench.highest_rate(slo, predicted, saturation)
        comparisons.append(Comparison(spec.name, "highest rate within SLO (req/s)",
                                      predicted, measured.value, samples, measured.noise))
    return comparisons


def render(comparisons: Sequence[Comparison]) -> list[str]:
    """The table of predicted against measured, then met/MISSED per line."""
    from switchgear.cli.tables import table

    rows = [("target", "figure", "predicted", "measured", "measured SE", "error", "samples",
             "within 10%")]
    rows += [(c.target, c.figure, f"{c.predicted:.3f}", f"{c.measured:.3f}",
              "-" if c.noise is None else f"±{c.noise:.1%}", f"{c.error:+.1%}", str(c.samples),
              "met" if c.met else "MISSED") for c in comparisons]
    return table(rows)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="simulator,engine", help="Targets, comma-separated.")
    parser.add_argument("--slo-at", type=float, default=0.75,
                        help="The SLO is the model's p95 at this share of saturation.")
    parser.add_argument("--loads", default="0.5,0.8", help="Shares of saturation to measure p95 at.")
    parser.add_argument("--calibrate-at", default="0.5,0.8",
                        help="Shares of the closed-loop saturation to add Poisson levels to the "
                             "profile at (empty: closed-loop levels only).")
    parser.add_argument("--level-seconds", type=float,
                        help="Measured seconds per level for every target (default: each target's).")
    parser.add_argument("--poisson-seconds", type=float,
                        help="Measured seconds of each Poisson level a p95 is compared on, likewise.")
    parser.add_argument("--warmup-seconds", type=float, help="Warm-up seconds per level, likewise.")
    parser.add_argument("--poisson-warmup-seconds", type=float,
                        help="Warm-up seconds of each Poisson level a p95 is compared on, likewise.")
    parser.add_argument("--json", type=Path, default=WORK / "results" / "latest.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    names = [name.strip() for name in arguments.only.split(",") if name.strip()]
    loads = [float(load) for load in arguments.loads.split(",")]
    calibrate_at = [float(share) for share in arguments.calibrate_at.split(",") if share.strip()]
    print(f"Method: {cpu_model()}, {os.cpu_count()} cores, load average {load_average()} at start; "
          f"commit {commit(REPO)}. Per target: switchgear bench closed-loop levels and Poisson at "
          f"{calibrate_at} of their saturation -> profile; the "
          "planner's model (switchgear.capacity.plan) predicts; switchgear bench Poisson levels "
          f"measure p95 at {loads} of the modelled saturation and at rates around the predicted "
          "highest rate within the SLO (measured: where the measured p95 crosses it). Requests: "
          "chat, streamed, fixed prompt and output tokens (ignore_eos) per target.",
          flush=True)
    specs = [replace(TARGETS[name], level_s=arguments.level_seconds or TARGETS[name].level_s,
                     poisson_s=arguments.poisson_seconds or TARGETS[name].poisson_s,
                     poisson_warmup_s=arguments.poisson_warmup_seconds or TARGETS[name].poisson_warmup_s,
                     warmup_s=arguments.warmup_seconds or TARGETS[name].warmup_s) for name in names]
    comparisons = [c for spec in specs
                   for c in check_target(spec, arguments.slo_at, loads, calibrate_at)]
    print(f"load average at end: {load_average()}")
    for line in render(comparisons):
        print(line)
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps([{**c.__dict__, "error": c.error, "met": c.met}
                                          for c in comparisons], indent=2))
    return 0 if all(c.met for c in comparisons) else 1


if __name__ == "__main__":
    sys.exit(main())
