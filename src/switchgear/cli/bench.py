"""``switchgear bench``: load-test any OpenAI-compatible URL and write its profile."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from switchgear.capacity.bench.load import CONCURRENCY, CONSTANT, POISSON, Level
from switchgear.capacity.bench.workload import CHAT, COMPLETIONS, Lengths

_SECONDS = click.FloatRange(min=0, min_open=True)


def _lengths(ctx: click.Context, param: click.Parameter, value: str) -> Lengths:
    try:
        return Lengths.parse(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


@click.command("bench")
@click.option("--url", required=True, metavar="BASE_URL",
              help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1.")
@click.option("--model", required=True, help="Model name sent in every request.")
@click.option("--endpoint", "operation", type=click.Choice([CHAT, COMPLETIONS]), default=CHAT,
              show_default=True, help="Chat completions or (text) completions.")
@click.option("--api-key", envvar="OPENAI_API_KEY", default=None,
              help="Bearer token (default: $OPENAI_API_KEY).")
@click.option("--stream/--no-stream", default=True, show_default=True,
              help="Stream answers (needed for TTFT, ITL and TPOT).")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), multiple=True,
              help="Closed loop: keep N requests outstanding. Repeat for several levels.")
@click.option("--rate", "-r", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Open loop: N arrivals per second. Repeat for several levels.")
@click.option("--arrival", type=click.Choice([CONSTANT, POISSON]), default=POISSON,
              show_default=True, help="Open-loop arrivals: evenly spaced or Poisson.")
@click.option("--sweep", is_flag=True,
              help="Measure saturation, then rates below it; report the highest within SLO.")
@click.option("--sweep-concurrency", type=click.IntRange(min=1), default=64, show_default=True,
              help="Highest concurrency of the sweep's closed-loop levels (1, 2, 4, ... up to "
                   "it, until throughput stops rising).")
@click.option("--sweep-rates", type=click.IntRange(min=1), default=8, show_default=True,
              help="Open-loop rates the sweep tries, evenly spaced up to saturation.")
@click.option("--refine", type=click.IntRange(min=0), default=2, show_default=True,
              help="Bisection steps between the best passing and the next failing rate.")
@click.option("--duration", type=_SECONDS, default=20.0, show_default=True,
              help="Measured seconds per level.")
@click.option("--warmup", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds per level before measuring (run, not counted).")
@click.option("--input-tokens", default="128", callback=_lengths, show_default=True,
              metavar="LENGTHS",
              help="Prompt lengths: MEAN or DIST:MEAN[:SPREAD], DIST one of fixed, uniform, "
                   "normal, lognormal (e.g. lognormal:128:0.5).")
@click.option("--output-tokens", default="32", callback=_lengths, show_default=True,
              metavar="LENGTHS",
              help="max_tokens per request, same form as --input-tokens.")
@click.option("--ignore-eos", is_flag=True,
              help="Ask the server to generate exactly max_tokens (vLLM's ignore_eos and "
                   "min_tokens; the simulator honours it).")
@click.option("--prompts", type=click.IntRange(min=1), default=256, show_default=True,
              help="Distinct synthetic prompts, sent in turn.")
@click.option("--jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Prompts from a JSONL file: {\"prompt\": ...} or {\"messages\": [...]}, "
                   "optionally \"max_tokens\" (else drawn from --output-tokens).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of prompts, lengths and Poisson arrivals.")
@click.option("--slo-e2e-p95", type=_SECONDS, default=None, help="SLO: p95 end-to-end, seconds.")
@click.option("--slo-ttft-p95", type=_SECONDS, default=None, help="SLO: p95 TTFT, seconds.")
@click.option("--slo-tpot-p95", type=_SECONDS, default=None, help="SLO: p95 TPOT, seconds.")
@click.option("--max-error-rate", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="SLO: largest share of failed requests.")
@click.option("--max-connections", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Open loop: connections at most; requests beyond wait (and the wait counts).")
@click.option("--timeout", type=_SECONDS, default=60.0, show_default=True,
              help="Seconds before a request counts as a timeout.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the profile (what `switchgear plan` reads) here.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one CSV row per level here.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an HTML report with plots here.")
def bench(url: str, model: str, operation: str, api_key: str | None, stream: bool,
          concurrency: tuple[int, ...], rate: tuple[float, ...], arrival: str, sweep: bool,
          sweep_concurrency: int, sweep_rates: int, refine: int, duration: float,
          warmup: float, input_tokens: Lengths, output_tokens: Lengths, ignore_eos: bool,
          prompts: int, jsonl: Path | None, seed: int, slo_e2e_p95: float | None,
          slo_ttft_p95: float | None, slo_tpot_p95: float | None, max_error_rate: float,
          max_connections: int, timeout: float, json_path: Path | None,
          csv_path: Path | None, html_path: Path | None) -> None:
    """Load-test an OpenAI-compatible server (Switchgear or a model server directly).

    Closed loop (--concurrency), open loop (--rate, constant or Poisson arrivals, latency counted
    from each request's scheduled send time) or --sweep for the highest rate within the SLOs.
    Prints a table; --json/--csv/--html write the profile, a CSV and a report. bench watches
    itself: a level where it kept a core busy, or fell behind (its event loop, or its sends
    against the schedule), is marked SATURATED with the reason: its figures there measure the
    client, not the server. Refuses (exit 2)
    a target that does not serve --model; a level whose every answer is the same client error
    (401, 404, ...) stops early, and the run with it (exit 1).

    \b
    Example:
      switchgear bench --url http://127.0.0.1:8080/v1 --model sim --sweep \\
        --slo-e2e-p95 0.5 --json profile.json --html report.html
    """
    import uvloop

    from switchgear.capacity.bench.figures import SLO
    from switchgear.capacity.bench.outputs import csv_text, html_report, text_table
    from switchgear.capacity.bench.preflight import TargetRefused
    from switchgear.capacity.bench.progress import ProgressBar
    from switchgear.capacity.bench.runner import Bench, Sweep, Target
    from switchgear.capacity.bench.workload import from_jsonl, synthetic

    if not (concurrency or rate or sweep):
        raise click.UsageError("give --concurrency, --rate or --sweep")
    if sweep and (concurrency or rate):
        raise click.UsageError("--sweep chooses its own levels: drop --concurrency and --rate")
    try:
        workload = (from_jsonl(jsonl, output_tokens, seed) if jsonl
                    else synthetic(input_tokens, output_tokens, prompts, seed))
        runner = Bench(Target(url, model, operation, stream, api_key, ignore_eos,
                              max_connections, timeout), workload,
                       SLO(slo_ttft_p95, slo_e2e_p95, slo_tpot_p95, max_error_rate), seed,
                       ProgressBar())
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        warning = uvloop.run(runner.check_target())
    except TargetRefused as error:
        click.echo(f"switchgear bench: {error}", err=True)
        sys.exit(2)
    if warning:
        click.echo(f"switchgear bench: {warning}", err=True)
    levels = [Level(CONCURRENCY, duration, warmup, concurrency=n) for n in concurrency]
    levels += [Level(arrival, duration, warmup, rate=r) for r in rate]
    if sweep:
        plan = Sweep(sweep_concurrency, sweep_rates, arrival, refine, duration, warmup)
        profile = uvloop.run(runner.sweep(plan))
    else:
        profile = uvloop.run(runner.levels(levels))
    click.echo("\n".join(text_table(profile)))
    if json_path:
        json_path.write_text(json.dumps(profile, indent=1) + "\n")
    if csv_path:
        csv_path.write_text(csv_text(profile))
    if html_path:
        html_path.write_text(html_report(profile))
    stopped = [level for level in profile["levels"] if level.get("stopped")]
    if stopped:
        click.echo(f"switchgear bench: stopped at {stopped[0]['label']}, the levels after it not "
                   f"run: {stopped[0]['stopped']}", err=True)
        sys.exit(1)
    if not all(level["completed"] for level in profile["levels"]):
        click.echo("switchgear bench: a level completed no request", err=True)
        sys.exit(1)
