"""`switchgear slo status`: lay out a gateway's /admin/slo report as a table."""

from __future__ import annotations

from typing import Any

COLUMNS = ("slo", "owner", "target", "window", "sli", "budget left", "burn 5m", "burn 1h",
           "page", "ticket")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _burn(entry: dict[str, Any], window: str) -> str:
    rate = (entry.get("burn_rates") or {}).get(window)
    return "-" if rate is None else f"{rate:.2f}"


def _alert(entry: dict[str, Any], severity: str) -> str:
    state = entry["alerts"].get(severity)
    return "-" if state is None else state["state"]


def render_slo(report: dict[str, Any]) -> str:
    """A plain-text table of every SLO: target, SLI, error budget left, burn rates, alerts."""
    rows = [COLUMNS]
    for entry in report["data"]:
        rows.append((entry["name"], entry["owner"], f"{entry['target']:g}", entry["window"],
                     _percent(entry.get("sli")), _percent(entry.get("error_budget_remaining")),
                     _burn(entry, "5m"), _burn(entry, "1h"), _alert(entry, "page"),
                     _alert(entry, "ticket")))
    if len(rows) == 1:
        return "no SLOs configured (see slo.objectives in the config)"
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    if report.get("time_scale", 1) != 1:
        lines.append(f"\nwindows compressed by time_scale {report['time_scale']:g}")
    return "\n".join(lines)
