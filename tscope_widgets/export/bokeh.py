r"""Static Bokeh views of sensitivity statistics: heatmaps with token axes, colour bars and hover.

A sensitivity map ``[S, S]`` is drawn as a matrix: row ``i`` (output/target position, y axis, first
row at the top) against column ``j`` (input/source position, x axis). Tick labels read ``"i:token"``.
Positions are plotted at ``y = S - 1 - i`` on an ordinary (not reversed) axis, because Bokeh's image
glyph and its hover misplace data on reversed ranges (bokeh/bokeh issues #1666, #13555).

Small maps (``S <= 256``) use one ``rect`` per cell, so hover shows both positions with their tokens;
larger maps use an ``image`` glyph (hover shows positions and value). NaN cells (padding, or never
observed) are grey. Cells at or below the lower colour limit take the lowest colour; on a log scale
that includes exact zeros (e.g. above the diagonal of a causal model), and the scale spans at most
``log_range`` (default 10^4) below the largest value so that a few tiny cells do not wash it out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from bokeh.layouts import gridplot
from bokeh.models import (
    BasicTicker,
    ColorBar,
    ColumnDataSource,
    CustomJSHover,
    FixedTicker,
    HoverTool,
    LinearColorMapper,
    LogColorMapper,
    LogTicker,
    Range1d,
)
from bokeh.plotting import figure

NAN_COLOR = "#d9d9d9"
RECT_MAX_POSITIONS = 256
STATISTICS = ("mean", "std", "var", "sem", "cv", "min", "max", "count")
_STAT_TITLES = {
    "mean": "mean",
    "std": "std",
    "var": "variance",
    "sem": "std. error of mean",
    "cv": "std / |mean|",
    "min": "min",
    "max": "max",
    "count": "samples per cell",
}


def _as_matrix(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"expected a square matrix [S, S] with S >= 1, got shape {tuple(arr.shape)}")
    return arr


def position_labels(token_labels: Sequence[str] | None, S: int) -> list[str]:
    """``"i:token"`` for each position (``"i"`` alone without tokens or for an empty token label)."""
    if token_labels is None:
        return [str(i) for i in range(S)]
    token_labels = list(token_labels)
    if len(token_labels) != S:
        raise ValueError(f"token_labels has {len(token_labels)} entries for a map with {S} positions")
    return [f"{i}:{t}" if t else str(i) for i, t in enumerate(token_labels)]


def _tick_positions(S: int, max_ticks: int) -> list[int]:
    step = max(1, math.ceil(S / max_ticks))
    return list(range(0, S, step))


def _color_mapper(
    arr: np.ndarray,
    log: bool,
    palette: str | Sequence[str],
    vmin: float | None,
    vmax: float | None,
    log_range: float,
):
    finite = arr[np.isfinite(arr)]
    if log:
        positive = finite[finite > 0]
        high = vmax if vmax is not None else (float(positive.max()) if positive.size else 1.0)
        if vmin is None:
            smallest = float(positive.min()) if positive.size else high / log_range
            vmin = max(smallest, high / log_range)
        if vmin <= 0:
            raise ValueError(f"a log colour scale needs vmin > 0, got {vmin}")
        high = max(high, vmin * (1 + 1e-9))
        mapper = LogColorMapper(palette=palette, low=vmin, high=high, nan_color=NAN_COLOR)
        mapper.low_color = mapper.palette[0]  # below vmin, exact zeros included: the lowest colour
        return mapper
    low = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    high = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if high <= low:
        high = low + (abs(low) if low else 1.0) * 1e-9 + 1e-300
    return LinearColorMapper(palette=palette, low=low, high=high, nan_color=NAN_COLOR)


def sensitivity_heatmap(
    values,
    *,
    title: str = "",
    token_labels: Sequence[str] | None = None,
    log: bool = False,
    value_name: str = "value",
    palette: str | Sequence[str] = "Viridis256",
    vmin: float | None = None,
    vmax: float | None = None,
    log_range: float = 1e4,
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
        token_labels: ``S`` strings naming each position (token text or role); ticks read ``"i:label"``.
        log: Logarithmic colour scale.
        value_name: Name of the value in the hover and on the colour bar.
        palette: Bokeh palette name or list of colours.
        vmin, vmax: Colour-scale limits (default: the finite extremes; for ``log``, the largest positive
            value and the smallest positive one, but at least ``vmax / log_range``).
        log_range: Largest ratio ``vmax / vmin`` a default log scale spans.
        width, height: Size in pixels.
        max_ticks: At most this many labelled ticks per axis (every ``ceil(S / max_ticks)``-th position).
        x_label, y_label: Axis titles.
        x_range, y_range: Ranges to share between figures (from another heatmap of the same ``S``).

    Returns:
        ``bokeh.plotting.figure`` with the heatmap, a colour bar and a hover tool.

    Raises:
        ValueError: for a non-square input, token labels of the wrong length or ``vmin <= 0`` with ``log``.
    """
    arr = _as_matrix(values)
    S = arr.shape[0]
    labels = position_labels(token_labels, S)
    mapper = _color_mapper(arr, log, palette, vmin, vmax, log_range)
    x_range = x_range if x_range is not None else Range1d(-0.5, S - 0.5, bounds=(-0.5, S - 0.5))
    y_range = y_range if y_range is not None else Range1d(-0.5, S - 0.5, bounds=(-0.5, S - 0.5))
    fig = figure(
        title=title,
        width=width,
        height=height,
        x_range=x_range,
        y_range=y_range,
        tools="pan,wheel_zoom,box_zoom,reset,save",
        toolbar_location="above",
        x_axis_label=x_label,
        y_axis_label=y_label,
    )
    fig.grid.visible = False
    fig.outline_line_color = None

    rows = np.arange(S)
    if S <= RECT_MAX_POSITIONS:
        i, j = np.meshgrid(rows, rows, indexing="ij")  # [S, S] each
        source = ColumnDataSource(
            {
                "i": i.ravel(),
                "j": j.ravel(),
                "y": (S - 1 - i).ravel(),
                "value": arr.ravel(),
                "row": [labels[k] for k in i.ravel()],
                "col": [labels[k] for k in j.ravel()],
            }
        )
        renderer = fig.rect(
            x="j",
            y="y",
            width=1,
            height=1,
            source=source,
            line_color=None,
            dilate=True,
            fill_color={"field": "value", "transform": mapper},
        )
        tooltips = [("output i", "@row"), ("input j", "@col"), (value_name, "@value{%.4g}")]
        formatters = {"@value": "printf"}
    else:
        renderer = fig.image(
            image=[np.ascontiguousarray(arr[::-1])], x=-0.5, y=-0.5, dw=S, dh=S, color_mapper=mapper
        )
        row_of_y = CustomJSHover(code=f"return String(Math.round({S - 1} - value));")
        col_of_x = CustomJSHover(code="return String(Math.round(value));")
        tooltips = [("output i", "$y{row}"), ("input j", "$x{col}"), (value_name, "@image{%.4g}")]
        formatters = {"$y": row_of_y, "$x": col_of_x, "@image": "printf"}
    fig.add_tools(HoverTool(renderers=[renderer], tooltips=tooltips, formatters=formatters))

    ticks = _tick_positions(S, max_ticks)
    fig.xaxis.ticker = FixedTicker(ticks=ticks)
    fig.xaxis.major_label_overrides = {t: labels[t] for t in ticks}
    fig.xaxis.major_label_orientation = math.pi / 2
    fig.yaxis.ticker = FixedTicker(ticks=[S - 1 - t for t in ticks])
    fig.yaxis.major_label_overrides = {S - 1 - t: labels[t] for t in ticks}
    for axis in (fig.xaxis, fig.yaxis):
        axis.major_label_text_font_size = "8pt" if S <= 48 else "6pt"

    ticker = LogTicker() if log else BasicTicker()
    fig.add_layout(
        ColorBar(color_mapper=mapper, ticker=ticker, title=value_name, width=10, title_text_font_size="8pt"),
        "right",
    )
    return fig


