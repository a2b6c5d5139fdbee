"""``switchgear simulate``: run the OpenAI-compatible model-server simulator."""

from __future__ import annotations

import click

from switchgear.simulator.faults import Faults
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import serve_simulator

_RATE = click.FloatRange(0.0, 1.0)


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--model", default="sim", show_default=True, help="Model name /v1/models lists.")
@click.option("--slots", default=8, show_default=True, type=click.IntRange(min=1),
              help="Sequences generated at once; more requests wait in a FIFO queue.")
@click.option("--ttft-ms", default=20.0, show_default=True, type=click.FloatRange(min=0),
              help="Time to first token on an idle server, in milliseconds.")
@click.option("--tpot-ms", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="Time per further output token on an idle server, in milliseconds.")
@click.option("--load-factor", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="How much slower a step gets with every slot busy (0 = not at all).")
@click.option("--mean-output-tokens", default=32, show_default=True, type=click.IntRange(min=1),
              help="Mean of the lognormal output-length distribution (clipped to max_tokens).")
@click.option("--context-window", default=8192, show_default=True, type=click.IntRange(min=1),
              help="Prompt plus max_tokens above this is refused as context_length_exceeded.")
@click.option("--embedding-dimension", default=64, show_default=True,
              type=click.IntRange(min=1), help="Length of the embedding vectors.")
@click.option("--seed", default=None, type=int,
              help="Seed of output lengths and fault draws (default: a random seed).")
@click.option("--api-key", default=None, envvar="SWITCHGEAR_SIM_API_KEY",
              help="Require 'Authorization: Bearer <key>' on /v1 requests.")
@click.option("--error-rate", default=0.0, type=_RATE,
              help="Share of requests answered with --error-status.")
@click.option("--error-status", default=500, show_default=True, type=click.IntRange(400, 599),
              help="HTTP status of injected errors.")
@click.option("--spike-rate", default=0.0, type=_RATE,
              help="Share of requests delayed by --spike-ms.")
@click.option("--spike-ms", default=1000.0, show_default=True, type=click.FloatRange(min=0),
              help="Length of a latency spike, in milliseconds.")
@click.option("--hang-rate", default=0.0, type=_RATE,
              help="Share of requests never answered (until the client gives up).")
@click.option("--reset-rate", default=0.0, type=_RATE,
              help="Share of connections reset before any response byte.")
@click.option("--disconnect-rate", default=0.0, type=_RATE,
              help="Share of streams cut after a few chunks, without [DONE].")
@click.option("--refusal-rate", default=0.0, type=_RATE,
              help="Share of answers replaced by \"I'm sorry, but I can't help with that.\"")
@click.option("--output-factor", default=1.0, show_default=True,
              type=click.FloatRange(0, 1, min_open=True),
              help="Answers are this share of their drawn length (1: unchanged).")
def simulate(
    host: str,
    port: int,
    model: str,
    slots: int,
    ttft_ms: float,
    tpot_ms: float,
    load_factor: float,
    mean_output_tokens: int,
    context_window: int,
    embedding_dimension: int,
    seed: int | None,
    api_key: str | None,
    error_rate: float,
    error_status: int,
    spike_rate: float,
    spike_ms: float,
    hang_rate: float,
    reset_rate: float,
    disconnect_rate: float,
    refusal_rate: float,
    output_factor: float,
) -> None:
    """Run an OpenAI-compatible model-server simulator (faults can be changed at run time
    through GET/POST /admin/faults)."""
    options = ModelOptions(
        model=model,
        slots=slots,
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
        load_factor=load_factor,
        mean_output_tokens=mean_output_tokens,
        context_window=context_window,
        embedding_dimension=embedding_dimension,
        seed=seed,
    )
    faults = Faults(
        error_rate=error_rate,
        error_status=error_status,
        spike_rate=spike_rate,
        spike_ms=spike_ms,
        hang_rate=hang_rate,
        reset_rate=reset_rate,
        disconnect_rate=disconnect_rate,
        refusal_rate=refusal_rate,
        output_factor=output_factor,
    )
    click.echo(f"switchgear simulator: model {model!r} on http://{host}:{port}/v1", err=True)
    serve_simulator(options, faults, host=host, port=port, api_key=api_key)
