r"""Chart descriptions drawn as interactive Bokeh figures (standalone HTML reports, ``to_bokeh``).

The same descriptions as the notebook pictures (:mod:`.svg`), so colours, colour-scale limits, series colours,
legends, labels and titles agree; Bokeh adds hover, pan and zoom.

A matrix ``[R, C]`` is drawn with row ``i`` at ``y = R - 1 - i`` on an ordinary (not reversed) axis, because
Bokeh's image glyph and its hover misplace data on reversed ranges (bokeh/bokeh issues #1666, #13555).
Matrices of at most 256 × 256 cells use one ``rect`` per cell (hover names row and column); larger ones an
``image`` glyph. NaN cells take the scale's NaN colour; values below the scale (only values ``<= 0`` on a log
scale, with the shared rule) its ``low_color``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
from bokeh.layouts import column, gridplot, row
from bokeh.models import (
    BasicTicker,
    ColorBar,
    ColumnDataSource,
    CustomJSHover,
    Div,
    FixedTicker,
    HoverTool,
    LinearColorMapper,
    LogColorMapper,
    LogTicker,
    Range1d,
    Span,
)
from bokeh.plotting import figure

from .charts import FADED_ALPHA, ColorScale, LandscapeChart, LineChart, MatrixChart, palette_colors
from .landscape import cell_edges
from .scaling import ScalingChart
from .sweep import SweepChart

__all__ = [
    "chart_figure",
    "color_mapper",
    "landscape_chart_figure",
    "line_chart_figure",
    "matrix_chart_figure",
    "matrix_grid",
    "scaling_chart_figure",
    "spectrum_layout",
    "sweep_chart_figure",
]

RECT_MAX_CELLS = 256 * 256
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def color_mapper(scale: ColorScale):
    """A Bokeh colour mapper of ``scale``: same limits, colour map, NaN colour and colour below the scale."""
    cls = LogColorMapper if scale.log else LinearColorMapper
    palette = palette_colors(scale.colormap)
    mapper = cls(palette=palette, low=scale.lo, high=scale.hi, nan_color=scale.nan_color)
    mapper.low_color = scale.low_color if scale.low_color is not None else palette[0]
    return mapper


def _color_bar(mapper, scale: ColorScale, title: str) -> ColorBar:
    ticker = LogTicker() if scale.log else BasicTicker()
    return ColorBar(color_mapper=mapper, ticker=ticker, title=title, width=10, title_text_font_size="8pt")


def _tick_positions(n: int, max_ticks: int) -> list[int]:
    step = max(1, math.ceil(n / max_ticks))
    return list(range(0, n, step))


def matrix_chart_figure(
    chart: MatrixChart,
    *,
    width: int = 460,
    height: int | None = None,
    max_ticks: int = 40,
    x_range: Range1d | None = None,
    y_range: Range1d | None = None,
):
    """A :class:`MatrixChart` as a Bokeh heatmap with labelled rows (top to bottom) and columns, colour bar and
    hover.

    Args:
        chart: The description.
        width: Width in pixels.
        height: Height in pixels; default: square cells (``chart.square``) or 18 px per row.
        max_ticks: At most this many labelled ticks per axis (every ``ceil(n / max_ticks)``-th).
        x_range: x range to share with another figure of the same size (linked pan/zoom), or None.
        y_range: y range to share likewise, or None.
    """
    arr = np.asarray(chart.values, dtype=np.float64)
    R, C = arr.shape
    if height is None:
        height = int(width * R / C) + 60 if chart.square else 18 * R + 150
    mapper = color_mapper(chart.scale)
    fig = figure(
        title=chart.title,
        width=width,
        height=height,
        x_range=x_range if x_range is not None else Range1d(-0.5, C - 0.5, bounds=(-0.5, C - 0.5)),
        y_range=y_range if y_range is not None else Range1d(-0.5, R - 0.5, bounds=(-0.5, R - 0.5)),
        tools=TOOLS,
        toolbar_location="above",
        x_axis_label=chart.x_label,
        y_axis_label=chart.y_label,
    )
    fig.grid.visible = False
    fig.outline_line_color = None
    rows = list(chart.row_hover or chart.row_labels)
    cols = list(chart.col_hover or chart.col_labels)
    if R * C <= RECT_MAX_CELLS:
        i, j = np.meshgrid(np.arange(R), np.arange(C), indexing="ij")  # [R, C] each
        source = ColumnDataSource(
            {
                "i": i.ravel(),
                "j": j.ravel(),
                "y": (R - 1 - i).ravel(),
                "value": arr.ravel(),
                "row": [rows[k] for k in i.ravel()],
                "col": [cols[k] for k in j.ravel()],
                "alpha": np.where(np.asarray(chart.faded, bool), FADED_ALPHA, 1.0).ravel()
                if chart.faded is not None
                else np.ones(R * C),
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
            fill_alpha="alpha",
        )
        tooltips = [(chart.row_name, "@row"), (chart.col_name, "@col"), (chart.value_name, "@value{%.4g}")]
        formatters = {"@value": "printf"}
    else:
        renderer = fig.image(image=[np.ascontiguousarray(arr[::-1])], x=-0.5, y=-0.5, dw=C, dh=R, color_mapper=mapper)
        if chart.faded is not None:  # white veil over the faded cells: RGBA packed as uint32 (little endian)
            veil = np.where(np.asarray(chart.faded, bool)[::-1], round(255 * (1 - FADED_ALPHA)) << 24 | 0xFFFFFF, 0)
            fig.image_rgba(image=[np.ascontiguousarray(veil.astype(np.uint32))], x=-0.5, y=-0.5, dw=C, dh=R)
        row_of_y = CustomJSHover(code=f"const l = {json.dumps(rows)}; return l[Math.round({R - 1} - value)] ?? '';")
        col_of_x = CustomJSHover(code=f"const l = {json.dumps(cols)}; return l[Math.round(value)] ?? '';")
        tooltips = [(chart.row_name, "$y{row}"), (chart.col_name, "$x{col}"), (chart.value_name, "@image{%.4g}")]
        formatters = {"$y": row_of_y, "$x": col_of_x, "@image": "printf"}
    fig.add_tools(HoverTool(renderers=[renderer], tooltips=tooltips, formatters=formatters))
    for k in chart.separators:  # block boundaries across the whole matrix
        fig.add_layout(Span(location=k - 0.5, dimension="height", line_color="#1f1f1f", line_width=1))
        fig.add_layout(Span(location=R - k - 0.5, dimension="width", line_color="#1f1f1f", line_width=1))
    row_ticks, col_ticks = _tick_positions(R, max_ticks), _tick_positions(C, max_ticks)
    fig.xaxis.ticker = FixedTicker(ticks=col_ticks)
    fig.xaxis.major_label_overrides = {t: chart.col_labels[t] for t in col_ticks}
    fig.xaxis.major_label_orientation = math.pi / 2
    fig.yaxis.ticker = FixedTicker(ticks=[R - 1 - t for t in row_ticks])
    fig.yaxis.major_label_overrides = {R - 1 - t: chart.row_labels[t] for t in row_ticks}
    for axis in (fig.xaxis, fig.yaxis):
        axis.major_label_text_font_size = "8pt" if max(R, C) <= 48 else "6pt"
    fig.add_layout(_color_bar(mapper, chart.scale, chart.bar_title), "right")
    return fig


def matrix_grid(rows: Sequence[Sequence[MatrixChart]], *, width: int = 420, height: int = 400):
    """Rows of matrix charts of one size as a Bokeh grid with shared pan/zoom."""
    R, C = np.asarray(rows[0][0].values).shape
    x_range = Range1d(-0.5, C - 0.5, bounds=(-0.5, C - 0.5))
    y_range = Range1d(-0.5, R - 0.5, bounds=(-0.5, R - 0.5))
    figs = [
        [matrix_chart_figure(c, width=width, height=height, x_range=x_range, y_range=y_range) for c in charts]
        for charts in rows
    ]
    return gridplot(figs, toolbar_location="right", merge_tools=True)


def line_chart_figure(chart: LineChart, *, width: int = 420, height: int = 260):
    """A :class:`LineChart` as a Bokeh figure: lines, bands, a legend (click to hide), the marker, hover."""
    xs = np.asarray(chart.x, dtype=np.float64)
    ranges = {}
    if chart.x_range is not None:
        ranges["x_range"] = Range1d(*chart.x_range)
    if chart.y_range is not None:
        ranges["y_range"] = Range1d(*chart.y_range)
    fig = figure(
        title=chart.title,
        width=width,
        height=height,
        x_axis_label=chart.x_label,
        y_axis_label=chart.y_title,
        y_axis_type="log" if chart.log_y else "linear",
        tools=TOOLS,
        toolbar_location="above",
        **ranges,
    )

    def usable(values) -> np.ndarray:
        ys = np.array(values, dtype=np.float64).reshape(-1)
        if chart.log_y:
            ys[~(ys > 0)] = np.nan
        return ys

    renderers = []
    for s in chart.series:
        ys = usable(s.y)
        if s.band is not None:
            lo, hi = (usable(b) for b in s.band)
            fig.varea(x=xs, y1=lo, y2=hi, fill_color=s.color, fill_alpha=0.18, legend_label=s.label)
        source = ColumnDataSource({"x": xs, "y": ys, "name": [s.label] * xs.size})
        renderers.append(fig.line("x", "y", source=source, color=s.color, line_width=1.5, legend_label=s.label))
        finite = np.isfinite(ys)
        if chart.dots or finite.sum() == 1:
            fig.scatter("x", "y", source=source, color=s.color, size=3, legend_label=s.label)
    x_name, y_name = chart.x_label or "x", chart.y_label or "y"
    fig.add_tools(
        HoverTool(
            renderers=renderers,
            tooltips=[("", "@name"), (x_name, "@x{%.6g}"), (y_name, "@y{%.4g}")],
            formatters={"@x": "printf", "@y": "printf"},
        )
    )
    if chart.marker_x is not None:
        fig.add_layout(Span(location=chart.marker_x, dimension="height", line_dash="dashed", line_color="#616161"))
    if chart.series:
        # Beside the plot area, never over a curve (inside, it hid the early steps of every series).
        legend = fig.legend[0]
        legend.click_policy = "hide"
        legend.label_text_font_size = "8pt"
        fig.center = [r for r in fig.center if r is not legend]
        fig.add_layout(legend, "right")
    return fig


def scaling_chart_figure(chart: ScalingChart, *, width: int = 560, height: int = 340):
    """A :class:`ScalingChart` as a Bokeh figure: runs as dots, fits as lines, log x (and log y unless it shows
    residuals, which get a zero line); the legend hides a group on click; hover names group, seed, x and y."""
    fig = figure(
        title=chart.title,
        width=width,
        height=height,
        x_axis_label=f"{chart.x_label} (log)",
        y_axis_label=chart.y_label + (" (log)" if chart.log_y else ""),
        x_axis_type="log",
        y_axis_type="log" if chart.log_y else "linear",
        tools=TOOLS,
        toolbar_location="above",
    )
    dots = []
    for s in chart.series:
        source = ColumnDataSource(
            {"x": np.asarray(s.x, np.float64), "y": np.asarray(s.y, np.float64), "group": [s.key] * len(s.x),
             "seed": list(s.seeds)}
        )
        dots.append(fig.scatter("x", "y", source=source, color=s.color, size=6, alpha=0.8, legend_label=s.label))
        if s.fit_x is not None and s.fit_y is not None:
            fig.line(np.asarray(s.fit_x, np.float64), np.asarray(s.fit_y, np.float64), color=s.color,
                     line_width=1.5, legend_label=s.label)
    if chart.residuals:
        fig.add_layout(Span(location=0.0, dimension="width", line_dash="dashed", line_color="#616161"))
    fig.add_tools(
        HoverTool(
            renderers=dots,
            tooltips=[("", "@group"), ("seed", "@seed"), (chart.x_label, "@x{%.6g}"), (chart.y_label, "@y{%.4g}")],
            formatters={"@x": "printf", "@y": "printf"},
        )
    )
    if chart.series:
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "8pt"
        fig.legend.location = "top_left"
    return fig


def sweep_chart_figure(chart: SweepChart, *, width: int = 600, height: int = 380):
    """A :class:`~.sweep.SweepChart` as a Bokeh figure, log-log: runs as small dots, means over seeds with ± one
    standard error whiskers, fitted lines, dashed grey guides, the marker; the legend hides a group on click;
    hover names group, x, mean, standard error and seeds."""
    ranges = {}
    if chart.x_range is not None and chart.y_range is not None:
        ranges = {"x_range": Range1d(*chart.x_range), "y_range": Range1d(*chart.y_range)}
    fig = figure(title=chart.title, width=width, height=height, x_axis_label=f"{chart.x_label} (log)",
                 y_axis_label=f"{chart.y_label} (log)", x_axis_type="log", y_axis_type="log", tools=TOOLS,
                 toolbar_location="above", **ranges)
    means = []
    bottom = chart.y_range[0] if chart.y_range is not None else math.nan
    for g in chart.groups:
        fig.scatter(np.asarray(g.points_x, np.float64), np.asarray(g.points_y, np.float64), color=g.color, size=4,
                    alpha=0.45, legend_label=g.label)
        bars = np.isfinite(g.err_hi)
        if bars.any():
            lo = np.where(np.isfinite(g.err_lo), g.err_lo, bottom)
            fig.segment(g.x[bars], lo[bars], g.x[bars], g.err_hi[bars], color=g.color, line_width=1.2,
                        legend_label=g.label)
        source = ColumnDataSource({"x": g.x, "y": g.mean, "stderr": g.stderr, "n": g.count,
                                   "group": [g.key] * g.x.size})
        means.append(fig.scatter("x", "y", source=source, color=g.color, size=7, legend_label=g.label))
        if g.fit_x is not None:
            fig.line(g.fit_x, g.fit_y, color=g.color, line_width=1.6, legend_label=g.label)
    for guide in chart.guides:
        fig.line(list(guide.x), list(guide.y), color=guide.color, line_dash="dashed", legend_label=guide.label)
    if chart.marker_x is not None:
        fig.add_layout(Span(location=chart.marker_x, dimension="height", line_dash="dashed", line_color="#616161"))
    fig.add_tools(HoverTool(renderers=means, tooltips=[("", "@group"), (chart.x_label, "@x{%.6g}"),
                                                       (chart.y_label, "@y{%.4g} ± @stderr{%.2g}"), ("seeds", "@n")],
                            formatters={"@x": "printf", "@y": "printf", "@stderr": "printf"}))
    if chart.groups:
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "8pt"
        fig.legend.location = "top_left"
    return fig


def landscape_chart_figure(chart: LandscapeChart, *, width: int = 520, height: int = 460):
    r"""A :class:`LandscapeChart` as a Bokeh figure: :math:`\alpha` across, :math:`\beta` up, one cell per point,
    contour lines, the trajectory, the origin, colour bar and hover."""
    a, b = np.asarray(chart.alphas, np.float64), np.asarray(chart.betas, np.float64)
    arr = np.asarray(chart.values, dtype=np.float64)
    ea, eb = cell_edges(a), cell_edges(b)
    mapper = color_mapper(chart.scale)
    fig = figure(
        title=chart.title,
        width=width,
        height=height,
        x_range=Range1d(ea[0], ea[-1], bounds=(ea[0], ea[-1])),
        y_range=Range1d(eb[0], eb[-1], bounds=(eb[0], eb[-1])),
        tools=TOOLS,
        toolbar_location="above",
        x_axis_label=chart.x_label,
        y_axis_label=chart.y_label,
    )
    fig.grid.visible = False
    name = chart.value_name
    if arr.size <= RECT_MAX_CELLS:
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
        tooltips = [("α", "@alpha{%.4g}"), ("β", "@beta{%.4g}"), (name, "@value{%.5g}")]
        formatters = {"@alpha": "printf", "@beta": "printf", "@value": "printf"}
    else:  # an image glyph assumes a uniform grid
        cells = fig.image(
            image=[np.ascontiguousarray(arr.T)], x=ea[0], y=eb[0], dw=ea[-1] - ea[0], dh=eb[-1] - eb[0],
            color_mapper=mapper,
        )
        tooltips = [("α", "$x{%.4g}"), ("β", "$y{%.4g}"), (name, "@image{%.5g}")]
        formatters = {"$x": "printf", "$y": "printf", "@image": "printf"}
    fig.add_tools(HoverTool(renderers=[cells], tooltips=tooltips, formatters=formatters))

    xs, ys, levels = [], [], []
    for level, lines in chart.contour_lines:
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
    if chart.origin is not None:
        fig.scatter([chart.origin[0]], [chart.origin[1]], marker="cross", size=14, line_color="white", line_width=2)
    if chart.trajectory is not None and len(chart.trajectory):
        pts = np.asarray(chart.trajectory, dtype=np.float64).reshape(-1, 2)
        steps = chart.trajectory_steps if chart.trajectory_steps is not None else np.arange(len(pts))
        path = ColumnDataSource({"alpha": pts[:, 0], "beta": pts[:, 1], "step": np.asarray(steps)})
        fig.line("alpha", "beta", source=path, line_color="#e91e63", line_width=2)
        marks = fig.scatter("alpha", "beta", source=path, size=6, fill_color="#e91e63", line_color="black")
        fig.add_tools(
            HoverTool(
                renderers=[marks],
                tooltips=[("step", "@step"), ("α", "@alpha{%.4g}"), ("β", "@beta{%.4g}")],
                formatters={"@alpha": "printf", "@beta": "printf"},
            )
        )
    fig.add_layout(_color_bar(mapper, chart.scale, chart.bar_title), "right")
    return fig


def chart_figure(chart: LineChart | MatrixChart | LandscapeChart | ScalingChart, **kwargs):
    """One chart description as a Bokeh figure (``kwargs``: sizes, see the renderer of its type)."""
    if isinstance(chart, LineChart):
        return line_chart_figure(chart, **kwargs)
    if isinstance(chart, MatrixChart):
        return matrix_chart_figure(chart, **kwargs)
    if isinstance(chart, LandscapeChart):
        return landscape_chart_figure(chart, **kwargs)
    if isinstance(chart, SweepChart):
        return sweep_chart_figure(chart, **kwargs)
    if isinstance(chart, ScalingChart):
        return scaling_chart_figure(chart, **kwargs)
    raise TypeError(f"not a chart description: {type(chart).__name__}")


def spectrum_layout(charts: Sequence[LineChart | MatrixChart], *, extra_html: str = ""):
    """Charts of the spectrum view as one Bokeh column: line charts two per row, then the heatmaps in a row,
    then ``extra_html`` (trusted) in a ``Div``."""
    lines = [line_chart_figure(c) for c in charts if isinstance(c, LineChart)]
    maps = [matrix_chart_figure(c) for c in charts if isinstance(c, MatrixChart)]
    items = [row(*lines[k : k + 2]) for k in range(0, len(lines), 2)]
    if maps:
        items.append(row(*maps))
    if extra_html:
        items.append(Div(text=extra_html, width=700))
    return column(*items)