def _layer_title(layer) -> str:
    return "final norm" if layer == "final" else f"layer {layer}"


def sensitivity_figures(
    stats: Mapping,
    token_labels: Sequence[str] | None = None,
    statistics: Sequence[str] = ("mean", "std"),
    *,
    log: bool = False,
    quantity: str = "‖J_ij‖²_F",
    width: int = 420,
    height: int = 400,
):
    r"""A grid of heatmaps: one row per layer, one column per statistic, with shared pan/zoom.

    Args:
        stats: ``{layer: WelfordState}`` (anything with the requested statistics as ``[S, S]``
            attributes), all with the same ``S``.
        token_labels: ``S`` strings for the axes.
        statistics: Attribute names among ``mean, std, var, sem, cv, min, max, count``.
        log: Log colour scale for every panel.
        quantity: How the per-sample value is written in titles (default :math:`\lVert J_{ij}\rVert_F^2`).
        width, height: Size of each panel in pixels.

    Returns:
        A Bokeh ``GridPlot``.

    Raises:
        ValueError: for empty ``stats``, an unknown statistic or maps of different sizes.
    """
    if not isinstance(stats, Mapping) or not stats:
        raise ValueError("stats must be a non-empty mapping {layer: WelfordState}")
    statistics = [statistics] if isinstance(statistics, str) else list(statistics)
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown or not statistics:
        raise ValueError(f"unknown statistics {unknown or statistics}; choose from {list(STATISTICS)}")
    sizes = {layer: tuple(state.shape) for layer, state in stats.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all layers must have the same map size, got {sizes}")
    S = next(iter(sizes.values()))[0]
    x_range = Range1d(-0.5, S - 0.5, bounds=(-0.5, S - 0.5))
    y_range = Range1d(-0.5, S - 0.5, bounds=(-0.5, S - 0.5))
    rows = []
    for layer, state in stats.items():
        row = []
        for stat in statistics:
            name = f"{_STAT_TITLES[stat]} {quantity}" if stat != "count" else _STAT_TITLES[stat]
            row.append(
                sensitivity_heatmap(
                    getattr(state, stat),
                    title=f"{_layer_title(layer)} · {name}",
                    token_labels=token_labels,
                    log=log and stat != "count",
                    value_name=stat,
                    width=width,
                    height=height,
                    x_range=x_range,
                    y_range=y_range,
                )
            )
        rows.append(row)
    return gridplot(rows, toolbar_location="right", merge_tools=True)


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
        title, x_label, y_label: Texts of the figure.
        log_y: Logarithmic y axis.
        bands: ``{name: (lo [N], hi [N])}``: shaded bands under the series of that name (e.g. ± one
            standard error).
        marker_x: A dashed vertical line here.
        colors: Line colours in order (default: Category10).
        width, height: Size in pixels.

    Returns:
        ``bokeh.plotting.figure``.

    Raises:
        ValueError: For a series or band whose length differs from ``x``.
    """
    from bokeh.models import Span

    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    palette = list(colors) if colors else ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]

    def usable(values, name) -> np.ndarray:
        ys = np.array(values, dtype=np.float64).reshape(-1)
        if ys.shape != xs.shape:
            raise ValueError(f"series {name!r} has {ys.size} values for {xs.size} x values")
        if log_y:
            ys[~(ys > 0)] = np.nan
        return ys

    fig = figure(
        title=title,
        width=width,
        height=height,
        x_axis_label=x_label,
        y_axis_label=y_label + (" (log)" if log_y else ""),
        y_axis_type="log" if log_y else "linear",
        tools="pan,wheel_zoom,box_zoom,reset,save",
        toolbar_location="above",
    )
    renderers = []
    for k, (name, values) in enumerate(series.items()):
        color = palette[k % len(palette)]
        ys = usable(values, name)
        if bands and name in bands:
            lo, hi = (usable(b, name) for b in bands[name])
            fig.varea(x=xs, y1=lo, y2=hi, fill_color=color, fill_alpha=0.2, legend_label=name)
        source = ColumnDataSource({"x": xs, "y": ys, "name": [name] * xs.size})
        renderers.append(fig.line("x", "y", source=source, color=color, line_width=1.5, legend_label=name))
        if xs.size <= 200:
            fig.scatter("x", "y", source=source, color=color, size=3, legend_label=name)
    fig.add_tools(
        HoverTool(
            renderers=renderers,
            tooltips=[("", "@name"), (x_label or "x", "@x{%.6g}"), (y_label or "y", "@y{%.4g}")],
            formatters={"@x": "printf", "@y": "printf"},
        )
    )
    if marker_x is not None:
        fig.add_layout(Span(location=float(marker_x), dimension="height", line_dash="dashed", line_color="#616161"))
    if series:
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "8pt"
        fig.legend.location = "top_left"
    return fig


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
    log_range: float = 1e4,
    width: int = 460,
    height: int | None = None,
    square: bool = True,
    max_ticks: int = 40,
):
    """A Bokeh heatmap of a rectangular ``[R, C]`` matrix with named rows (top to bottom) and columns.

    One ``rect`` per cell (hover: row, column and value), a colour bar, NaN grey; the colour rules are
    those of :func:`sensitivity_heatmap`.

    Args:
        values: ``[R, C]`` tensor or array (NaN = no data).
        row_labels: ``R`` names (y axis, first row at the top); col_labels: ``C`` names (x axis).
        title, x_label, y_label: Texts of the figure.
        value_name: Name of the value in the hover and on the colour bar.
        log: Logarithmic colour scale (the lowest colour below ``vmax / log_range``).
        palette: Bokeh palette name or list of colours.
        width: Width in pixels; height: default square cells (``square``) or 18 px per row.
        max_ticks: At most this many labelled ticks per axis.

    Returns:
        ``bokeh.plotting.figure``.

    Raises:
        ValueError: For an empty or non-2-D matrix, or label lists of the wrong length.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"expected a non-empty matrix [R, C], got shape {tuple(arr.shape)}")
    R, C = arr.shape
    rows, cols = [str(s) for s in row_labels], [str(s) for s in col_labels]
    if len(rows) != R or len(cols) != C:
        raise ValueError(f"need {R} row labels and {C} column labels, got {len(rows)} and {len(cols)}")
    if height is None:
        height = int(width * R / C) + 60 if square else 18 * R + 150
    mapper = _color_mapper(arr, log, palette, None, None, log_range)
    fig = figure(
        title=title,
        width=width,
        height=height,
        x_range=Range1d(-0.5, C - 0.5, bounds=(-0.5, C - 0.5)),
        y_range=Range1d(-0.5, R - 0.5, bounds=(-0.5, R - 0.5)),
        tools="pan,wheel_zoom,box_zoom,reset,save",
        toolbar_location="above",
        x_axis_label=x_label,
        y_axis_label=y_label,
    )
    fig.grid.visible = False
    fig.outline_line_color = None
    i, j = np.meshgrid(np.arange(R), np.arange(C), indexing="ij")  # [R, C] each
    source = ColumnDataSource(
        {
            "j": j.ravel(),
            "y": (R - 1 - i).ravel(),
            "value": arr.ravel(),
            "row": [rows[k] for k in i.ravel()],
            "col": [cols[k] for k in j.ravel()],
        }
    )
    renderer = fig.rect(
        x="j",
        y="y",
        width=1,
        height=1,
        source=source,
        line_color=None,
        dilate=True,
        fill_color={"field": "value", "transform": mapper},
    )
    fig.add_tools(
        HoverTool(
            renderers=[renderer],
            tooltips=[(y_label or "row", "@row"), (x_label or "column", "@col"), (value_name, "@value{%.4g}")],
            formatters={"@value": "printf"},
        )
    )
    row_ticks, col_ticks = _tick_positions(R, max_ticks), _tick_positions(C, max_ticks)
    fig.xaxis.ticker = FixedTicker(ticks=col_ticks)
    fig.xaxis.major_label_overrides = {t: cols[t] for t in col_ticks}
    fig.xaxis.major_label_orientation = math.pi / 2
    fig.yaxis.ticker = FixedTicker(ticks=[R - 1 - t for t in row_ticks])
    fig.yaxis.major_label_overrides = {R - 1 - t: rows[t] for t in row_ticks}
    for axis in (fig.xaxis, fig.yaxis):
        axis.major_label_text_font_size = "8pt"
    fig.add_layout(
        ColorBar(
            color_mapper=mapper,
            ticker=LogTicker() if log else BasicTicker(),
            title=value_name,
            width=10,
            title_text_font_size="8pt",
        ),
        "right",
    )
    return fig


