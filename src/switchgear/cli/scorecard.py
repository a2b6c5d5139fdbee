"""``switchgear scorecard``: score the AI infrastructure from the config, records and a plan."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import get_args

import click

from switchgear.cli.options import window_option
from switchgear.config import ConfigError, load_config
from switchgear.scorecard.report import Format


@click.command("scorecard")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="SWITCHGEAR_CONFIG", show_envvar=True,
              help="YAML config file; its store's live config version is scored when there is "
              "one. Without one: the built-in default config and store.")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A `switchgear plan --json` file (utilization, cost, power, pipeline).")
@click.option("--since", "window_s", default="30d", show_default=True, callback=window_option,
              help="How far back the records are read (30d, 12h, 2w, ...).")
@click.option("--format", "output_format", default="text", show_default=True,
              type=click.Choice(get_args(Format)), help="Output format.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the scorecard to this file instead of standard output.")
def scorecard(config_path: Path | None, plan_path: Path | None, window_s: float,
              output_format: Format, output: Path | None) -> None:
    """The AI infrastructure scorecard: eight categories scored 0 (unclear), 1 (partly
    defined) or 2 (disciplined and measured) from the config, the records in the store and an
    optional capacity plan; a total below 10 of 16 flags "AI spending risk".

    Exit 0 whatever the score (the risk is shown, not an error); 2 when the config, the store or
    the plan cannot be read."""
    from switchgear.scorecard.categories import score  # the store's drivers only when scoring
    from switchgear.scorecard.gather import EvidenceError, gather
    from switchgear.scorecard.report import render
    from switchgear.store.base import redact_url

    try:
        config = load_config(config_path)
        source = f"file {config_path}" if config_path else "the built-in default"
        click.echo(f"reading evidence from {redact_url(config.store.url)} ...", err=True)
        evidence = gather(config, window_s, time.time(), source, plan_path)
    except (ConfigError, EvidenceError) as error:
        click.echo(f"switchgear: cannot score: {error}", err=True)
        sys.exit(2)
    text = render(score(evidence), evidence, output_format)
    if output is None:
        click.echo(text)
        return
    output.write_text(text if text.endswith("\n") else text + "\n")
    click.echo(f"wrote {output}", err=True)
