"""`switchgear routes`: lay out a gateway's /admin/routing report as a table."""

from __future__ import annotations

from typing import Any

from switchgear.reports.tables import cell as _cell
from switchgear.reports.tables import table

COLUMNS = ("alias", "deployment", "state", "in flight", "ttft ms", "total ms", "errors", "share")


def render_routing(report: dict[str, Any]) -> str:
    """A plain-text table of every deployment, then experiments and the retry budget."""
    rows: list[tuple[str, ...]] = [COLUMNS]
    notes = []
    for alias, entry in report["models"].items():
        for d in entry["deployments"]:
            rows.append((alias, d["name"], d["state"], _cell(d["in_flight"]),
                         _cell(d["ewma_ttft_ms"]), _cell(d["ewma_total_ms"]),
                         f"{d['error_ratio']:.1%}", f"{d['traffic_share']:.1%}"))
            if d.get("reason"):
                notes.append(f"{alias}/{d['name']}: {d['reason']}")
        if entry.get("variants"):
            split = ", ".join(f"{name} {weight:g}" for name, weight in entry["variants"].items())
            notes.append(f"{alias} splits: {split}")
        canary = entry.get("canary")
        if canary and canary.get("rolled_back"):
            notes.append(f"{alias}: canary {canary['variant']} rolled back: {canary['rolled_back']}")
    lines = table(rows)
    budget = report.get("retry_budget", {})
    lines.append("")
    lines.append(f"retry budget: {budget.get('retries', 0)} retries for {budget.get('requests', 0)} "
                 f"requests, {budget.get('refused', 0)} refused")
    return "\n".join(lines + notes)
