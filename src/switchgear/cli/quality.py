"""`switchgear quality`: lay out a gateway's /admin/quality report as a table."""

from __future__ import annotations

import time
from typing import Any

from switchgear.reports.tables import cell, table

COLUMNS = ("dimension", "name", "window", "answers", "out tokens", "refused", "empty",
           "schema ok", "flagged", "length cut", "finish reasons", "shifted")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def render_quality(report: dict[str, Any]) -> str:
    """Every group's recent and baseline window side by side, then the shifts and alerts."""
    rows: list[tuple[str, ...]] = [COLUMNS]
    notes: list[str] = []
    for group in report["signals"]:
        shifted = ",".join(shift["signal"] for shift in group["shifts"])
        for window in ("recent", "baseline"):
            values = group[window]
            mix = " ".join(f"{reason}:{share:.0%}"
                           for reason, share in values["finish_reasons"].items())
            rows.append((group["dimension"], group["name"], window, str(values["answers"]),
                         cell(values["output_tokens"]), _share(values["refusal_rate"]),
                         _share(values["empty_rate"]), _share(values["schema_valid_rate"]),
                         _share(values["guard_flag_rate"]), _share(values["length_cut_rate"]),
                         mix or "-", shifted if window == "recent" and shifted else ""))
        notes.extend(f"shift: {group['dimension']} {group['name']}: {shift['detail']}"
                     for shift in group["shifts"])
    settings = report["settings"]
    lines = table(rows) if len(rows) > 1 else ["no answers counted yet"]
    lines.append("")
    lines.append(f"recent window {settings['recent_s']:g} s against the {settings['baseline_s']:g}"
                 f" s before it; at least {settings['min_samples']} answers each, confidence "
                 f"{settings['confidence']:g}")
    lines.extend(notes or ["no shifts"])
    lines.extend(f"alert since {_clock(alert['since'])}: {alert['dimension']} {alert['name']}: "
                 f"{alert['detail']}" for alert in report["alerts"])
    return "\n".join(lines)
