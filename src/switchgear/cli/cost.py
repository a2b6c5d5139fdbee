"""`switchgear cost`: lay out a gateway's /admin/cost report as a table or an HTML page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from switchgear.reports.html import page, paragraph, table
from switchgear.reports.svg import line_chart

HEADERS = ("requests", "failed", "cache hits", "tokens", "cost", "saved", "per request",
           "per 1k req", "per 1M tok")
DEPLOYMENT_HEADERS = ("deployment", "requests", "peak req/s (burst)", "token cost",
                      "instance time", "idle cost", "utilization", "2x needs", "doubling adds",
                      "why")


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _line_cells(line: dict[str, Any]) -> tuple[str, ...]:
    tokens = line["prompt_tokens"] + line["completion_tokens"]
    return (line["key"], str(line["requests"]), str(line["failed"]), str(line["cache_hits"]),
            str(tokens), _money(line["cost"]), _money(line["saved_cost"]),
            f"{line['cost_per_request']:.6f}", _money(line["cost_per_1k_requests"]),
            _money(line["cost_per_million_tokens"]))


def _instances_at_twice(double: dict[str, Any]) -> str:
    """``4 of 2`` (needed of running), or ``-`` for a per-token or unknown-capacity one."""
    if not double.get("instances") or double.get("instances_needed") is None:
        return "-"
    return f"{double['instances_needed']} of {double['instances']}"


def _deployment_cells(report: dict[str, Any]) -> list[tuple[str, ...]]:
    doublings = {(d["alias"], d["deployment"]): d for d in report["doubling"] or ()}
    rows: list[tuple[str, ...]] = []
    for d in report["deployments"] or ():
        double = doublings.get((d["alias"], d["deployment"]), {})
        utilization = d["utilization"]
        rows.append((f"{d['alias']}/{d['deployment']}", str(d["requests"]),
                     f"{d['peak_requests_per_s']:.4g} ({d['burst_requests_per_s']:.4g})",
                     _money(d["token_cost"]), _money(d["instance_time_cost"]),
                     _money(d["idle_cost"]),
                     "-" if utilization is None else f"{utilization:.1%}",
                     _instances_at_twice(double), _money(double.get("added_cost")),
                     str(double.get("reason", "gone: no longer in the config"))))
    return rows


def _deployment_notes(report: dict[str, Any]) -> list[str]:
    """How the deployments' peaks and instance time were found."""
    peak, instance_time = report.get("peak"), report.get("instance_time")
    if not peak or not instance_time:
        return []
    return [f"peak: the busiest {peak['grain_s']} s; burst: its busiest second. "
            f"Instance time: {instance_time['basis']}."]


def _retention_notes(report: dict[str, Any]) -> list[str]:
    """What of the period came from the rollups of rows retention removed (none: nothing)."""
    rollups = report.get("rollups")
    return [f"{rollups['requests']} requests from hourly rollups: {rollups['note']}."] \
        if rollups else []


def _layout(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _heading(report: dict[str, Any]) -> str:
    period = report["period"]
    scope = f", tenant {report['tenant']}" if report["tenant"] else ""
    return f"cost {period['start']} to {period['end']} ({report['currency']}{scope})"


def render_table(report: dict[str, Any]) -> str:
    """Plain-text tables: one line per group and the total, then the deployments."""
    rows: list[tuple[str, ...]] = [(report["by"], *HEADERS)]
    rows += [_line_cells(line) for line in report["lines"]]
    rows.append(_line_cells(report["total"]))
    lines = [_heading(report), *_layout(rows)]
    total = report["total"]
    if "idle_cost" in total:
        lines.append(f"idle instance time: {_money(total['idle_cost'])}; with it, "
                     f"{_money(total['cost_with_idle'])} in all")
    lines += _retention_notes(report)
    deployments = _deployment_cells(report)
    if deployments:
        lines += ["", *_deployment_notes(report), *_layout([DEPLOYMENT_HEADERS, *deployments])]
    return "\n".join(lines)


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page: the chart of cost over time, then the tables."""
    chart = report["chart"]
    hourly = chart["bucket_s"] < 86400
    stamp = "%m-%d %H:%M" if hourly else "%Y-%m-%d"
    days = chart["bucket_s"] // 86400
    step = "hour" if hourly else "day" if days == 1 else f"{days} days"
    svg = line_chart(
        {name: [(x, y) for x, y in points] for name, points in chart["series"].items()},
        title=f"Cost per {step} by {chart['by']} ({report['currency']})",
        x_label=lambda x: datetime.fromtimestamp(x, UTC).strftime(stamp),
        y_label="{:.4g}".format)
    sections = [paragraph(_heading(report)), svg,
                table(f"By {report['by']}", (report["by"], *HEADERS),
                      [*map(_line_cells, report["lines"]), _line_cells(report["total"])]),
                *map(paragraph, _retention_notes(report))]
    deployments = _deployment_cells(report)
    if deployments:
        sections += [paragraph(note) for note in _deployment_notes(report)]
        sections.append(table("Deployments: instance time and twice the traffic",
                              DEPLOYMENT_HEADERS, deployments))
    return page("Switchgear cost report", sections)
