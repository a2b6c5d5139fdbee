"""Inline-SVG line charts: one line per series over a numeric x axis (times, loads, ...)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape

#: Line colours, taken in turn (colour-blind-safe Okabe-Ito palette).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")

Points = Sequence[tuple[float, float]]


def _ticks(low: float, high: float, count: int) -> list[float]:
    """``count`` + 1 evenly spaced values from ``low`` to ``high``."""
    if high <= low:
        return [low]
    step = (high - low) / count
    return [low + step * index for index in range(count + 1)]


def line_chart(series: Mapping[str, Points], *, title: str,
               x_label: Callable[[float], str] = "{:g}".format,
               y_label: Callable[[float], str] = "{:g}".format,
               width: int = 720, height: int = 320, markers: bool = False) -> str:
    """An ``<svg>`` element drawing each series as a line with a legend; the y axis starts at 0.
    ``x_label`` and ``y_label`` format the tick labels; ``markers`` also draws each data point
    as a dot (``<circle class="point">`` with its values in ``data-x``/``data-y``)."""
    left, right, top, bottom = 70, 150, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [point for line in series.values() for point in line]
    xs = [x for x, _ in points] or [0.0]
    x_low, x_high = min(xs), max(xs)
    y_high = max([y for _, y in points] + [0.0]) or 1.0

    def at(x: float, y: float) -> str:
        px = left + (0.5 if x_high == x_low else (x - x_low) / (x_high - x_low)) * plot_w
        return f"{px:.1f},{top + plot_h - y / y_high * plot_h:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
             'font-family="sans-serif" font-size="11">',
             f'<title>{escape(title)}</title>',
             f'<text x="{left}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    for value in _ticks(0.0, y_high, 4):
        y = top + plot_h - value / y_high * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{escape(y_label(value))}</text>')
    for value in _ticks(x_low, x_high, 4 if x_high > x_low else 1):
        x = at(value, 0).split(",")[0]
        parts.append(f'<text x="{x}" y="{top + plot_h + 16}" text-anchor="middle">'
                     f'{escape(x_label(value))}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
                 f'y2="{top + plot_h}" stroke="#333"/>')
    for index, (name, line) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        path = " ".join(at(x, y) for x, y in line)
        parts.append(f'<polyline class="series" data-name="{escape(name)}" fill="none" '
                     f'stroke="{colour}" stroke-width="2" points="{path}"/>')
        if markers:
            parts.extend(_marker(at(x, y), colour, name, x, y) for x, y in line)
        legend_y = top + 14 * index + 6
        parts.append(f'<rect x="{left + plot_w + 12}" y="{legend_y - 8}" width="10" height="10" '
                     f'fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 26}" y="{legend_y + 1}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _marker(position: str, colour: str, series: str, x: float, y: float) -> str:
    cx, cy = position.split(",")
    return (f'<circle class="point" data-series="{escape(series)}" data-x="{x:g}" '
            f'data-y="{y:g}" cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
