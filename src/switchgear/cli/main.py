"""The `switchgear` command: thin; it parses arguments, builds a Config and calls the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from switchgear import __version__
from switchgear.cli.simulate import simulate
from switchgear.config import ConfigError, load_config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="switchgear")
def main() -> None:
    """Switchgear: an OpenAI-compatible AI inference gateway.

    Put it in front of any model server, or run it on its embedded CPU model, and every request
    is routed with fallbacks, measured, logged and costed.
    """


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="SWITCHGEAR_CONFIG", show_envvar=True,
              help="YAML config file. Without one: the embedded SmolLM2 model as 'smollm2'.")
@click.option("--host", help="Address to listen on (overrides server.host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (overrides server.port).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(config_path: Path | None, host: str | None, port: int | None, log_level: str) -> None:
    """Run the gateway: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models,
    /healthz, /readyz and /metrics."""
    from switchgear.gateway.server import serve as run_server  # heavy imports only when serving

    try:
        config = load_config(config_path)
        overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        if overrides:
            config = config.model_copy(update={"server": config.server.model_copy(update=overrides)})
        run_server(config, log_level)
    except ConfigError as error:
        click.echo(f"switchgear: invalid config: {error}", err=True)
        sys.exit(2)


@main.command()
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, envvar="SWITCHGEAR_URL",
              show_envvar=True, help="The running gateway's base URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON instead of a table.")
def routes(url: str, as_json: bool) -> None:
    """Show each deployment's routing state: healthy / ejected / probing, requests in flight,
    EWMA latency, error ratio and share of traffic (from GET /admin/routing)."""
    from switchgear.cli.routes import fetch_routing, render_routing

    try:
        report = fetch_routing(url)
    except OSError as error:
        click.echo(f"switchgear: cannot read {url}/admin/routing: {error}", err=True)
        sys.exit(1)
    click.echo(json.dumps(report, indent=2) if as_json else render_routing(report))


main.add_command(simulate)
