"""`switchgear prompts list|show`: the managed prompt templates a gateway serves (through its
admin API, GET /admin/prompts)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import click

from switchgear.cli.options import ADMIN_URL, AS_JSON, READER_KEY, admin_request, echo_report
from switchgear.reports.tables import table


@click.group()
def prompts() -> None:
    """Managed prompt templates: named, versioned with the config (the prompts: section), and
    named by requests as {"prompt": {"id": NAME, "variables": {...}}}. Change them with
    `switchgear config propose`."""


@prompts.command("list")
@ADMIN_URL
@READER_KEY
@AS_JSON
def prompts_list(url: str, admin_key: str | None, as_json: bool) -> None:
    """The templates served now: name, version, variables and description."""
    echo_report(admin_request(url, "GET", "/admin/prompts", admin_key), as_json, render_list)


@prompts.command("show")
@ADMIN_URL
@READER_KEY
@click.argument("name")
@AS_JSON
def prompts_show(url: str, admin_key: str | None, name: str, as_json: bool) -> None:
    """One template: its messages as served now, and when each version was applied."""
    template = admin_request(url, "GET", f"/admin/prompts/{quote(name, safe='')}", admin_key)
    echo_report(template, as_json, render_template)


def render_list(report: dict[str, Any]) -> str:
    """A table of the templates, or a line saying there are none."""
    if not report["data"]:
        return f"no prompt templates in config version {report['config_version']}"
    rows = [("name", "version", "variables", "description")]
    rows += [(p["name"], f"v{p['version']}", ", ".join(p["variables"]) or "-",
              p["description"] or "-") for p in report["data"]]
    return "\n".join(table(rows))


def render_template(template: dict[str, Any]) -> str:
    """A template's messages under a header, then when each of its versions was applied."""
    lines = [f"# {template['name']} v{template['version']} (config version "
             f"{template['config_version']})" + (f": {template['description']}"
                                                 if template["description"] else ""),
             f"# variables: {', '.join(template['variables']) or '(none)'}"]
    lines += [f"{message['role']}: {message['content']}" for message in template["messages"]]
    for entry in template["history"]:
        when = datetime.fromtimestamp(entry["applied_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"# v{entry['version']}: config version {entry['config_version']}, "
                     f"{when} by {entry['applied_by']}")
    return "\n".join(lines)
