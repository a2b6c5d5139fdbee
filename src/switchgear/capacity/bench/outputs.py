"""A bench profile as a terminal table, CSV (one row per level) and an HTML report with plots.

Each names the percentile method and carries the client's saturation mark: a level whose figures
the client itself may have distorted (``monitor``) says so, with the reasons, in all three.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from switchgear.percentiles import METHOD
from switchgear.reports import html, svg
from switchgear.reports.tables import cell, table

LATENCIES = ("e2e", "ttft", "itl", "tpot")
CSV_FIXED = ("label", "mode", "concurrency", "rate", "duration_s", "sent", "completed",
             "error_rate", "request_rate", "goodput", "input_tokens_per_s",
             "output_tokens_per_s", "meets_slo", "errors", "stopped")
CSV_CLIENT = ("cpu_share", "cpu_wait_share", "loop_lag_p99_s", "late_p99_s", "cpu_per_request_s",
              "saturated", "reasons", "notes")
CDF_POINTS = 50
SATURATED = "SATURATED"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _errors(errors: dict[str, int]) -> str:
    return ";".join(f"{kind}={count}" for kind, count in errors.items())


def _client(level: dict[str, Any]) -> dict[str, Any] | None:
    """The level's client object; None in a profile written before bench measured itself."""
    client: dict[str, Any] | None = level.get("client")
    return client


def client_mark(level: dict[str, Any]) -> str:
    """``SATURATED``, ``ok`` or ``-`` (not measured) for the level's client."""
    client = _client(level)
    if client is None:
        return "-"
    return SATURATED if client["saturated"] else "ok"


def saturation_lines(profile: dict[str, Any]) -> list[str]:
    """One line per level whose client was saturated (which level, and why), and one per level
    with a note on what else distorted its figures."""
    lines = []
    for level in profile["levels"]:
        client = _client(level)
        if client is None:
            continue
        if client["saturated"]:
            lines.append(f"{level['label']}: client {SATURATED}, figures not the server's "
                         "alone: " + "; ".join(client["reasons"]))
        lines += [f"{level['label']}: note: {note}" for note in client.get("notes", [])]
    return lines


def _method(profile: dict[str, Any]) -> str:
    return profile.get("percentile_method") or METHOD


def text_table(profile: dict[str, Any]) -> list[str]:
    """The levels as a plain-text table, then why a level stopped early and the sweep's answer
    when there are."""
    rows = [["level", "req/s", "goodput", "out tok/s", "e2e p50 ms", "e2e p95 ms", "e2e p99 ms",
             "ttft p95 ms", "itl p95 ms", "tpot p95 ms", "errors", "SLO", "client CPU",
             "client"]]
    for level in profile["levels"]:
        latency = level["latency_s"]
        rows.append([level["label"], f"{level['request_rate']:.1f}", f"{level['goodput']:.1f}",
                     f"{level['output_tokens_per_s']:.0f}", _ms(latency["e2e"]["p50"]),
                     _ms(latency["e2e"]["p95"]), _ms(latency["e2e"]["p99"]),
                     _ms(latency["ttft"]["p95"]), _ms(latency["itl"]["p95"]),
                     _ms(latency["tpot"]["p95"]),
                     f"{level['sent'] - level['completed']}/{level['sent']}"
                     + (f" ({_errors(level['errors'])})" if level["errors"] else ""),
                     "met" if level["meets_slo"] else "MISSED",
                     f"{client['cpu_share']:.0%}" if (client := _client(level)) else "-",
                     client_mark(level)])
    lines = table(rows)
    lines.append(f"percentiles: {_method(profile)}")
    lines += saturation_lines(profile)
    lines += [f"{level['label']} stopped early, and the run with it: {level['stopped']}"
              for level in profile["levels"] if level.get("stopped")]
    sweep = profile.get("sweep")
    if sweep:
        best = sweep["max_rate_within_slo"]
        lines.append("")
        lines.append(f"saturation: {sweep['saturation_rate']:.1f} req/s; highest rate within "
                     f"SLO: {cell(None if best is None else f'{best:g} req/s')}")
    return lines


