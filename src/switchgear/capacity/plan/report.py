"""The plan as text (a terminal table) and as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from switchgear.reports.tables import table

SUMMARY_HEADERS = ("", "value")
LIMIT_HEADERS = ("resource", "max req/s", "headroom", "evidence")


def _number(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def summary_rows(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """The plan's figures as (label, value) rows."""
    inputs, predicted = plan["inputs"], plan["predicted"]
    cost, power, pipeline = plan["cost"], plan["power"], plan["pipeline"]
    slo = inputs["slo"]
    money = cost["basis"] is not None
    rows = [
        ("planned rate", f"{inputs['rate']:.2f} req/s (peak {inputs['peak_rate']:g} x (1 + "
                         f"{inputs['growth']:g}))"),
        ("instances", f"{plan['instances']} (target utilization {plan['target_utilization']:.0%})"),
        ("utilization", _share(plan["utilization"])),
        ("rate per instance", f"{predicted['rate_per_instance']:.2f} req/s of "
                              f"{predicted['saturation_rate']:.2f} at saturation"),
        ("max rate within SLO", _number(predicted["max_rate_within_slo"], " req/s per instance")
         + f" (p95 <= {_number(slo['p95_s'], ' s', 3)}, p99 <= {_number(slo['p99_s'], ' s', 3)}, "
           f"errors <= {_share(slo['error_rate'])})"),
        ("predicted p95 / p99", f"{predicted['p95_s']:.3f} s / {predicted['p99_s']:.3f} s (mean "
                                f"{predicted['mean_s']:.3f} s, errors {_share(predicted['error_rate'])})"),
        ("cost per 1k requests", _number(cost["per_1k_requests"], digits=4)
         + (f" ({cost['basis']} pricing)" if money else "")),
        ("cost per 1M tokens", _number(cost["per_million_tokens"], digits=4)),
        ("cost per month", _number(cost["per_month"])),
        ("on doubling", f"{cost['instances_on_doubling']} instances; "
                        f"{_number(cost['marginal_per_1k_on_doubling'], digits=4)} per extra 1k requests"),
        ("power", "-" if power["kw"] is None else
                  f"{power['kw']:.2f} kW IT, {power['facility_kw']:.2f} kW with PUE {power['pue']:g}; "
                  f"{power['kwh_per_month']:,.0f} kWh per month"),
        ("limiting resource", plan["limiting_resource"]["name"]),
    ]
    if pipeline["feed_share"] is not None:
        rows.append(("data pipeline", f"feeds {_share(pipeline['feed_share'])}: "
                                      f"{_share(pipeline['wasted_share'])} of the spend wasted "
                                      f"({_number(pipeline['wasted_per_month'])} per month, "
                                      f"{pipeline['wasted_instances']:.1f} instances idle)"))
    return rows


def limit_rows(plan: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """One row per resource ceiling, the first to be hit first."""
    return [(limit["name"], f"{limit['max_rate']:,.2f}", f"{limit['headroom']:.2f}x", limit["evidence"])
            for limit in plan["limits"]]


def warning_lines(plan: dict[str, Any]) -> list[str]:
    """One line per warning: what the profile does not support, or (forced) contradicts."""
    return [f"{'REFUSED, FORCED' if warning['overridden'] else 'WARNING'}: {warning['message']}"
            for warning in plan.get("warnings", ())]


def _warnings_block(lines: list[str]) -> list[str]:
    """``lines`` then a blank line; nothing without lines."""
    return [*lines, ""] if lines else []


def _notes(plan: dict[str, Any]) -> list[str]:
    calibration = plan["calibration"]
    levels = ", ".join(f"{level['concurrency']}: {level['request_rate']:.2f}"
                       for level in calibration["closed_loop_levels"])
    notes = [f"model: processor-sharing queue, simulated, on {calibration['latency']} latency of "
             f"closed-loop levels (concurrency: req/s) {levels}",
             f"percentiles: {plan['percentile_method']} (measured and predicted alike)"]
    notes += [f"open-loop check at {check['rate']:.2f} req/s: p95 measured {check['measured_p95_s']:.3f} s, "
              f"model {check['model_p95_s']:.3f} s ({check['error']:+.1%})"
              for check in calibration["open_loop_checks"]]
    return notes + list(calibration["notes"])


def render_text(plan: dict[str, Any]) -> str:
    """The plan as terminal tables: its warnings first, the figures, the resource ceilings,
    then notes."""
    return "\n".join([*_warnings_block(warning_lines(plan)),
                      *table([SUMMARY_HEADERS, *summary_rows(plan)]), "",
                      *table([LIMIT_HEADERS, *limit_rows(plan)]), "", *_notes(plan)])


def _markdown_table(rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(rows[0]), line(["---"] * len(rows[0])), *(line(row) for row in rows[1:])]


def render_markdown(plan: dict[str, Any]) -> str:
    """The plan as a Markdown document."""
    warnings = [f"> **{line}**" for line in warning_lines(plan)]
    return "\n".join(["# Capacity plan", "", *_warnings_block(warnings),
                      *_markdown_table([("figure", "value"), *summary_rows(plan)]),
                      "", "## What limits scaling", "", *_markdown_table([LIMIT_HEADERS, *limit_rows(plan)]),
                      "", "## Model", "", *(f"- {note}" for note in _notes(plan)), ""])
