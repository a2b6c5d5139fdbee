"""``switchgear plan``: a capacity plan from a ``switchgear bench`` profile (or the request log)
and targets."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from switchgear.cli.options import window_option
from switchgear.config import ConfigError, load_config

if TYPE_CHECKING:
    from switchgear.capacity.plan.profile import Profile

_POSITIVE = click.FloatRange(min=0, min_open=True)
_SHARE = click.FloatRange(0, 1, min_open=True)


@click.command("plan")
@click.option("--profile", "profile_paths", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The JSON profile 'switchgear bench --json' wrote (closed-loop levels, and "
                   "Poisson levels to calibrate on). Repeat it for more runs of the same workload, "
                   "e.g. Poisson levels again with another --seed: their levels count together.")
@click.option("--from-log", is_flag=True,
              help="Calibrate on the request log instead of a profile: the store of --config, "
                   "the requests of --deployment (and/or --model) over --since, grouped by how "
                   "many requests the deployment held while each ran.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="SWITCHGEAR_CONFIG", show_envvar=True,
              help="With --from-log: the YAML config whose store holds the log.")
@click.option("--since", "window_s", default="7d", show_default=True, callback=window_option,
              help="With --from-log: how far back the log is read (7d, 12h, ...).")
@click.option("--model", help="With --from-log: only requests for this model alias.")
@click.option("--deployment", help="With --from-log: only requests this deployment served.")
@click.option("--peak-rate", required=True, type=_POSITIVE, help="Peak requests/s to plan for.")
@click.option("--growth", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Expected growth on the peak (0.5 = +50%).")
@click.option("--slo-p95", type=_POSITIVE, help="p95 latency target, seconds (default: the profile's).")
@click.option("--slo-p99", type=_POSITIVE, help="p99 latency target, seconds.")
@click.option("--slo-error-rate", type=click.FloatRange(0, 1), help="Highest share of failed requests.")
@click.option("--latency", default="e2e", show_default=True, type=click.Choice(["e2e", "ttft"]),
              help="Which latency the SLO is on.")
@click.option("--target-utilization", default=0.7, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of each instance's saturation throughput to plan for.")
@click.option("--price-per-instance-hour", type=click.FloatRange(min=0), help="Price of an instance-hour.")
@click.option("--price-per-million-tokens", type=click.FloatRange(min=0),
              help="Price per million tokens (input + output), for token-priced upstreams.")
@click.option("--kw-per-instance", type=click.FloatRange(min=0), help="Power draw of one instance, kW.")
@click.option("--pue", default=1.0, show_default=True, type=click.FloatRange(min=1),
              help="Power usage effectiveness of the facility.")
@click.option("--pipeline-feed", type=_SHARE,
              help="Share of accelerator capacity the input pipeline keeps fed (0.6 = 60%).")
@click.option("--memory-per-instance-gb", type=_POSITIVE, help="Memory for KV cache per instance, GB.")
@click.option("--kv-mb-per-1k-tokens", type=_POSITIVE, help="KV cache per 1,000 tokens of context, MB.")
@click.option("--network-gbps", type=_POSITIVE, help="Network link all instances share, Gbit/s.")
@click.option("--bytes-per-request", type=_POSITIVE,
              help="Bytes on the wire per request (default: estimated from the token counts).")
@click.option("--upstream-rpm", type=_POSITIVE, help="An upstream's limit in requests per minute.")
@click.option("--upstream-tpm", type=_POSITIVE, help="An upstream's limit in tokens per minute.")
@click.option("--slots", type=click.IntRange(min=1),
              help="Requests one instance serves at once (e.g. llama-server --parallel, vLLM "
                   "max_num_seqs); beyond them requests wait. Default: the lowest benched "
                   "concurrency whose throughput is within 3% of the highest.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the plan as JSON to this file ('-': stdout instead of the table).")
@click.option("--markdown", is_flag=True, help="Print Markdown instead of the text table.")
@click.option("--force", is_flag=True,
              help="Plan even where the profile contradicts the model (an open-loop level not "
                   "served below the modelled saturation, a p95 off at a measured rate, an SLO "
                   "percentile its samples cannot resolve): each refusal is printed as a warning.")
def plan(profile_paths: tuple[Path, ...], from_log: bool, config_path: Path | None, window_s: float,
         model: str | None, deployment: str | None, peak_rate: float, growth: float, slo_p95: float | None,
         slo_p99: float | None, slo_error_rate: float | None, latency: str,
         target_utilization: float, price_per_instance_hour: float | None,
         price_per_million_tokens: float | None, kw_per_instance: float | None, pue: float,
         pipeline_feed: float | None, memory_per_instance_gb: float | None,
         kv_mb_per_1k_tokens: float | None, network_gbps: float | None,
         bytes_per_request: float | None, upstream_rpm: float | None, upstream_tpm: float | None,
         slots: int | None, json_path: Path | None, markdown: bool, force: bool) -> None:
    """Plan capacity from a bench profile (or the request log): instances, expected p95/p99,
    utilization, cost, power, what limits scaling first and the spend a starved data pipeline
    wastes."""
    # Imported here so that other commands do not load numpy.
    from switchgear.capacity.plan.limits import Resources
    from switchgear.capacity.plan.planner import Economics, PlanError, PlanInputs, Targets, make_plan
    from switchgear.capacity.plan.profile import ProfileError, load_profiles
    from switchgear.capacity.plan.report import render_markdown, render_text

    if bool(profile_paths) == from_log:
        raise click.UsageError("give one source: --profile FILE or --from-log")
    if price_per_instance_hour is not None and price_per_million_tokens is not None:
        raise click.UsageError("give one price: --price-per-instance-hour or --price-per-million-tokens")
    inputs = PlanInputs(
        targets=Targets(peak_rate, growth, slo_p95, slo_p99, slo_error_rate, target_utilization),
        economics=Economics(price_per_instance_hour, price_per_million_tokens, kw_per_instance, pue,
                            pipeline_feed),
        resources=Resources(memory_per_instance_gb, kv_mb_per_1k_tokens, network_gbps, upstream_rpm,
                            upstream_tpm),
        bytes_per_request=bytes_per_request, slots=slots, force=force)
    try:
        if profile_paths:
            profile = load_profiles(profile_paths, latency)
        else:
            profile = _log_profile(config_path, window_s, model, deployment, latency)
        result = make_plan(profile, inputs)
    except (ProfileError, PlanError, ConfigError) as error:
        click.echo(f"switchgear plan: {error}", err=True)
        sys.exit(1)
    document = json.dumps(result, indent=2)
    if json_path is not None and str(json_path) == "-":
        click.echo(document)
        return
    if json_path is not None:
        json_path.write_text(document + "\n")
    click.echo(render_markdown(result) if markdown else render_text(result))


def _log_profile(config_path: Path | None, window_s: float, model: str | None,
                 deployment: str | None, latency: str) -> Profile:
    from switchgear.capacity.plan.requestlog import LogQuery, load_log_profile

    if model is None and deployment is None:
        raise click.UsageError("--from-log needs --deployment (or --model): one instance's requests")
    now = time.time()
    store_url = load_config(config_path).store.url
    return load_log_profile(store_url, LogQuery(now - window_s, now, model, deployment), latency)
