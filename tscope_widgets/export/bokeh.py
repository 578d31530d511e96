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
