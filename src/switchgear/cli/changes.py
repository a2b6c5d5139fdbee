"""`switchgear changes`: the config versions applied in a period, beside p95 latency, error rate
and cost per request before and after each (GET /admin/changes)."""

from __future__ import annotations

import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import click

from switchgear.cli.options import (
    ADMIN_URL,
    AS_JSON,
    READER_KEY,
    admin_request,
    echo_report,
    window_option,
)
from switchgear.reports.tables import table
from switchgear.sections.durations import format_duration, parse_duration

COLUMNS = ("version", "applied (UTC)", "kind", "by", "what", "requests", "p95 ms",
           "error rate", "cost/request")


def _since(context: click.Context, parameter: click.Parameter, value: str) -> str:
    """A duration back from now (24h, 7d) as epoch seconds; anything else (an ISO 8601 time,
    epoch seconds) goes to the gateway as given."""
    try:
        return repr(time.time() - parse_duration(value))
    except ValueError:
        return value


@click.command("changes")
@ADMIN_URL
@READER_KEY
@click.option("--since", default="24h", show_default=True, callback=_since,
              help="From when: a duration back from now (90m, 24h, 7d), an ISO 8601 time "
              "(UTC) or epoch seconds.")
@click.option("--window", default="30m", show_default=True, callback=window_option,
              help="Each side's length before and after a change (cut at the neighbouring "
              "changes).")
@click.option("--tenant", help="Only this tenant's requests (operators and viewers: their own).")
@AS_JSON
def changes(url: str, admin_key: str | None, since: str, window: float, tenant: str | None,
            as_json: bool) -> None:
    """What changed, and what moved: every config version applied since --since (apply,
    break-glass, rollback) with who, when and what (sections; templates and their new
    versions), beside p95 latency, error rate and cost per request of the requests received
    just before and just after it."""
    query = {"since": since, "window_s": window, **({"tenant": tenant} if tenant else {})}
    report = admin_request(url, "GET", "/admin/changes?" + urllib.parse.urlencode(query),
                           admin_key)
    echo_report(report, as_json, render_changes)


def _pair(before: Any, after: Any, shown: str) -> str:
    def one(value: Any) -> str:
        return "-" if value is None else shown.format(value)
    return f"{one(before)} -> {one(after)}"


def _what(change: dict[str, Any]) -> str:
    sections = [name for name in change["sections"] if name != "prompts" or not change["prompts"]]
    templates = [f"{name} v{number}" if number is not None else f"{name} removed"
                 for name, number in sorted(change["prompts"].items())]
    return ", ".join([*sections, *([f"prompts ({', '.join(templates)})"] if templates else [])])


def render_changes(report: dict[str, Any]) -> str:
    """A plain-text table: one line per applied version, each figure as before -> after."""
    rows = [COLUMNS]
    for change in report["data"]:
        before, after = change["before"], change["after"]
        when = datetime.fromtimestamp(change["applied_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((
            f"v{change['version']}", when, change["kind"], change["applied_by"], _what(change),
            _pair(before["requests"], after["requests"], "{}"),
            _pair(before["p95_s"] and before["p95_s"] * 1000,
                  after["p95_s"] and after["p95_s"] * 1000, "{:.1f}"),
            _pair(before["error_rate"], after["error_rate"], "{:.1%}"),
            _pair(before["cost_per_request"], after["cost_per_request"], "{:.6g}")))
    if len(rows) == 1:
        return "no config changes applied in the period"
    return "\n".join([*table(rows), "", (
        f"each side up to {format_duration(report['window_s'])} before and after the change, "
        f"cut at the neighbouring change; p95: {report['latency']}; errors: {report['errors']}"
        + (f"; tenant {report['tenant']}" if report.get("tenant") else ""))])