def csv_text(profile: dict[str, Any]) -> str:
    """One CSV row per level: its counts, rates, every latency percentile (seconds; empty
    where there is none), the percentile method and the client's figures and mark (empty when
    not measured; reasons joined by ``; ``)."""
    latency_columns = [f"{name}_{stat}" for name in LATENCIES
                       for stat in ("mean", "p50", "p90", "p95", "p99", "max")]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_FIXED, *latency_columns, "percentile_method",
                     *(f"client_{name}" for name in CSV_CLIENT)])
    for level in profile["levels"]:
        fixed = [_errors(level["errors"]) if name == "errors" else level.get(name)
                 for name in CSV_FIXED]
        latencies = [level["latency_s"][column.split("_", 1)[0]][column.split("_", 1)[1]]
                     for column in latency_columns]
        client = _client(level) or {}
        measured = ["; ".join(client.get(name) or []) if name in ("reasons", "notes")
                    else client.get(name) for name in CSV_CLIENT]
        writer.writerow([*fixed, *latencies, _method(profile), *measured])
    return out.getvalue()


def html_report(profile: dict[str, Any]) -> str:
    """A self-contained page: the table, latency against rate (open-loop levels when there are
    any), the TTFT distribution (e2e when nothing streamed) and throughput per level."""
    levels = profile["levels"]
    target = profile["target"]
    ms = "{:.0f} ms".format
    open_loop = [level for level in levels if level["rate"] is not None]
    by_rate = sorted(open_loop or levels, key=lambda level: level["request_rate"])
    latency = {f"{name} {stat}": [(level["request_rate"], level["latency_s"][name][stat] * 1000)
                                  for level in by_rate
                                  if level["latency_s"][name][stat] is not None]
               for name, stat in (("e2e", "p50"), ("e2e", "p95"), ("ttft", "p95"))}
    streamed = any(level["samples"]["ttft"] for level in levels)
    kind = "ttft" if streamed else "e2e"
    distribution = {level["label"]: _cdf(level["samples"][kind]) for level in levels
                    if level["samples"][kind]}
    throughput = {name: [(float(index), level[key]) for index, level in enumerate(levels)]
                  for name, key in (("request rate", "request_rate"), ("goodput", "goodput"))}

    def level_name(index: float) -> str:
        number = round(index)
        return levels[number]["label"] if 0 <= number < len(levels) else ""

    sections = [
        html.paragraph(f"Target {target['url']} ({target['endpoint']}, model "
                       f"{target['model']}); latencies counted from each request's scheduled "
                       f"send time; percentiles {_method(profile)}."),
        html.table("Levels", ["level", "req/s", "goodput", "e2e p50 ms", "e2e p95 ms",
                              "ttft p95 ms", "tpot p95 ms", "errors", "SLO", "client"],
                   [[level["label"], f"{level['request_rate']:.1f}", f"{level['goodput']:.1f}",
                     _ms(level["latency_s"]["e2e"]["p50"]), _ms(level["latency_s"]["e2e"]["p95"]),
                     _ms(level["latency_s"]["ttft"]["p95"]), _ms(level["latency_s"]["tpot"]["p95"]),
                     _errors(level["errors"]) or "0", "met" if level["meets_slo"] else "MISSED",
                     client_mark(level)]
                    for level in levels]),
        _figure("latency-vs-rate", svg.line_chart(
            latency, title="Latency against request rate (req/s)", x_label="{:.0f}".format,
            y_label=ms, markers=True)),
        _figure(f"{kind}-distribution", svg.line_chart(
            distribution, title=f"{kind.upper()} distribution (share of requests at or below)",
            x_label=ms, markers=True)),
        _figure("throughput", svg.line_chart(
            throughput, title="Throughput per level (req/s)", x_label=level_name, markers=True)),
    ]
    saturated = saturation_lines(profile)
    if saturated:
        sections.insert(1, html.paragraph(" ".join(saturated), css_class="saturated"))
    sweep = profile.get("sweep")
    if sweep:
        best = sweep["max_rate_within_slo"]
        sections.insert(1, html.paragraph(
            f"Sweep: saturation {sweep['saturation_rate']:.1f} req/s; highest rate within SLO "
            f"{'none' if best is None else f'{best:g} req/s'}.", css_class="sweep"))
    return html.page("switchgear bench", sections)


def _figure(name: str, chart: str) -> str:
    return f'<figure id="{name}">{chart}</figure>'


def _cdf(values: Sequence[float]) -> list[tuple[float, float]]:
    """At most ``CDF_POINTS`` points (milliseconds, share of values at or below)."""
    ordered = sorted(values)
    step = max(1, len(ordered) // CDF_POINTS)
    picks = list(range(step - 1, len(ordered), step))
    if picks[-1] != len(ordered) - 1:
        picks.append(len(ordered) - 1)
    return [(ordered[index] * 1000, (index + 1) / len(ordered)) for index in picks]
