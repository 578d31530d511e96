r"""The static picture of a :class:`~tscope_widgets.widgets.landscape.LandscapeWidget` (an SVG document, shown
as an ``<img>`` by ``_static.picture_html``), for outputs where the live view cannot run (a notebook converted
by nbconvert, a viewer without a kernel).

It draws what the live 2D view draws, with the colour rules of :mod:`._static` (viridis over the finite
values, the positive ones on a log scale; grey for points not computed yet): the grid ``[A, B]`` as an
embedded PNG with :math:`\alpha` across and :math:`\beta` upwards, contour lines at the live view's levels
(nice round values, :func:`contour_levels`, the rule of ``contourLevels`` in ``js/src/lib/contours.js``),
computed with ``contourpy`` (a Bokeh dependency), the projected trajectory, the origin, numeric axes and a
colour bar. Every caller string is escaped.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence

import contourpy
import numpy as np

from ._static import LEVELS, PALETTE, color_domain, color_indices, encode_png, format_value

__all__ = ["contour_levels", "contour_lines", "landscape_svg", "nice_ticks"]

_FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"
_PLOT_PX = 400  # plot area side, as in the live view (js/src/landscape_widget.js)
_MARGIN = {"left": 64, "top": 10, "right": 104, "bottom": 46}
_CONTOUR_COUNT = 10


def nice_ticks(lo: float, hi: float, count: int) -> list[float]:
    """Round values in ``[lo, hi]`` about ``count`` of them, with d3-array's rule (``ticks`` in d3 v3).

    Steps are 1, 2, 5 or 10 times a power of ten, so the live view and this picture agree.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or count <= 0:
        return []
    if lo == hi:
        return [lo]
    if lo > hi:
        return nice_ticks(hi, lo, count)[::-1]
    step = (hi - lo) / max(count, 0.5)
    power = math.floor(math.log10(step))
    error = step / 10**power
    factor = 10 if error >= math.sqrt(50) else 5 if error >= math.sqrt(10) else 2 if error >= math.sqrt(2) else 1
    if power < 0:
        inc = 10 ** (-power) / factor
        i1, i2 = round(lo * inc), round(hi * inc)
        if i1 / inc < lo:
            i1 += 1
        if i2 / inc > hi:
            i2 -= 1
        return [i / inc for i in range(i1, i2 + 1)]
    inc = 10**power * factor
    i1, i2 = round(lo / inc), round(hi / inc)
    if i1 * inc < lo:
        i1 += 1
    if i2 * inc > hi:
        i2 -= 1
    return [i * inc for i in range(i1, i2 + 1)]


def contour_levels(domain: tuple[float, float], count: int = _CONTOUR_COUNT, log: bool = False) -> list[float]:
    """Contour levels strictly inside ``domain`` (round values; in log10 for ``log``), at least one.

    Raises:
        ValueError: For ``lo >= hi``, or ``lo <= 0`` with ``log``.
    """
    lo, hi = domain
    if not hi > lo or (log and not lo > 0):
        raise ValueError(f"bad contour domain {domain}")
    if log:
        inside = [10**e for e in nice_ticks(math.log10(lo), math.log10(hi), count)]
        inside = [v for v in inside if lo < v < hi]
        return inside or [math.sqrt(lo * hi)]
    inside = [v for v in nice_ticks(lo, hi, count) if lo < v < hi]
    return inside or [(lo + hi) / 2]


def contour_lines(
    alphas: np.ndarray, betas: np.ndarray, values: np.ndarray, levels: Sequence[float], log: bool = False
) -> list[tuple[float, list[np.ndarray]]]:
    """Contour lines of ``values [A, B]`` over the grid, in grid coordinates.

    Args:
        alphas: ``[A]`` ascending coordinates (first axis of ``values``).
        betas: ``[B]`` ascending coordinates.
        values: ``[A, B]`` floats; NaN (not computed) is left out, as are values ``<= 0`` for ``log``.
        levels: Contour values.
        log: Interpolate in log values.

    Returns:
        ``[(level, [line [n, 2] of (alpha, beta)])]``; lines stop where values are missing.
    """
    z = np.array(values, dtype=np.float64).T  # [B, A]: contourpy wants z[y, x]
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(z > 0, np.log(z), np.nan)
    if z.shape[0] < 2 or z.shape[1] < 2 or np.isfinite(z).sum() < 4:
        return [(float(level), []) for level in levels]
    z = np.where(np.isfinite(z), z, np.nan)
    gen = contourpy.contour_generator(np.asarray(alphas, float), np.asarray(betas, float), z, line_type="Separate")
    out = []
    for level in levels:
        v = math.log(level) if log else level
        out.append((float(level), [np.asarray(line) for line in gen.lines(v) if len(line) >= 2]))
    return out


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


def _png_uri(indices: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(indices, PALETTE)).decode("ascii")


def _polyline(xs: np.ndarray, ys: np.ndarray) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


