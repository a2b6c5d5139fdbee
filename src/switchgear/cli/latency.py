"""`switchgear latency report`: lay out a gateway's /admin/latency report as a table."""

from __future__ import annotations

from typing import Any

MEASURES = (("e2e_s", "e2e"), ("ttft_s", "ttft"), ("tpot_s", "tpot"))


def _ms(summary: dict[str, Any] | None, percentile: int) -> str:
    return "-" if summary is None else f"{summary[f'p{percentile}'] * 1000:.1f}"


def render_latency(report: dict[str, Any]) -> str:
    """A plain-text table: one line per group, milliseconds per measure and percentile, under
    it how the percentiles were made and over how many requests."""
    percentiles = report["percentiles"]
    header = (*report["group_by"], "requests",
              *(f"{label} p{p}" for _, label in MEASURES for p in percentiles))
    rows = [header]
    for entry in report["data"]:
        rows.append((*(str(entry[name] if entry[name] is not None else "-")
                       for name in report["group_by"]),
                     str(entry["requests"]),
                     *(_ms(entry[key], p) for key, _ in MEASURES for p in percentiles)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    hours = (report["until"] - report["since"]) / 3600
    lines.append("")
    exact = "exact " if report["exact"] else ""
    lines.append(f"milliseconds; {exact}{report['method']} percentiles of all "
                 f"{report['requests']:,} successful requests of the last {hours:g} h"
                 + (f", tenant {report['tenant']}" if report.get("tenant") else ""))
    return "\n".join(lines)
