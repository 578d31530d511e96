r"""Chart descriptions drawn as static SVG: the pictures that stand in for a live view (saved or converted
notebooks, viewers without a kernel).

Each chart becomes one self-contained ``<svg>`` element (:func:`line_chart_svg`, :func:`matrix_svg`,
:func:`landscape_svg`); :func:`render_svg` lays several out as one document (:func:`compose_svg`). Heatmap
cells are an embedded PNG (one pixel per cell, palette-indexed, scaled up without smoothing), written by
:mod:`.png` (:func:`~.png.encode_png`): an ``<img>`` with a ``data:`` SVG source survives HTML sanitizers that
drop inline ``<svg>`` and ``<style>``. Every decision (colour scale, series colours, ranges, labels, contour
levels) comes from the description; this module only places it. Elements carry classes and ``data-``
attributes (``tscope-static-title``, ``tscope-static-colorbar`` with ``data-lo``/``data-hi``/``data-log``,
``tscope-static-series`` with ``data-key`` ...) so that tests can read back what is drawn. Every caller string
is escaped.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence

import numpy as np

from .charts import (
    ColorScale,
    LandscapeChart,
    LineChart,
    MatrixChart,
    format_value,
    nice_ticks,
)
from .landscape import thin_labels
from .png import LEVELS, NAN_INDEX, NONPOSITIVE_INDEX, PALETTE, color_indices, encode_png, palette_of, png_data_uri
from .sensitivity import sensitivity_chart

__all__ = [
    # renderers
    "compose_svg",
    "heatmap_svg",
    "landscape_svg",
    "line_chart_svg",
    "matrix_svg",
    "render_svg",
    "svg_size",
    # palette images, defined in .png and importable from here too
    "LEVELS",
    "NAN_INDEX",
    "NONPOSITIVE_INDEX",
    "PALETTE",
    "color_indices",
    "encode_png",
    "palette_of",
]

FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"
_FG, _FG2, _GRID = "#1f1f1f", "#616161", "#9e9e9e"
_SVG_SIZE = re.compile(r'<svg [^>]*?\bwidth="(?P<width>[0-9.]+)" height="(?P<height>[0-9.]+)"')
_LANDSCAPE_PX = 400  # plot area side, as in the live view (js/src/landscape_widget.js)
_LANDSCAPE_MARGIN = {"left": 64, "top": 10, "right": 104, "bottom": 46}


def svg_size(svg: str) -> tuple[float, float]:
    """``(width, height)`` in pixels of the SVG document ``svg`` (its root element's attributes).

    Raises:
        ValueError: If ``svg`` does not start with an ``<svg ...>`` element with ``width`` and ``height``.
    """
    size = _SVG_SIZE.match(svg)
    if size is None:
        raise ValueError("svg must start with an <svg ...> element that has width and height in pixels")
    return float(size["width"]), float(size["height"])


# ---------------------------------------------------------------------------- pieces
def _svg_open(width: float, height: float, cls: str, attrs: str = "") -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}" width="{width:g}" height="{height:g}" '
        f'viewBox="0 0 {width:g} {height:g}" font-family="{FONT}" font-size="10" fill="{_FG}"{attrs}>'
    )


def _title(x: float, text: str) -> str:
    return f'<text class="tscope-static-title" x="{x:g}" y="12" font-weight="600">{html.escape(text)}</text>'


def _x_label(x: float, y: float, text: str) -> str:
    return (
        f'<text class="tscope-static-x-label" x="{x:g}" y="{y:g}" text-anchor="middle" font-size="11">'
        f"{html.escape(text)}</text>"
    )


def _y_label(x: float, y: float, text: str) -> str:
    return (
        f'<text class="tscope-static-y-label" transform="translate({x:g},{y:g}) rotate(-90)" text-anchor="middle" '
        f'font-size="11">{html.escape(text)}</text>'
    )


def _color_bar(scale: ColorScale, x: float, y: float, h: float, title: str, title_dx: float) -> str:
    """The colour bar (high at the top) with its end values and its rotated title."""
    esc = html.escape
    uri = png_data_uri(np.arange(LEVELS - 1, -1, -1, dtype=np.uint8)[:, None], palette_of(scale))
    return (
        f'<image class="tscope-static-colorbar" data-lo="{scale.lo!r}" data-hi="{scale.hi!r}" '
        f'data-log="{str(scale.log).lower()}" x="{x:g}" y="{y:g}" width="12" height="{h:g}" '
        f'preserveAspectRatio="none" style="image-rendering:pixelated" href="{uri}"/>'
        f'<text x="{x + 16:g}" y="{y + 4:g}" dominant-baseline="middle">{esc(format_value(scale.hi))}</text>'
        f'<text x="{x + 16:g}" y="{y + h - 4:g}" dominant-baseline="middle">{esc(format_value(scale.lo))}</text>'
        f'<text class="tscope-static-bar-title" transform="translate({x + title_dx:g},{y + h / 2:g}) rotate(-90)" '
        f'text-anchor="middle">{esc(title)}</text>'
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


def _thin(n: int, length_px: float, spacing_px: float = 12) -> range:
    step = max(1, math.ceil(n / max(1, math.floor(length_px / spacing_px))))
    return range(0, n, step)


# ---------------------------------------------------------------------------- charts
def _heatmap_image(values: np.ndarray, scale: ColorScale, x: float, y: float, w: float, h: float) -> str:
    """The cells ``values [R, C]`` (row 0 at the top) as a palette PNG stretched over ``w x h`` px, unsmoothed."""
    rows, cols = values.shape
    uri = png_data_uri(color_indices(values, (scale.lo, scale.hi), scale.log), palette_of(scale))
    return (
        f'<image class="tscope-static-heatmap" data-rows="{rows}" data-cols="{cols}" x="{x}" y="{y}" '
        f'width="{w:g}" height="{h:g}" preserveAspectRatio="none" style="image-rendering:pixelated" href="{uri}"/>'
    )


def line_chart_svg(chart: LineChart, *, width: int = 420, height: int = 170) -> str:
    """A :class:`LineChart` as an ``<svg class="tscope-static-lines">`` element: lines (and bands), a legend,
    the marker, end ticks and axis titles; a "no data" note when nothing can be drawn."""
    esc = html.escape
    m = {"left": 56, "right": 12, "top": 20, "bottom": 34}
    legend = _legend_layout([s.label for s in chart.series], m["left"], width - m["right"])
    legend_rows = legend[-1][1] + 1 if legend else 0
    legend_top = height + 10  # legend rows start below the x-axis title (at height - 8)
    total_h = legend_top + 14 * legend_rows - (4 if legend_rows else 10)
    log = chart.log_y
    attrs = f' data-log-y="{str(log).lower()}"'
    if chart.y_range is not None:
        attrs += f' data-y-lo="{chart.y_range[0]!r}" data-y-hi="{chart.y_range[1]!r}"'
    parts = [_svg_open(width, total_h, "tscope-static-lines", attrs), _title(m["left"], chart.title)]
    xs = np.asarray(chart.x, dtype=np.float64)
    pw, ph = width - m["left"] - m["right"], height - m["top"] - m["bottom"]
    bottom = m["top"] + ph
    for k, s in enumerate(chart.series):  # the legend, also without data
        lx, row = legend[k]
        ly = legend_top + 14 * row
        parts.append(
            f'<rect x="{lx:g}" y="{ly - 7:g}" width="10" height="3" fill="{s.color}"/>'
            f'<text class="tscope-static-legend" data-key="{esc(s.key)}" x="{lx + 14:g}" y="{ly:g}">'
            f"{esc(s.label)}</text>"
        )
    parts.append(_x_label(m["left"] + pw / 2, bottom + 26, chart.x_label))
    parts.append(_y_label(11, m["top"] + ph / 2, chart.y_title))
    if chart.x_range is None or chart.y_range is None:
        parts.append(f'<text x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle" fill="{_FG2}">no data</text>')
        parts.append("</svg>")
        return "".join(parts)
    x0, x1 = chart.x_range
    lo, hi = (math.log10(v) for v in chart.y_range) if log else chart.y_range

    def px(x: float) -> float:
        return m["left"] + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        v = math.log10(y) if log else y
        return m["top"] + (1 - (v - lo) / (hi - lo)) * ph

    def usable(ys: np.ndarray) -> np.ndarray:
        ys = np.asarray(ys, dtype=np.float64)
        return np.isfinite(ys) & (ys > 0 if log else True)

    parts.append(f'<path d="M{m["left"]},{m["top"]}V{bottom:g}H{m["left"] + pw:g}" fill="none" stroke="{_GRID}"/>')
    for s in chart.series:
        if s.band is None:
            continue
        b_lo, b_hi = (np.asarray(b, dtype=np.float64) for b in s.band)
        ok = usable(b_lo) & usable(b_hi)
        d, k = [], 0
        while k < xs.size:  # one closed polygon per run of usable points
            if not ok[k]:
                k += 1
                continue
            run = [k]
            while k + 1 < xs.size and ok[k + 1]:
                k += 1
                run.append(k)
            k += 1
            top = [f"{px(xs[i]):.1f},{py(b_hi[i]):.1f}" for i in run]
            low = [f"{px(xs[i]):.1f},{py(b_lo[i]):.1f}" for i in reversed(run)]
            d.append("M" + "L".join(top + low) + "Z")
        if d:
            parts.append(
                f'<path class="tscope-static-band" data-key="{esc(s.key)}" d="{"".join(d)}" fill="{s.color}" '
                'fill-opacity="0.18" stroke="none"/>'
            )
    for s in chart.series:
        ys = np.asarray(s.y, dtype=np.float64)
        ok = usable(ys)
        d, pen = [], False
        for x, y, good in zip(xs, ys, ok, strict=True):
            if not good:
                pen = False
                continue
            d.append(f"{'L' if pen else 'M'}{px(x):.1f},{py(y):.1f}")
            pen = True
        parts.append(
            f'<path class="tscope-static-series" data-key="{esc(s.key)}" d="{"".join(d)}" fill="none" '
            f'stroke="{s.color}" stroke-width="1.5"/>'
        )
        dots = np.flatnonzero(ok) if chart.dots or ok.sum() == 1 else ()
        parts.extend(f'<circle cx="{px(xs[i]):.1f}" cy="{py(ys[i]):.1f}" r="2" fill="{s.color}"/>' for i in dots)
    if chart.marker_x is not None:
        mx = px(chart.marker_x)
        parts.append(
            f'<line class="tscope-static-marker" x1="{mx:.1f}" x2="{mx:.1f}" y1="{m["top"]}" y2="{bottom:g}" '
            f'stroke="{_FG2}" stroke-dasharray="3 2"/>'
        )
    y_lo, y_hi = chart.y_range
    parts.append(
        f'<text x="{m["left"] - 4}" y="{m["top"] + 4}" text-anchor="end">{esc(format_value(y_hi))}</text>'
        f'<text x="{m["left"] - 4}" y="{bottom:g}" text-anchor="end">{esc(format_value(y_lo))}</text>'
        f'<text x="{m["left"]}" y="{bottom + 12:g}" text-anchor="middle">{esc(format_value(x0))}</text>'
        f'<text x="{m["left"] + pw:g}" y="{bottom + 12:g}" text-anchor="middle">{esc(format_value(x1))}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def matrix_svg(chart: MatrixChart, *, max_width: int = 420, max_cell: int = 32, row_height: float = 14) -> str:
    """A :class:`MatrixChart` as an ``<svg class="tscope-static-matrix">`` element: the cells (row 0 at the
    top), row and column labels (thinned to one per 12 px), axis titles and a colour bar.

    Args:
        chart: The description.
        max_width: Width of the cells' area at most.
        max_cell: Largest cell side in pixels.
        row_height: Row height of a chart without square cells.
    """
    esc = html.escape
    values = np.asarray(chart.values, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"expected a non-empty [R, C] array, got shape {values.shape}")
    rows, cols = values.shape
    cw = min(max_cell, max_width / cols)
    ch = cw if chart.square else row_height
    w, h = cw * cols, ch * rows
    left = 12 + 6 * min(24, max((len(s) for s in chart.row_labels), default=1))
    bottom = 24 + 6 * min(16, max((len(s) for s in chart.col_labels), default=1))
    x0, y0 = left, 22 if chart.title else 8
    bar_title = chart.bar_title
    bar_h = max(h, 40, 6 * len(bar_title) + 8)  # room for the bar's rotated title (about 6 px a character)
    total_w, total_h = x0 + w + 100, max(y0 + h + bottom, y0 + bar_h + 18)
    scale = chart.scale
    parts = [_svg_open(total_w, total_h, "tscope-static-matrix")]
    if chart.title:
        parts.append(_title(x0, chart.title))
    parts += [
        _heatmap_image(values, scale, x0, y0, w, h),
        f'<rect x="{x0}" y="{y0}" width="{w:g}" height="{h:g}" fill="none" stroke="{_GRID}"/>',
    ]
    for k in chart.separators:  # block boundaries across the whole matrix
        parts.append(
            f'<path class="tscope-static-separator" data-index="{k}" d="M{x0 + k * cw:g},{y0}v{h:g}M{x0},'
            f'{y0 + k * ch:g}h{w:g}" stroke="{_FG}" stroke-width="0.75" fill="none"/>'
        )
    for i in _thin(rows, h):
        parts.append(
            f'<text class="tscope-static-row-label" data-index="{i}" x="{x0 - 4}" y="{y0 + (i + 0.5) * ch:g}" '
            f'text-anchor="end" dominant-baseline="middle">{esc(chart.row_labels[i])}</text>'
        )
    for j in _thin(cols, w):
        parts.append(
            f'<text class="tscope-static-col-label" data-index="{j}" '
            f'transform="translate({x0 + (j + 0.5) * cw:g},{y0 + h + 4:g}) rotate(-90)" text-anchor="end" '
            f'dominant-baseline="middle">{esc(chart.col_labels[j])}</text>'
        )
    parts.append(_x_label(x0 + w / 2, y0 + h + bottom - 4, chart.x_label))
    parts.append(_y_label(10, y0 + h / 2, chart.y_label))
    bx = x0 + w + 12
    parts.append(_color_bar(scale, bx, y0, bar_h, bar_title, 80))
    if np.isnan(values).any():
        parts.append(f'<text x="{bx:g}" y="{y0 + bar_h + 14:g}" fill="{_FG2}">{esc(chart.nan_note)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _axis_map(values: np.ndarray, first_px: float, step_px: float):
    """Grid coordinate -> pixel: grid point ``k`` at ``first_px + k * step_px``, piecewise linear, extended
    linearly beyond the ends (as ``gridScales`` in ``js/src/lib/grid.js``)."""
    v = np.asarray(values, dtype=np.float64)
    px = first_px + step_px * np.arange(v.size)
    if v.size == 1:
        return lambda x: first_px + (np.asarray(x, float) - v[0]) * step_px / 2

    def f(x):
        x = np.asarray(x, dtype=np.float64)
        y = np.interp(x, v, px)
        lo_slope = (px[1] - px[0]) / (v[1] - v[0])
        hi_slope = (px[-1] - px[-2]) / (v[-1] - v[-2])
        y = np.where(x < v[0], px[0] + (x - v[0]) * lo_slope, y)
        return np.where(x > v[-1], px[-1] + (x - v[-1]) * hi_slope, y)

    return f


def _polyline(xs: np.ndarray, ys: np.ndarray) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


def landscape_svg(chart: LandscapeChart) -> str:
    """A :class:`LandscapeChart` as an ``<svg class="tscope-static-landscape">`` element: the cells
    (:math:`\\alpha` across, :math:`\\beta` upwards), contour lines (``tscope-static-contour``), the trajectory,
    the origin, numeric axes and a colour bar.

    Raises:
        ValueError: Without a finite value (nothing to draw yet).
    """
    esc = html.escape
    alphas, betas = np.asarray(chart.alphas, np.float64), np.asarray(chart.betas, np.float64)
    values = np.asarray(chart.values, dtype=np.float64)
    A, B = alphas.size, betas.size
    if not np.isfinite(values).any():
        raise ValueError("values has no finite entry: nothing to draw yet")
    m = _LANDSCAPE_MARGIN
    x0, w, h = m["left"], _LANDSCAPE_PX, _LANDSCAPE_PX
    y0 = m["top"] + (16 if chart.title else 0)
    cw, ch = w / A, h / B
    total_w, total_h = x0 + w + m["right"], y0 + h + m["bottom"]
    fx = _axis_map(alphas, x0 + cw / 2, cw)
    fy = _axis_map(betas, y0 + h - ch / 2, -ch)
    scale = chart.scale
    parts = [_svg_open(total_w, total_h, "tscope-static-landscape")]
    if chart.title:
        parts.append(_title(x0, chart.title))
    parts += [
        # the PNG's rows are the B values of beta (largest at the top), its columns the A values of alpha
        _heatmap_image(values.T[::-1], scale, x0, y0, w, h),
        # a nested viewport clips the overlays to the plot area (no ids needed)
        f'<svg x="{x0}" y="{y0}" width="{w}" height="{h}" viewBox="{x0} {y0} {w} {h}" overflow="hidden">',
    ]
    for level, lines in chart.contour_lines:
        for line in lines:
            parts.append(
                f'<polyline class="tscope-static-contour" data-level="{level!r}" '
                f'points="{_polyline(fx(line[:, 0]), fy(line[:, 1]))}" '
                'fill="none" stroke="#ffffff" stroke-opacity="0.75" stroke-width="1"/>'
            )
    if chart.origin is not None:
        ox, oy = float(fx(chart.origin[0])), float(fy(chart.origin[1]))
        cross = f"M{ox - 6:.1f},{oy:.1f}h12M{ox:.1f},{oy - 6:.1f}v12"
        parts.append(
            f'<path class="tscope-static-origin" d="{cross}" stroke="#000" stroke-opacity="0.6" stroke-width="3"/>'
            f'<path d="{cross}" stroke="#fff" stroke-width="1.5"/>'
        )
    if chart.trajectory is not None and len(chart.trajectory):
        pts = np.asarray(chart.trajectory, dtype=np.float64).reshape(-1, 2)
        steps = chart.trajectory_steps if chart.trajectory_steps is not None else np.arange(len(pts))
        px, py = fx(pts[:, 0]), fy(pts[:, 1])
        points = _polyline(px, py)
        parts.append(
            f'<polyline class="tscope-static-trajectory" points="{points}" fill="none" stroke="#000" '
            f'stroke-opacity="0.5" stroke-width="3.5"/><polyline points="{points}" fill="none" '
            'stroke="#e91e63" stroke-width="1.75"/>'
        )
        for k, (x, y) in enumerate(zip(px, py, strict=True)):
            end = k in (0, len(px) - 1)
            fill = "#ffffff" if k == 0 else "#e91e63"
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{4 if end else 2.5}" fill="{fill}" stroke="#000" '
                'stroke-opacity="0.7"/>'
            )
        for k in thin_labels(np.stack([px, py], axis=1), [0, len(px) - 1]):
            parts.append(
                f'<text x="{px[k] + 5:.1f}" y="{py[k] - 3:.1f}" fill="#fff" stroke="#000" stroke-opacity="0.65" '
                f'stroke-width="3" paint-order="stroke">{esc(str(int(steps[k])))}</text>'
            )
    parts.append("</svg>")
    parts.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#9e9e9e"/>')
    for a in nice_ticks(alphas[0], alphas[-1], 6):
        x = float(fx(a))
        parts.append(
            f'<path d="M{x:.1f},{y0 + h}v4" stroke="#616161"/><text x="{x:.1f}" y="{y0 + h + 15}" '
            f'text-anchor="middle">{esc(format_value(a))}</text>'
        )
    for b in nice_ticks(betas[0], betas[-1], 6):
        y = float(fy(b))
        parts.append(
            f'<path d="M{x0 - 4},{y:.1f}h4" stroke="#616161"/><text x="{x0 - 6}" y="{y:.1f}" text-anchor="end" '
            f'dominant-baseline="middle">{esc(format_value(b))}</text>'
        )
    parts.append(_x_label(x0 + w / 2, total_h - 4, chart.x_label))
    parts.append(_y_label(12, y0 + h / 2, chart.y_label))
    bx = x0 + w + 12
    parts.append(_color_bar(scale, bx, y0, h, chart.bar_title, 66))
    if np.isnan(values).any():
        parts.append(f'<text x="{bx:g}" y="{y0 + h + 16:g}" fill="{_FG2}">{esc(chart.nan_note)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def chart_svg(chart: LineChart | MatrixChart | LandscapeChart) -> str:
    """One chart as an ``<svg>`` element (also a standalone SVG document)."""
    if isinstance(chart, LineChart):
        return line_chart_svg(chart)
    if isinstance(chart, MatrixChart):
        return matrix_svg(chart)
    if isinstance(chart, LandscapeChart):
        return landscape_svg(chart)
    from .sweep import SweepChart  # the sweep view's renderer imports this module's helpers

    if isinstance(chart, SweepChart):
        from .svg_sweep import sweep_chart_svg

        return sweep_chart_svg(chart)
    raise TypeError(f"not a chart description: {type(chart).__name__}")


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


def render_svg(charts: Sequence[LineChart | MatrixChart | LandscapeChart]) -> str | None:
    """Charts as one SVG document: a single chart's own element, several laid out by :func:`compose_svg`;
    None without charts."""
    if not charts:
        return None
    if len(charts) == 1:
        return chart_svg(charts[0])
    return compose_svg([chart_svg(c) for c in charts])


def heatmap_svg(values, *, token_labels: Sequence[str] = (), log: bool = False, value_title: str = "") -> str:
    """An SVG document of a sensitivity map ``[S, S]`` (:func:`~.sensitivity.sensitivity_chart` drawn by
    :func:`matrix_svg`): the cells, position labels (``i:token``) on both axes and a colour bar.

    Raises:
        ValueError: For an empty or non-square array.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"expected a non-empty [S, S] array, got shape {values.shape}")
    labels = list(token_labels)
    labels = (labels + [""] * values.shape[0])[: values.shape[0]] if labels else None
    return matrix_svg(sensitivity_chart(values, token_labels=labels, log=log, value_title=value_title))
