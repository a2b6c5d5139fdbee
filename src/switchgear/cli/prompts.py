"""`switchgear prompts list|show`: the managed prompt templates a gateway serves (through its
admin API, GET /admin/prompts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from switchgear.cli.options import ADMIN_URL, READER_KEY, admin_request
from switchgear.cli.tables import table


@click.group()
def prompts() -> None:
    """Managed prompt templates: named, versioned with the config (the prompts: section), and
    named by requests as {"prompt": {"id": NAME, "variables": {...}}}. Change them with
    `switchgear config propose`."""


@prompts.command("list")
@ADMIN_URL
@READER_KEY
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON instead of a table.")
def prompts_list(url: str, admin_key: str | None, as_json: bool) -> None:
    """The templates served now: name, version, variables and description."""
    report = admin_request(url, "GET", "/admin/prompts", admin_key)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not report["data"]:
        click.echo(f"no prompt templates in config version {report['config_version']}")
        return
    rows = [("name", "version", "variables", "description")]
    rows += [(p["name"], f"v{p['version']}", ", ".join(p["variables"]) or "-",
              p["description"] or "-") for p in report["data"]]
    click.echo("\n".join(table(rows)))


@prompts.command("show")
@ADMIN_URL
@READER_KEY
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def prompts_show(url: str, admin_key: str | None, name: str, as_json: bool) -> None:
    """One template: its messages as served now, and when each version was applied."""
    from urllib.parse import quote

    template = admin_request(url, "GET", f"/admin/prompts/{quote(name, safe='')}", admin_key)
    if as_json:
        click.echo(json.dumps(template, indent=2))
        return
    click.echo(f"# {template['name']} v{template['version']} (config version "
               f"{template['config_version']})" + (f": {template['description']}"
                                                   if template["description"] else ""))
    click.echo(f"# variables: {', '.join(template['variables']) or '(none)'}")
    for message in template["messages"]:
        click.echo(f"{message['role']}: {message['content']}")
    for entry in template["history"]:
        when = datetime.fromtimestamp(entry["applied_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"# v{entry['version']}: config version {entry['config_version']}, "
                   f"{when} by {entry['applied_by']}")
