"""A :class:`~.sweep.SweepChart` as an SVG element (the notebook picture of ``SweepWidget``).

Log x and log y; per group the runs as small open dots, the means over seeds as filled dots with ± one
standard error bars, the fitted power law as a line over its fit range; guide lines grey and dashed, the
marker dashed; decade ticks on both axes; the legend (exponents and intervals) below. The live view
(``js/src/sweep_widget.js``) draws the same elements with the same classes.
"""

from __future__ import annotations

import html
import math

import numpy as np

from .charts import format_value
from .svg import _FG2, _GRID, _legend_layout, _svg_open, _title, _x_label, _y_label
from .sweep import SweepChart

__all__ = ["sweep_chart_svg", "decade_ticks"]


def decade_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten inside ``[lo, hi]``; with fewer than two, the ends too (``[lo, 0.1, hi]``)."""
    a, b = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
    ticks = [10.0**e for e in range(a, b + 1)]
    return ticks if len(ticks) >= 2 else [lo, *ticks, hi]


def sweep_chart_svg(chart: SweepChart, *, width: int = 560, height: int = 320) -> str:
    """``<svg class="tscope-static-sweep">``: see the module docstring; a "no data" note before any run."""
    esc = html.escape
    m = {"left": 60, "right": 14, "top": 22, "bottom": 38}
    labels = [g.label for g in chart.groups] + [g.label for g in chart.guides]
    legend = _legend_layout(labels, m["left"], width - m["right"])
    rows = legend[-1][1] + 1 if legend else 0
    legend_top = height + 8
    total_h = legend_top + 14 * rows - (4 if rows else 10)
    attrs = f' data-groups="{len(chart.groups)}" data-guides="{len(chart.guides)}"'
    parts = [_svg_open(width, total_h, "tscope-static-sweep", attrs), _title(m["left"], chart.title)]
    pw, ph = width - m["left"] - m["right"], height - m["top"] - m["bottom"]
    bottom = m["top"] + ph
    parts.append(_x_label(m["left"] + pw / 2, bottom + 30, f"{chart.x_label} (log)"))
    parts.append(_y_label(12, m["top"] + ph / 2, f"{chart.y_label} (log)"))
    colors = [g.color for g in chart.groups] + [g.color for g in chart.guides]
    for k, (label, color) in enumerate(zip(labels, colors, strict=True)):
        lx, row = legend[k]
        ly = legend_top + 14 * row
        parts.append(f'<rect x="{lx:g}" y="{ly - 7:g}" width="10" height="3" fill="{color}"/>'
                     f'<text class="tscope-static-legend" x="{lx + 14:g}" y="{ly:g}">{esc(label)}</text>')
    if chart.x_range is None or chart.y_range is None:
        parts.append(f'<text x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle" fill="{_FG2}">no data</text>')
        return "".join(parts) + "</svg>"
    (x0, x1), (y0, y1) = (tuple(math.log10(v) for v in r) for r in (chart.x_range, chart.y_range))

    def px(x: float) -> float:
        return m["left"] + (math.log10(x) - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return m["top"] + (1 - (math.log10(y) - y0) / (y1 - y0)) * ph

    parts.append(f'<path d="M{m["left"]},{m["top"]}V{bottom:g}H{m["left"] + pw:g}" fill="none" stroke="{_GRID}"/>')
    for t in decade_ticks(*chart.x_range):
        parts.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{bottom:g}" y2="{bottom + 4:g}" stroke="{_GRID}"/>'
                     f'<text x="{px(t):.1f}" y="{bottom + 14:g}" text-anchor="middle">{esc(format_value(t))}</text>')
    for t in decade_ticks(*chart.y_range):
        parts.append(f'<line x1="{m["left"] - 4}" x2="{m["left"]}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
                     f'stroke="{_GRID}"/><text x="{m["left"] - 6}" y="{py(t) + 3:.1f}" text-anchor="end">'
                     f"{esc(format_value(t))}</text>")
    if chart.marker_x is not None and chart.x_range[0] <= chart.marker_x <= chart.x_range[1]:
        mx = px(chart.marker_x)
        parts.append(f'<line class="tscope-static-marker" x1="{mx:.1f}" x2="{mx:.1f}" y1="{m["top"]}" '
                     f'y2="{bottom:g}" stroke="{_FG2}" stroke-dasharray="3 2"/>')
    for g in chart.guides:
        parts.append(f'<line class="tscope-static-guide" x1="{px(g.x[0]):.1f}" y1="{py(g.y[0]):.1f}" '
                     f'x2="{px(g.x[1]):.1f}" y2="{py(g.y[1]):.1f}" stroke="{g.color}" stroke-dasharray="5 3"/>')
    for g in chart.groups:
        key = esc(g.key)
        dots = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="1.8" fill="none" stroke="{g.color}" '
                       'stroke-opacity="0.6"/>' for x, y in zip(g.points_x, g.points_y, strict=True))
        parts.append(f'<g class="tscope-static-runs" data-key="{key}">{dots}</g>')
        bars = []
        for x, lo, hi in zip(g.x, g.err_lo, g.err_hi, strict=True):
            if not np.isfinite(hi):
                continue
            top = py(min(hi, chart.y_range[1]))
            low = py(lo) if np.isfinite(lo) else bottom
            bars.append(f"M{px(x):.1f},{low:.1f}V{top:.1f}")
        if bars:
            parts.append(f'<path class="tscope-static-errorbars" data-key="{key}" d="{"".join(bars)}" '
                         f'stroke="{g.color}" fill="none"/>')
        means = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{g.color}"/>'
                        for x, y in zip(g.x, g.mean, strict=True))
        parts.append(f'<g class="tscope-static-means" data-key="{key}" data-points="{g.x.size}">{means}</g>')
        if g.fit_x is not None:
            d = "".join(f"{'L' if i else 'M'}{px(x):.1f},{py(y):.1f}"
                        for i, (x, y) in enumerate(zip(g.fit_x, g.fit_y, strict=True)))
            parts.append(f'<path class="tscope-static-fit" data-key="{key}" data-exponent="{g.fit.exponent!r}" '
                         f'd="{d}" stroke="{g.color}" stroke-width="1.5" fill="none"/>')
    if chart.dropped:
        parts.append(f'<text x="{m["left"] + pw:g}" y="{m["top"] + 10}" text-anchor="end" fill="{_FG2}">'
                     f"{chart.dropped} runs left out (not positive)</text>")
    return "".join(parts) + "</svg>"
