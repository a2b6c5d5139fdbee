"""The Helm chart's renders for the deploy tests: helm from the development set-up, the chart's
own render script (deploy/helm/render.py), and a switchgear command line checked by the CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from scripts import load_script
from switchgear.cli.main import main as cli

ROOT = Path(__file__).resolve().parents[2]
render = load_script(ROOT / "deploy" / "helm" / "render.py", "render_chart")
CHART: Path = render.CHART
PRODUCTION = ROOT / "deploy" / "helm" / "production-values.yaml"


def helm(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """helm run with ``arguments``; with ``check``, a failure raises with its output."""
    assert render.HELM.is_file(), "helm is missing: run scripts/setup --dev"
    done = subprocess.run([str(render.HELM), *arguments], capture_output=True, text=True,
                          check=False)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def objects(arguments: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The chart's objects rendered with ``arguments`` (values files, --set)."""
    result: list[dict[str, Any]] = render.objects(render.template(arguments))
    return result


def find(items: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``) in ``items``."""
    found: dict[str, Any] = render.find(items, kind, name)
    return found


def production_arguments(tmp_path: Path) -> list[str]:
    """helm arguments for deploy/helm/production-values.yaml, with the SLO rules written for its
    config.slo by `switchgear slo rules` passed in as its docs say."""
    rules = tmp_path / "slo-rules.yaml"
    rules.write_text(render.slo_rules_for(PRODUCTION))
    return ["-f", str(PRODUCTION), "--set-file", f"prometheusRule.rules={rules}"]


def parse_command(words: Sequence[str]) -> click.Command:
    """The switchgear subcommand ``words`` runs, once click has parsed its options as written
    (an unknown command or option raises)."""
    command: click.Command = cli
    words = list(words)
    parent = None
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        parent = click.Context(command, info_name=command.name, parent=parent)
        found = command.get_command(parent, words[0])
        assert found is not None, f"switchgear has no command {words[0]}"
        command, words = found, words[1:]
    command.make_context(command.name, words, parent=parent)
    return command
