"""Is the planner right? Bench closed-loop levels, plan from that profile, then measure.

For each target (the simulator with a known slot count and speed; the embedded engine through
`switchgear serve` with its default config): `switchgear bench` runs closed-loop levels and writes a
profile; the planner's model (`switchgear.capacity.plan`, the same code `switchgear plan` runs)
predicts the highest Poisson arrival rate whose p95 meets an SLO and the p95 at two loads; then
`switchgear bench` measures them with Poisson arrivals (the highest rate by bisection on measured
p95). It prints predicted against measured, the error, and met/MISSED at 10%.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORK = HERE / ".work"
sys.path.append(str(HERE.parent / "overhead"))

from processes import Endpoint, ServiceProcess, free_port, wait_until_answers  # noqa: E402

from switchgear.capacity.machine import commit, cpu_model, load_average  # noqa: E402
from switchgear.capacity.plan.calibration import calibrate  # noqa: E402
from switchgear.capacity.plan.planner import PlanInputs, Targets, make_plan  # noqa: E402
from switchgear.capacity.plan.profile import parse_profile  # noqa: E402

TOLERANCE = 0.10
START_TIMEOUT_S = 180.0
BISECTION_LOW, BISECTION_HIGH = 0.3, 1.0


@dataclass(frozen=True)
class TargetSpec:
    """A server to plan for: how to start it, the model it serves, and how long each level runs
    (a slow server needs longer levels for as many samples)."""

    name: str
    model: str
    argv: Callable[[int], list[str]]
    concurrencies: tuple[int, ...]
    level_s: float
    open_level_s: float
    bisection_steps: int


def simulator_argv(port: int) -> list[str]:
    """The simulator: 8 slots, 20 ms to first token, 2 ms a token, slower under load."""
    return [sys.executable, "-m", "switchgear", "simulate", "--port", str(port), "--slots", "8",
            "--ttft-ms", "20", "--tpot-ms", "2", "--seed", "1"]


def engine_argv(port: int) -> list[str]:
    """`switchgear serve` with its default config: the embedded engine and SmolLM2."""
    return [sys.executable, "-m", "switchgear", "serve", "--port", str(port), "--log-level", "warning"]


TARGETS = {
    "simulator": TargetSpec("simulator", "sim", simulator_argv, (1, 2, 4, 8, 16), 10.0, 20.0, 5),
    "engine": TargetSpec("engine", "smollm2", engine_argv, (1, 2, 4, 8), 25.0, 40.0, 4),
}


@dataclass(frozen=True)
class Comparison:
    """One predicted figure against its measurement."""

    target: str
    figure: str
    predicted: float
    measured: float
    samples: int

    @property
    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted - self.measured) / self.measured

    @property
    def met(self) -> bool:
        """Whether the prediction is within the tolerance."""
        return abs(self.error) <= TOLERANCE


def bench_argv(base_url: str, model: str, out: Path, *, seconds: float,
               concurrencies: Sequence[int] = (), poisson_rate: float | None = None) -> list[str]:
    """The `switchgear bench` command for closed-loop levels or one Poisson level."""
    argv = [sys.executable, "-m", "switchgear", "bench", base_url, "--model", model,
            "--duration", f"{seconds:g}", "--json", str(out)]
    if concurrencies:
        argv += ["--concurrency", ",".join(str(n) for n in concurrencies)]
    if poisson_rate is not None:
        argv += ["--rate", f"{poisson_rate:.4f}", "--arrivals", "poisson"]
    return argv


def run_bench(argv: list[str]) -> dict[str, Any]:
    """Run bench (its progress goes to our stderr) and read the profile it wrote."""
    out = Path(argv[argv.index("--json") + 1])
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    document: dict[str, Any] = json.loads(out.read_text())
    return document


def measured_p95(document: dict[str, Any]) -> tuple[float, int]:
    """The p95 e2e latency of a one-level profile and its number of samples."""
    level = parse_profile(document).levels[-1]
    samples = sorted(level.latencies)
    index = max(0, round(0.95 * len(samples)) - 1)
    return samples[index], len(samples)


def open_level(spec: TargetSpec, base_url: str, rate: float, directory: Path) -> tuple[float, int]:
    """Measured p95 and samples of one Poisson level at ``rate``."""
    out = directory / f"{spec.name}-poisson-{rate:.3f}.json"
    return measured_p95(run_bench(bench_argv(base_url, spec.model, out, seconds=spec.open_level_s,
                                             poisson_rate=rate)))


def measured_max_rate(spec: TargetSpec, base_url: str, saturation: float, slo: float,
                      directory: Path) -> tuple[float, int]:
    """The highest Poisson rate whose measured p95 meets ``slo``, by bisection between
    30% and 100% of the saturation; the total samples it took."""
    low, high, samples = BISECTION_LOW * saturation, BISECTION_HIGH * saturation, 0
    for _ in range(spec.bisection_steps):
        middle = (low + high) / 2
        p95, count = open_level(spec, base_url, middle, directory)
        samples += count
        print(f"  {spec.name}: poisson {middle:.2f}/s -> p95 {p95:.3f} s "
              f"({'meets' if p95 <= slo else 'misses'} {slo:.3f} s)", file=sys.stderr, flush=True)
        low, high = (middle, high) if p95 <= slo else (low, middle)
    return (low + high) / 2, samples


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


def check_target(spec: TargetSpec, slo_at: float, loads: Sequence[float]) -> list[Comparison]:
    """Profile, plan and measure one target."""
    with tempfile.TemporaryDirectory(prefix=f"plan-{spec.name}-") as scratch:
        directory = Path(scratch)
        with running(spec, directory) as base_url:
            profile_doc = run_bench(bench_argv(base_url, spec.model, directory / "profile.json",
                                               seconds=spec.level_s, concurrencies=spec.concurrencies))
            profile = parse_profile(profile_doc)
            model = calibrate(profile).model
            saturation = model.saturation
            slo = model.percentile(slo_at * saturation, 0.95)
            plan = make_plan(profile, PlanInputs(Targets(peak_rate=saturation / 2, slo_p95_s=slo)))
            predicted_max = float(plan["predicted"]["max_rate_within_slo"])
            print(f"{spec.name}: saturation {saturation:.2f} req/s (closed loop, concurrency "
                  f"{model.n_max}); SLO p95 <= {slo:.3f} s (the model's p95 at {slo_at:.0%} of "
                  "saturation)", flush=True)
            comparisons = []
            for load in loads:
                p95, samples = open_level(spec, base_url, load * saturation, directory)
                comparisons.append(Comparison(spec.name, f"p95 at {load:.0%} of saturation (s)",
                                              model.percentile(load * saturation, 0.95), p95, samples))
            measured, samples = measured_max_rate(spec, base_url, saturation, slo, directory)
            comparisons.append(Comparison(spec.name, "highest rate within SLO (req/s)", predicted_max,
                                          measured, samples))
    return comparisons


def render(comparisons: Sequence[Comparison]) -> list[str]:
    """The table of predicted against measured, then met/MISSED per line."""
    from switchgear.cli.tables import table

    rows = [("target", "figure", "predicted", "measured", "error", "samples", "within 10%")]
    rows += [(c.target, c.figure, f"{c.predicted:.3f}", f"{c.measured:.3f}", f"{c.error:+.1%}",
              str(c.samples), "met" if c.met else "MISSED") for c in comparisons]
    return table(rows)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="simulator,engine", help="Targets, comma-separated.")
    parser.add_argument("--slo-at", type=float, default=0.75,
                        help="The SLO is the model's p95 at this share of saturation.")
    parser.add_argument("--loads", default="0.5,0.8", help="Shares of saturation to measure p95 at.")
    parser.add_argument("--json", type=Path, default=WORK / "results" / "latest.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    names = [name.strip() for name in arguments.only.split(",") if name.strip()]
    loads = [float(load) for load in arguments.loads.split(",")]
    print(f"Method: {cpu_model()}, {os.cpu_count()} cores, load average {load_average()} at start; "
          f"commit {commit(REPO)}. Per target: switchgear bench closed-loop levels -> profile; the "
          "planner's model (switchgear.capacity.plan) predicts; switchgear bench Poisson levels "
          f"measure p95 at {loads} of the modelled saturation and the highest rate within the SLO "
          f"(bisection on measured p95 between {BISECTION_LOW:.0%} and {BISECTION_HIGH:.0%} of it).",
          flush=True)
    comparisons = [c for name in names for c in check_target(TARGETS[name], arguments.slo_at, loads)]
    print(f"load average at end: {load_average()}")
    for line in render(comparisons):
        print(line)
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps([{**c.__dict__, "error": c.error, "met": c.met}
                                          for c in comparisons], indent=2))
    return 0 if all(c.met for c in comparisons) else 1


if __name__ == "__main__":
    sys.exit(main())
