"""Static SVG charts for the pictures that stand in for a live widget (saved or converted notebooks).

Two building blocks, each returning one self-contained ``<svg>`` element as text, and a layout:

- :func:`line_chart_svg`: several series against a shared x axis (linear or log y), with a legend,
  a dashed marker and min/max tick labels.
- :func:`matrix_svg`: a rectangular heatmap ``[R, C]`` drawn as an embedded PNG (one pixel per cell,
  palette-indexed, scaled without smoothing), row and column labels, and a colour bar.
- :func:`compose_svg`: several such charts laid out in rows, as one SVG document (one picture, shown
  as an ``<img>``: see ``_static.picture_html``).

Colours follow the live views: the heatmap uses the colour rules of :mod:`._static` (viridis,
grey for NaN, background for values <= 0 on a log scale), the lines the Tableau 10 scheme of
``d3-scale-chromatic`` in the same order as ``js/src/lib/multiline.js``. Every caller string is
escaped.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence

import numpy as np

from ._static import LEVELS, PALETTE, color_domain, color_indices, encode_png, format_value, svg_size

__all__ = ["SERIES_COLORS", "compose_svg", "line_chart_svg", "matrix_svg"]

# d3-scale-chromatic's schemeTableau10 (the live view's series colours, same order).
SERIES_COLORS = (
    "#4e79a7",
    "#f28e2c",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc949",
    "#af7aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ab",
)
FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"
_FG, _FG2, _GRID = "#1f1f1f", "#616161", "#9e9e9e"


def _png_uri(indices: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(indices, PALETTE)).decode("ascii")


def _svg_open(width: float, height: float, cls: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}" width="{width:g}" height="{height:g}" '
        f'viewBox="0 0 {width:g} {height:g}" font-family="{FONT}" font-size="10" fill="{_FG}">'
    )


def _legend_layout(labels: Sequence[str], left: float, right: float, char_px: float = 6) -> list[tuple[float, int]]:
    """``(x, row)`` of each legend entry, packed left to right (as ``legendLayout`` in the live view)."""
    x, row, out = left, 0, []
    for label in labels:
        w = 14 + len(label) * char_px
        if x > left and x + w > right:
            x, row = left, row + 1
        out.append((x, row))
        x += w + 12
    return out


def line_chart_svg(
    xs: np.ndarray,
    series: Sequence[tuple[str, np.ndarray]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log: bool = False,
    marker_x: float | None = None,
    width: int = 420,
    height: int = 170,
) -> str:
    """Lines of several series ``ys [N]`` against ``xs [N]``.

    Non-finite values (and values <= 0 on a log scale) break a line. Ticks show the ends of each axis.

    Args:
        xs: ``[N]`` x values, increasing.
        series: ``(label, ys [N])`` pairs; colours from :data:`SERIES_COLORS` in order.
        title: Chart title (above the plot).
        x_label, y_label: Axis titles (with units).
        log: Logarithmic y axis.
        marker_x: Draw a dashed vertical line here (e.g. the picked step).
        width, height: Size in pixels.

    Returns:
        An ``<svg>`` element as text (a "no data" note when nothing can be drawn).
    """
    esc = html.escape
    m = {"left": 56, "right": 12, "top": 20, "bottom": 34}
    legend = _legend_layout([label for label, _ in series], m["left"], width - m["right"])
    legend_rows = legend[-1][1] + 1 if legend else 0
    legend_top = height + 10  # legend rows start below the x-axis title (at height - 8)
    total_h = legend_top + 14 * legend_rows - (4 if legend_rows else 10)
    parts = [_svg_open(width, total_h, "tscope-static-lines")]
    parts.append(f'<text x="{m["left"]}" y="12" font-weight="600">{esc(title)}</text>')
    xs = np.asarray(xs, dtype=np.float64)
    ys_all = [np.asarray(ys, dtype=np.float64) for _, ys in series]
    usable = [np.isfinite(ys) & (ys > 0 if log else True) for ys in ys_all]
    values = np.concatenate([ys[u] for ys, u in zip(ys_all, usable, strict=True)]) if ys_all else np.zeros(0)
    if xs.size == 0 or values.size == 0:
        parts.append(f'<text x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle" fill="{_FG2}">no data</text>')
        parts.append("</svg>")
        return "".join(parts)
    x0, x1 = float(xs.min()), float(xs.max())
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    lo, hi = float(values.min()), float(values.max())
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    pw, ph = width - m["left"] - m["right"], height - m["top"] - m["bottom"]

    def px(x: float) -> float:
        return m["left"] + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        v = math.log10(y) if log else y
        return m["top"] + (1 - (v - lo) / (hi - lo)) * ph

    bottom = m["top"] + ph
    parts.append(
        f'<path d="M{m["left"]},{m["top"]}V{bottom:g}H{m["left"] + pw:g}" fill="none" stroke="{_GRID}"/>'
    )
    for k, ((label, _), ys, ok) in enumerate(zip(series, ys_all, usable, strict=True)):
        color = SERIES_COLORS[k % len(SERIES_COLORS)]
        d, pen = [], False
        for x, y, good in zip(xs, ys, ok, strict=True):
            if not good:
                pen = False
                continue
            d.append(f"{'L' if pen else 'M'}{px(x):.1f},{py(y):.1f}")
            pen = True
        parts.append(f'<path d="{"".join(d)}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        if ok.sum() == 1:  # a single point draws no line
            i = int(np.flatnonzero(ok)[0])
            parts.append(f'<circle cx="{px(xs[i]):.1f}" cy="{py(ys[i]):.1f}" r="2" fill="{color}"/>')
        lx, row = legend[k]
        ly = legend_top + 14 * row
        parts.append(
            f'<rect x="{lx:g}" y="{ly - 7:g}" width="10" height="3" fill="{color}"/>'
            f'<text x="{lx + 14:g}" y="{ly:g}">{esc(label)}</text>'
        )
    if marker_x is not None and x0 <= marker_x <= x1:
        parts.append(
            f'<line x1="{px(marker_x):.1f}" x2="{px(marker_x):.1f}" y1="{m["top"]}" y2="{bottom:g}" '
            f'stroke="{_FG2}" stroke-dasharray="3 2"/>'
        )
    y_lo, y_hi = (10**lo, 10**hi) if log else (lo, hi)
    parts.append(
        f'<text x="{m["left"] - 4}" y="{m["top"] + 4}" text-anchor="end">{esc(format_value(y_hi))}</text>'
        f'<text x="{m["left"] - 4}" y="{bottom:g}" text-anchor="end">{esc(format_value(y_lo))}</text>'
        f'<text x="{m["left"]}" y="{bottom + 12:g}" text-anchor="middle">{esc(format_value(x0))}</text>'
        f'<text x="{m["left"] + pw:g}" y="{bottom + 12:g}" text-anchor="middle">{esc(format_value(x1))}</text>'
        f'<text x="{m["left"] + pw / 2:g}" y="{bottom + 26:g}" text-anchor="middle" font-size="11">'
        f"{esc(x_label)}</text>"
        f'<text transform="translate(11,{m["top"] + ph / 2:g}) rotate(-90)" text-anchor="middle" font-size="11">'
        f"{esc(y_label + (' (log)' if log else ''))}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _thin(n: int, length_px: float, spacing_px: float = 12) -> range:
    step = max(1, math.ceil(n / max(1, math.floor(length_px / spacing_px))))
    return range(0, n, step)


def matrix_svg(
    values: np.ndarray,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    x_label: str,
    y_label: str,
    value_title: str,
    log: bool = False,
    max_width: int = 420,
    max_cell: int = 32,
    row_height: float | None = None,
) -> str:
    """A heatmap of ``values [R, C]`` (row 0 at the top) with labelled rows and columns and a colour bar.

    Args:
        values: ``[R, C]`` floats (NaN = no data, drawn grey).
        row_labels: ``R`` strings (left of the rows); col_labels: ``C`` strings (below the columns,
            vertical); both thinned to one per 12 px.
        title: Chart title (above the plot).
        x_label, y_label: Axis titles.
        value_title: Colour-bar title (with units).
        log: Logarithmic colour scale.
        max_width: Width of the cells' area at most.
        max_cell: Largest cell side in pixels.
        row_height: Fixed row height (else cells are square).

    Returns:
        An ``<svg>`` element as text.

    Raises:
        ValueError: For an empty or non-2-D array, or label lists of the wrong length.
    """
    esc = html.escape
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"expected a non-empty [R, C] array, got shape {values.shape}")
    rows, cols = values.shape
    if len(row_labels) != rows or len(col_labels) != cols:
        raise ValueError(f"need {rows} row and {cols} column labels, got {len(row_labels)} and {len(col_labels)}")
    cw = min(max_cell, max_width / cols)
    ch = row_height if row_height is not None else cw
    w, h = cw * cols, ch * rows
    left = 12 + 6 * min(24, max((len(s) for s in row_labels), default=1))
    bottom = 24 + 6 * min(16, max((len(s) for s in col_labels), default=1))
    x0, y0 = left, 22
    bar_title = value_title + (" (log)" if log else "")
    bar_h = max(h, 40, 6 * len(bar_title) + 8)  # room for the bar's rotated title (about 6 px a character)
    total_w, total_h = x0 + w + 100, max(y0 + h + bottom, y0 + bar_h + 18)
    domain = color_domain(values, log)
    heat_uri = _png_uri(color_indices(values, domain, log))
    bar_uri = _png_uri(np.arange(LEVELS - 1, -1, -1, dtype=np.uint8)[:, None])
    parts = [
        _svg_open(total_w, total_h, "tscope-static-matrix"),
        f'<text x="{x0}" y="12" font-weight="600">{esc(title)}</text>',
        f'<image class="tscope-static-heatmap" data-rows="{rows}" data-cols="{cols}" x="{x0}" y="{y0}" '
        f'width="{w:g}" height="{h:g}" preserveAspectRatio="none" style="image-rendering:pixelated" '
        f'href="{heat_uri}"/>',
        f'<rect x="{x0}" y="{y0}" width="{w:g}" height="{h:g}" fill="none" stroke="{_GRID}"/>',
    ]
    for i in _thin(rows, h):
        parts.append(
            f'<text x="{x0 - 4}" y="{y0 + (i + 0.5) * ch:g}" text-anchor="end" dominant-baseline="middle">'
            f"{esc(row_labels[i])}</text>"
        )
    for j in _thin(cols, w):
        parts.append(
            f'<text transform="translate({x0 + (j + 0.5) * cw:g},{y0 + h + 4:g}) rotate(-90)" text-anchor="end" '
            f'dominant-baseline="middle">{esc(col_labels[j])}</text>'
        )
    parts.append(
        f'<text x="{x0 + w / 2:g}" y="{y0 + h + bottom - 4:g}" text-anchor="middle" font-size="11">'
        f"{esc(x_label)}</text>"
        f'<text transform="translate(10,{y0 + h / 2:g}) rotate(-90)" text-anchor="middle" font-size="11">'
        f"{esc(y_label)}</text>"
    )
    bx = x0 + w + 12
    parts.append(
        f'<image x="{bx:g}" y="{y0}" width="12" height="{bar_h:g}" preserveAspectRatio="none" '
        f'style="image-rendering:pixelated" href="{bar_uri}"/>'
        f'<text x="{bx + 16:g}" y="{y0 + 4}" dominant-baseline="middle">{esc(format_value(domain[1]))}</text>'
        f'<text x="{bx + 16:g}" y="{y0 + bar_h - 4:g}" dominant-baseline="middle">'
        f"{esc(format_value(domain[0]))}</text>"
        f'<text transform="translate({bx + 80:g},{y0 + bar_h / 2:g}) rotate(-90)" text-anchor="middle">'
        f"{esc(bar_title)}</text>"
    )
    if np.isnan(values).any():
        parts.append(f'<text x="{bx:g}" y="{y0 + bar_h + 14:g}" fill="{_FG2}">grey: no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def compose_svg(charts: Sequence[str], *, max_width: float = 880, gap: float = 12) -> str:
    """Lay out chart SVGs left to right, wrapping into rows no wider than ``max_width``, as one SVG document.

    Each chart keeps its size and content (nested ``<svg>`` elements placed with ``x``/``y``).

    Args:
        charts: SVG elements as text (from :func:`line_chart_svg`, :func:`matrix_svg`, ...), each with
            ``width`` and ``height`` in pixels; at least one.
        max_width: Widest row in pixels (a wider chart gets a row of its own).
        gap: Space between charts in pixels.

    Returns:
        An ``<svg>`` document as text.

    Raises:
        ValueError: Without charts, or for a chart without a size.
    """
    if not charts:
        raise ValueError("compose_svg needs at least one chart")
    placed, x, y, row_h, width = [], 0.0, 0.0, 0.0, 0.0
    for chart in charts:
        w, h = svg_size(chart)
        if x > 0 and x + w > max_width:
            x, y, row_h = 0.0, y + row_h + gap, 0.0
        placed.append(f'<svg x="{x:g}" y="{y:g}" ' + chart[len("<svg ") :])
        width, row_h = max(width, x + w), max(row_h, h)
        x += w + gap
    height = y + row_h
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="tscope-static-charts" width="{width:g}" '
        f'height="{height:g}" viewBox="0 0 {width:g} {height:g}">' + "".join(placed) + "</svg>"
    )