def landscape_svg(
    alphas: np.ndarray,
    betas: np.ndarray,
    values: np.ndarray,
    *,
    value_title: str,
    x_title: str = "α",
    y_title: str = "β",
    log: bool = False,
    contours: bool = True,
    trajectory: np.ndarray | None = None,
    trajectory_steps: Sequence[int] | None = None,
) -> str:
    """An SVG document of a landscape grid: the cells as an embedded PNG, contour lines
    (``<polyline class="tscope-static-contour">``), the trajectory, the origin, axes and a colour bar.

    Args:
        alphas: ``[A]`` ascending coordinates along the first direction (across).
        betas: ``[B]`` ascending coordinates along the second direction (upwards).
        values: ``[A, B]`` floats (NaN = not computed yet).
        value_title: Colour-bar title (quantity and units).
        x_title, y_title: Axis titles.
        log: Logarithmic colour scale (and contours in log values).
        contours: Draw contour lines.
        trajectory: ``[T, 2]`` points ``(alpha, beta)`` drawn as a path, or ``None``.
        trajectory_steps: ``[T]`` step numbers for the first and last point's labels (default ``0..T-1``).

    Returns:
        SVG text; every caller string is escaped.

    Raises:
        ValueError: For ``values`` whose shape is not ``[A, B]``, or without a finite value.
    """
    esc = html.escape
    alphas = np.asarray(alphas, dtype=np.float64)
    betas = np.asarray(betas, dtype=np.float64)
    A, B = alphas.size, betas.size
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (A, B):
        raise ValueError(f"values must have shape [A, B] = [{A}, {B}], got {list(values.shape)}")
    if not np.isfinite(values).any():
        raise ValueError("values has no finite entry: nothing to draw yet")
    m = _MARGIN
    x0, y0, w, h = m["left"], m["top"], _PLOT_PX, _PLOT_PX
    cw, ch = w / A, h / B
    total_w, total_h = x0 + w + m["right"], y0 + h + m["bottom"]
    fx = _axis_map(alphas, x0 + cw / 2, cw)
    fy = _axis_map(betas, y0 + h - ch / 2, -ch)
    domain = color_domain(values, log)
    image = color_indices(values.T[::-1], domain, log)  # [B, A], largest beta in the top row
    bar_uri = _png_uri(np.arange(LEVELS - 1, -1, -1, dtype=np.uint8)[:, None])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:g}" height="{total_h:g}" '
        f'viewBox="0 0 {total_w:g} {total_h:g}" font-family="{_FONT}" font-size="10" fill="#1f1f1f">',
        # the PNG's rows are the B values of beta (largest at the top), its columns the A values of alpha
        f'<image class="tscope-static-heatmap" data-rows="{B}" data-cols="{A}" x="{x0}" y="{y0}" width="{w}" '
        f'height="{h}" preserveAspectRatio="none" style="image-rendering:pixelated" href="{_png_uri(image)}"/>',
        # a nested viewport clips the overlays to the plot area (no ids needed)
        f'<svg x="{x0}" y="{y0}" width="{w}" height="{h}" viewBox="{x0} {y0} {w} {h}" overflow="hidden">',
    ]
    if contours:
        for _, lines in contour_lines(alphas, betas, values, contour_levels(domain, log=log), log):
            for line in lines:
                parts.append(
                    f'<polyline class="tscope-static-contour" points="{_polyline(fx(line[:, 0]), fy(line[:, 1]))}" '
                    'fill="none" stroke="#ffffff" stroke-opacity="0.75" stroke-width="1"/>'
                )
    ox, oy = float(fx(0.0)), float(fy(0.0))
    parts.append(
        f'<path d="M{ox - 6:.1f},{oy:.1f}h12M{ox:.1f},{oy - 6:.1f}v12" stroke="#000" stroke-opacity="0.6" '
        f'stroke-width="3"/><path d="M{ox - 6:.1f},{oy:.1f}h12M{ox:.1f},{oy - 6:.1f}v12" stroke="#fff" '
        'stroke-width="1.5"/>'
    )
    if trajectory is not None and len(trajectory):
        pts = np.asarray(trajectory, dtype=np.float64).reshape(-1, 2)
        keep = np.isfinite(pts).all(axis=1)
        steps = np.arange(len(pts)) if trajectory_steps is None else np.asarray(trajectory_steps)
        pts, steps = pts[keep], steps[keep]
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
        for k in sorted({0, len(px) - 1}):
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
    parts.append(
        f'<text x="{x0 + w / 2:g}" y="{total_h - 4:g}" text-anchor="middle" font-size="11">{esc(x_title)}</text>'
        f'<text transform="translate(12,{y0 + h / 2:g}) rotate(-90)" text-anchor="middle" font-size="11">'
        f"{esc(y_title)}</text>"
    )
    bx = x0 + w + 12
    parts.append(
        f'<image x="{bx:g}" y="{y0}" width="12" height="{h:g}" preserveAspectRatio="none" '
        f'style="image-rendering:pixelated" href="{bar_uri}"/>'
        f'<text x="{bx + 16:g}" y="{y0 + 4}" dominant-baseline="middle">{esc(format_value(domain[1]))}</text>'
        f'<text x="{bx + 16:g}" y="{y0 + h - 4:g}" dominant-baseline="middle">{esc(format_value(domain[0]))}</text>'
        f'<text transform="translate({bx + 66:g},{y0 + h / 2:g}) rotate(-90)" text-anchor="middle">'
        f"{esc(value_title + (' (log)' if log else ''))}</text>"
    )
    if np.isnan(values).any():
        parts.append(f'<text x="{bx:g}" y="{y0 + h + 16:g}" fill="#616161">grey: not computed</text>')
    parts.append("</svg>")
    return "".join(parts)
