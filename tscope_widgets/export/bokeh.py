r"""Static Bokeh figures from plain arrays: sensitivity heatmaps, line charts, matrices, landscapes.

Thin wrappers: each builds a chart description (:mod:`tscope_widgets.figures`) and renders it with
:mod:`tscope_widgets.figures.bokeh`, so these figures follow the same rules as the widgets' pictures and live
views. Sensitivity maps default to the ``"auto"`` scale (logarithmic where the values span decades, never for
counts). Colour scales span the finite values (the positive ones on a log scale) over their full range, NaN is
grey, values ``<= 0`` on a log scale take the background colour; ``vmin``/``vmax``/``percentiles``/``log_range``
clip a scale on request (values below then take the lowest colour). Line colours follow the series palette
(Tableau 10, in order) unless ``colors`` are given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from bokeh.models import Range1d

from ..figures.bokeh import (
    RECT_MAX_CELLS,
    landscape_chart_figure,
    line_chart_figure,
    matrix_chart_figure,
    matrix_grid,
)
from ..figures.charts import NAN_COLOR, MatrixChart, Series, as_array, color_scale, line_chart, series_color
from ..figures.landscape import landscape_chart
from ..figures.sensitivity import QUANTITY, STATISTICS, position_labels, sensitivity_chart, sensitivity_grid

__all__ = [
    "NAN_COLOR",
    "STATISTICS",
    "landscape_heatmap",
    "line_figure",
    "matrix_figure",
    "position_labels",
    "sensitivity_figures",
    "sensitivity_heatmap",
]

RECT_MAX_POSITIONS = 256  # maps up to 256 × 256 use one rect per cell (hover with token names)
LANDSCAPE_RECT_MAX_POINTS = RECT_MAX_CELLS


def sensitivity_heatmap(
    values,
    *,
    title: str = "",
    token_labels: Sequence[str] | None = None,
    log: bool | str = "auto",
    value_name: str = "value",
    palette: str | Sequence[str] = "Viridis256",
    vmin: float | None = None,
    vmax: float | None = None,
    percentiles: tuple[float, float] | None = None,
    log_range: float | None = None,
    width: int = 420,
    height: int = 400,
    max_ticks: int = 40,
    x_label: str = "input position j",
    y_label: str = "output position i",
    x_range: Range1d | None = None,
    y_range: Range1d | None = None,
):
    """A Bokeh figure of one ``[S, S]`` map, row ``i`` (output) against column ``j`` (input).

    Args:
        values: ``[S, S]`` tensor or array (any real dtype; NaN = no data).
        title: Figure title.
        token_labels: ``S`` strings naming each position; ticks read ``"i:token"`` (whitespace made visible).
        log: Logarithmic colour scale: True, False or ``"auto"`` (where the values span decades).
        value_name: Name of the value in the hover and on the colour bar.
        palette: Bokeh palette name or list of colours.
        vmin: Lower colour-scale limit (default: the shared rule, the smallest finite value; for ``log`` the
            smallest positive one).
        vmax: Upper colour-scale limit (default: the largest finite value).
        percentiles: ``(p_lo, p_hi)``: limits at these percentiles of the values (``vmin``/``vmax`` win).
        log_range: If given, a default log scale spans at most ``vmax / log_range`` .. ``vmax``.
        width: Width in pixels.
        height: Height in pixels.
        max_ticks: At most this many labelled ticks per axis (every ``ceil(S / max_ticks)``-th position).
        x_label: Title of the x axis (input positions ``j``).
        y_label: Title of the y axis (output positions ``i``).
        x_range: x range to share with another heatmap of the same ``S`` (linked pan/zoom), or None.
        y_range: y range to share likewise, or None.

    Returns:
        ``bokeh.plotting.figure`` with the heatmap, a colour bar and a hover tool.

    Raises:
        ValueError: for a non-square input, token labels of the wrong length or ``vmin <= 0`` with ``log``.
    """
    chart = sensitivity_chart(
        values,
        title=title,
        token_labels=token_labels,
        log=log,
        value_title=value_name,
        value_name=value_name,
        vmin=vmin,
        vmax=vmax,
        percentiles=percentiles,
        log_range=log_range,
        colormap=palette,
    )
    chart = dataclasses.replace(chart, x_label=x_label, y_label=y_label)
    return matrix_chart_figure(chart, width=width, height=height, max_ticks=max_ticks, x_range=x_range, y_range=y_range)


def sensitivity_figures(
    stats: Mapping,
    token_labels: Sequence[str] | None = None,
    statistics: Sequence[str] = ("mean", "std"),
    *,
    log: bool | str = "auto",
    quantity: str = QUANTITY,
    width: int = 420,
    height: int = 400,
):
    r"""A grid of heatmaps: one row per layer, one column per statistic, with shared pan/zoom.

    Args:
        stats: ``{layer: WelfordState}`` (or ``{layer: {statistic: [S, S]}}``), all with the same ``S``.
        token_labels: ``S`` strings for the axes.
        statistics: Names among ``mean, std, var, sem, cv, min, max, count``.
        log: Log colour scale for every panel: True, False or ``"auto"`` (each panel where its values span
            decades); never for counts.
        quantity: How the per-sample value is written in titles (default :math:`\lVert J_{ij}\rVert_F^2`).
        width: Width of each panel in pixels.
        height: Height of each panel in pixels.

    Returns:
        A Bokeh ``GridPlot``.

    Raises:
        ValueError: for empty ``stats``, an unknown statistic or maps of different sizes.
    """
    rows = sensitivity_grid(stats, token_labels, statistics, log=log, quantity=quantity)
    return matrix_grid(rows, width=width, height=height)


def line_figure(
    x,
    series: Mapping[str, object],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    log_y: bool = False,
    bands: Mapping[str, tuple] | None = None,
    marker_x: float | None = None,
    colors: Sequence[str] | None = None,
    width: int = 420,
    height: int = 260,
):
    """A Bokeh figure of several series against a shared x, with a legend (click to hide) and hover.

    Args:
        x: ``[N]`` x values.
        series: ``{name: ys [N]}``; NaN breaks a line (on a log axis values ``<= 0`` are left out too).
        title: Figure title.
        x_label: Title of the x axis.
        y_label: Title of the y axis.
        log_y: Logarithmic y axis.
        bands: ``{name: (lo [N], hi [N])}``: shaded bands under the series of that name.
        marker_x: A dashed vertical line here (when inside the x range).
        colors: Line colours in order (default: the series palette, Tableau 10).
        width: Width in pixels.
        height: Height in pixels.

    Returns:
        ``bokeh.plotting.figure``.

    Raises:
        ValueError: For a series or band whose length differs from ``x``.
    """
    xs = as_array(x).reshape(-1)

    def checked(values, name) -> np.ndarray:
        ys = as_array(values).reshape(-1)
        if ys.shape != xs.shape:
            raise ValueError(f"series {name!r} has {ys.size} values for {xs.size} x values")
        return ys

    lines = []
    for k, (name, values) in enumerate(series.items()):
        band = None
        if bands and name in bands:
            band = tuple(checked(b, name) for b in bands[name])
        color = colors[k % len(colors)] if colors else series_color(k)
        lines.append(Series(str(name), str(name), checked(values, name), color, band))
    chart = line_chart(xs, lines, title, x_label, y_label, log_y, marker_x)
    return line_chart_figure(chart, width=width, height=height)


def matrix_figure(
    values,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    value_name: str = "value",
    log: bool = False,
    palette: str | Sequence[str] = "Viridis256",
    log_range: float | None = None,
    width: int = 460,
    height: int | None = None,
    square: bool = True,
    max_ticks: int = 40,
):
    """A Bokeh heatmap of a rectangular ``[R, C]`` matrix with named rows (top to bottom) and columns.

    Args:
        values: ``[R, C]`` tensor or array (NaN = no data).
        row_labels: ``R`` names (y axis, first row at the top).
        col_labels: ``C`` names (x axis).
        title: Figure title.
        x_label: Title of the x axis.
        y_label: Title of the y axis.
        value_name: Name of the value in the hover and on the colour bar.
        log: Logarithmic colour scale.
        palette: Bokeh palette name or list of colours.
        log_range: If given, a log scale spans at most ``vmax / log_range`` .. ``vmax``.
        width: Width in pixels.
        height: Height in pixels; default: square cells (``square``) or 18 px per row.
        square: Square cells when ``height`` is not given.
        max_ticks: At most this many labelled ticks per axis.

    Returns:
        ``bokeh.plotting.figure``.

    Raises:
        ValueError: For an empty or non-2-D matrix, or label lists of the wrong length.
    """
    arr = as_array(values)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"expected a non-empty matrix [R, C], got shape {tuple(arr.shape)}")
    R, C = arr.shape
    rows, cols = tuple(str(s) for s in row_labels), tuple(str(s) for s in col_labels)
    if len(rows) != R or len(cols) != C:
        raise ValueError(f"need {R} row labels and {C} column labels, got {len(rows)} and {len(cols)}")
    chart = MatrixChart(
        values=arr,
        row_labels=rows,
        col_labels=cols,
        title=title,
        x_label=x_label,
        y_label=y_label,
        value_title=value_name,
        value_name=value_name,
        scale=color_scale(arr, log, log_range=log_range, colormap=palette),
        row_name=y_label or "row",
        col_name=x_label or "column",
        square=square,
    )
    return matrix_chart_figure(chart, width=width, height=height, max_ticks=max_ticks)


def landscape_heatmap(
    alphas,
    betas,
    values,
    *,
    title: str = "",
    value_name: str = "loss",
    log: bool = False,
    contours: Sequence[tuple[float, Sequence[np.ndarray]]] = (),
    trajectory=None,
    trajectory_steps=None,
    x_label: str = "α",
    y_label: str = "β",
    palette: str | Sequence[str] = "Viridis256",
    log_range: float | None = None,
    width: int = 520,
    height: int = 460,
):
    r"""A Bokeh figure of a loss-landscape grid: :math:`\alpha` across, :math:`\beta` up, one cell per point.

    Args:
        alphas: ``[A]`` increasing coordinates along the first direction.
        betas: ``[B]`` increasing coordinates along the second direction.
        values: ``[A, B]`` values at ``(alphas[i], betas[j])`` (NaN = not computed: grey).
        title: Figure title.
        value_name: Name of the value in the hover and on the colour bar.
        log: Logarithmic colour scale.
        contours: ``[(level, [line [n, 2] of (alpha, beta)])]`` drawn as white lines (hover names the level);
            :func:`tscope_widgets.figures.landscape_chart` computes them at the shared levels.
        trajectory: ``[T, 2]`` points ``(alpha, beta)`` drawn as a path with markers (hover: step), or None.
        trajectory_steps: ``[T]`` step numbers (default ``0 .. T-1``).
        x_label: Title of the x axis (the first direction).
        y_label: Title of the y axis (the second direction).
        palette: Bokeh palette name or list of colours.
        log_range: If given, a log scale spans at most ``vmax / log_range`` .. ``vmax``.
        width: Width in pixels.
        height: Height in pixels.

    Returns:
        ``bokeh.plotting.figure`` with heatmap, contour lines, trajectory, origin marker, colour bar and hover.

    Raises:
        ValueError: For ``values`` that are not ``[A, B]``, or coordinates that are not increasing.
    """
    chart = landscape_chart(
        alphas,
        betas,
        values,
        value_title=value_name,
        value_name=value_name,
        title=title,
        x_label=x_label,
        y_label=y_label,
        log=log,
        contours=False,
        trajectory=trajectory,
        trajectory_steps=trajectory_steps,
        log_range=log_range,
        colormap=palette,
    )
    lines = tuple((float(level), tuple(np.asarray(ln, np.float64) for ln in ls)) for level, ls in contours)
    chart = dataclasses.replace(chart, contour_levels=tuple(level for level, _ in lines), contour_lines=lines)
    return landscape_chart_figure(chart, width=width, height=height)