LANDSCAPE_RECT_MAX_POINTS = 256 * 256


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
    log_range: float = 1e4,
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
        log: Logarithmic colour scale (see :func:`sensitivity_heatmap` for ``log_range``).
        contours: ``[(level, [line [n, 2] of (alpha, beta)])]`` drawn as white lines (hover names the level).
        trajectory: ``[T, 2]`` points ``(alpha, beta)`` drawn as a path with markers (hover: step), or None.
        trajectory_steps: ``[T]`` step numbers (default ``0 .. T-1``).
        x_label, y_label: Axis titles.
        palette: Bokeh palette name or list of colours.
        log_range: Largest ratio ``vmax / vmin`` a log scale spans.
        width, height: Size in pixels.

    Returns:
        ``bokeh.plotting.figure`` with heatmap, contour lines, trajectory, origin marker, colour bar and hover.

    Raises:
        ValueError: For ``values`` that are not ``[A, B]``, or coordinates that are not increasing.
    """
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    b = np.asarray(betas, dtype=np.float64).reshape(-1)
    arr = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if arr.shape != (a.size, b.size):
        raise ValueError(f"values must have shape [A, B] = [{a.size}, {b.size}], got {list(arr.shape)}")
    for name, c in (("alphas", a), ("betas", b)):
        if c.size == 0 or (c.size > 1 and not (np.diff(c) > 0).all()):
            raise ValueError(f"{name} must be a non-empty increasing sequence")

    def edges(c: np.ndarray) -> np.ndarray:
        if c.size == 1:
            return np.array([c[0] - 0.5, c[0] + 0.5])
        mid = (c[1:] + c[:-1]) / 2
        return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])

    ea, eb = edges(a), edges(b)
    mapper = _color_mapper(arr, log, palette, None, None, log_range)
    fig = figure(
        title=title,
        width=width,
        height=height,
        x_range=Range1d(ea[0], ea[-1], bounds=(ea[0], ea[-1])),
        y_range=Range1d(eb[0], eb[-1], bounds=(eb[0], eb[-1])),
        tools="pan,wheel_zoom,box_zoom,reset,save",
        toolbar_location="above",
        x_axis_label=x_label,
        y_axis_label=y_label,
    )
    fig.grid.visible = False
    if arr.size <= LANDSCAPE_RECT_MAX_POINTS:
        i, j = np.meshgrid(np.arange(a.size), np.arange(b.size), indexing="ij")  # [A, B] each
        source = ColumnDataSource(
            {
                "alpha": a[i].ravel(),
                "beta": b[j].ravel(),
                "x": ((ea[:-1] + ea[1:]) / 2)[i].ravel(),
                "y": ((eb[:-1] + eb[1:]) / 2)[j].ravel(),
                "w": np.diff(ea)[i].ravel(),
                "h": np.diff(eb)[j].ravel(),
                "value": arr.ravel(),
            }
        )
        cells = fig.rect(
            x="x", y="y", width="w", height="h", source=source, line_color=None, dilate=True,
            fill_color={"field": "value", "transform": mapper},
        )
        tooltips = [("α", "@alpha{%.4g}"), ("β", "@beta{%.4g}"), (value_name, "@value{%.5g}")]
        formatters = {"@alpha": "printf", "@beta": "printf", "@value": "printf"}
    else:  # an image glyph assumes a uniform grid
        cells = fig.image(
            image=[np.ascontiguousarray(arr.T)], x=ea[0], y=eb[0], dw=ea[-1] - ea[0], dh=eb[-1] - eb[0],
            color_mapper=mapper,
        )
        tooltips = [("α", "$x{%.4g}"), ("β", "$y{%.4g}"), (value_name, "@image{%.5g}")]
        formatters = {"$x": "printf", "$y": "printf", "@image": "printf"}
    fig.add_tools(HoverTool(renderers=[cells], tooltips=tooltips, formatters=formatters))

    xs, ys, levels = [], [], []
    for level, lines in contours:
        for line in lines:
            line = np.asarray(line, dtype=np.float64)
            xs.append(line[:, 0])
            ys.append(line[:, 1])
            levels.append(float(level))
    if xs:
        lines = fig.multi_line(
            xs="xs", ys="ys", source=ColumnDataSource({"xs": xs, "ys": ys, "level": levels}),
            line_color="white", line_alpha=0.75, line_width=1,
        )
        fig.add_tools(
            HoverTool(renderers=[lines], tooltips=[("contour", "@level{%.4g}")], formatters={"@level": "printf"})
        )
    if ea[0] <= 0 <= ea[-1] and eb[0] <= 0 <= eb[-1]:
        fig.scatter([0.0], [0.0], marker="cross", size=14, line_color="white", line_width=2)
    if trajectory is not None and len(trajectory):
        pts = np.asarray(trajectory, dtype=np.float64).reshape(-1, 2)
        steps = np.arange(len(pts)) if trajectory_steps is None else np.asarray(trajectory_steps).reshape(-1)
        if steps.shape != (len(pts),):
            raise ValueError(f"trajectory_steps has {steps.size} entries for {len(pts)} points")
        path = ColumnDataSource({"alpha": pts[:, 0], "beta": pts[:, 1], "step": steps})
        fig.line("alpha", "beta", source=path, line_color="#e91e63", line_width=2)
        marks = fig.scatter("alpha", "beta", source=path, size=6, fill_color="#e91e63", line_color="black")
        fig.add_tools(
            HoverTool(
                renderers=[marks],
                tooltips=[("step", "@step"), ("α", "@alpha{%.4g}"), ("β", "@beta{%.4g}")],
                formatters={"@alpha": "printf", "@beta": "printf"},
            )
        )
    ticker = LogTicker() if log else BasicTicker()
    fig.add_layout(
        ColorBar(color_mapper=mapper, ticker=ticker, title=value_name, width=10, title_text_font_size="8pt"),
        "right",
    )
    return fig
