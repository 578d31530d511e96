r"""Several runs in one view: spectrum series of several histories overlaid, block-norm maps side by side on one
colour scale, and two loss-landscape slices with their difference.

- :func:`overlay_series_chart`: one series (``"lambda_max"``, ``"trace"``, ``"grad_norm:block0"``, …, see
  :data:`~.spectrum.SERIES`) of every history against the training step, one line per run (colours from
  :func:`~.charts.series_color` by run order). The x axis is the union of the runs' recorded steps; a run
  has NaN (a gap) at the steps it did not record.
- :func:`block_norm_overlay`: the block-norm maps :math:`\lVert H_{ab}\rVert_F` of several checkpoints, each a
  :class:`~.charts.MatrixChart` on the *same* colour scale (the joint range), so equal colours mean equal
  norms across checkpoints.
- :func:`landscape_difference_charts`: two 2D slices over the same directions and grid (two checkpoints) on one
  colour scale, and their difference :math:`L_a - L_b` in the diverging map ``rdbu`` symmetric about 0.

Pure descriptions, rendered by :mod:`.svg` and :mod:`.bokeh` (:func:`overlay_figures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .charts import LineChart, MatrixChart, Series, as_array, color_scale, line_chart, series_color
from .spectrum import GRAD_NORM_PREFIX, SERIES, X_LABEL, block_norm_chart, series_values

__all__ = ["overlay_series_chart", "block_norm_overlay", "landscape_difference_charts", "overlay_figures"]


def _field(h, name: str):
    return h[name] if isinstance(h, Mapping) else getattr(h, name)


def overlay_series_chart(histories: Mapping[str, object], key: str = "lambda_max", *, log: bool = True) -> LineChart:
    """One spectrum series of several runs against the training step.

    Args:
        histories: ``{run name: history}`` (a :class:`~tscope_widgets.tracking.SpectrumHistory` or a mapping with
            ``steps [T]`` and the series), in legend order.
        key: The series, e.g. ``"lambda_max"``, ``"trace"``, ``"lambda_min"`` or ``"grad_norm:<block>"``.
        log: Logarithmic y axis.

    Returns:
        A :class:`LineChart` over the union of the recorded steps (NaN where a run has no record).

    Raises:
        ValueError: Without histories, or for a history whose series and steps differ in length.
        KeyError: For an unknown series, or a gradient-norm block a history does not record.
    """
    if not histories:
        raise ValueError("overlay_series_chart needs at least one history")
    if key not in SERIES and not key.startswith(GRAD_NORM_PREFIX):
        raise KeyError(f"unknown series {key!r}; choose one of {list(SERIES)} or 'grad_norm:<block>'")
    runs = []
    for name, h in histories.items():
        steps = as_array(_field(h, "steps")).reshape(-1).astype(np.float64)
        try:
            y = series_values(h, key)
        except ValueError as err:  # list.index of an unknown gradient-norm block
            raise KeyError(f"run {name!r} records no series {key!r}") from err
        if y.shape != steps.shape:
            raise ValueError(f"run {name!r}: {key} has {y.size} values for {steps.size} steps")
        runs.append((str(name), steps, y))
    x = np.unique(np.concatenate([steps for _, steps, _ in runs]))
    series = []
    for k, (name, steps, y) in enumerate(runs):
        full = np.full(x.shape, np.nan)
        full[np.searchsorted(x, steps)] = y
        series.append(Series(f"run{k}", name, full, series_color(k)))
    label = SERIES[key][0] if key in SERIES else key
    return line_chart(x, series, f"{label}: {len(runs)} runs", X_LABEL, label, log)


def block_norm_overlay(maps: Mapping[str, tuple[Sequence[str], object]], *, log: bool = True) -> list[MatrixChart]:
    """Block-norm maps of several checkpoints on one colour scale.

    Args:
        maps: ``{checkpoint name: (block labels [G], frobenius [G, G])}``; every checkpoint the same labels.
        log: Logarithmic colours (positive norms).

    Returns:
        One :class:`MatrixChart` per checkpoint, titled with its name, sharing one :class:`~.charts.ColorScale`.

    Raises:
        ValueError: Without maps, or for checkpoints whose block labels differ (naming both).
    """
    if not maps:
        raise ValueError("block_norm_overlay needs at least one map")
    items = [(str(name), tuple(str(s) for s in labels), as_array(f, 2, "frobenius")) for name, (labels, f) in
             maps.items()]
    first_name, first_labels, _ = items[0]
    for name, labels, _ in items[1:]:
        if labels != first_labels:
            raise ValueError(
                f"checkpoints {first_name!r} and {name!r} have different blocks ({list(first_labels)} and "
                f"{list(labels)}); compute the block norms over the same parameter groups"
            )
    scale = color_scale(np.concatenate([v.ravel() for _, _, v in items]), log)
    charts = []
    for name, labels, values in items:
        chart = block_norm_chart(labels, values, log=log)
        charts.append(MatrixChart(**{**chart.__dict__, "scale": scale, "title": f"{name}: {chart.title}"}))
    return charts


def landscape_difference_charts(
    loss_a, loss_b, *, names: tuple[str, str] = ("a", "b"), log: bool = False
) -> list[MatrixChart]:
    r"""Two loss slices ``[R, R]`` over the same grid, on one colour scale, and their difference.

    Args:
        loss_a: ``[R, R]`` losses of checkpoint ``a`` (rows: the second direction's coefficients β, top to
            bottom as stored; columns: α), as a :class:`~tscope_widgets.kernels.landscape` slice holds them.
        loss_b: The same grid and directions for checkpoint ``b``.
        names: How the checkpoints are called.
        log: Logarithmic colours for the two slices.

    Returns:
        ``[slice a, slice b, difference a − b]`` (the difference in ``rdbu`` on :math:`[-M, M]`, :math:`M` the
        largest :math:`|L_a - L_b|`).

    Raises:
        ValueError: For grids of different shapes.
    """
    a, b = as_array(loss_a, 2, "loss_a"), as_array(loss_b, 2, "loss_b")
    if a.shape != b.shape:
        raise ValueError(f"the slices have different grids: {names[0]} {a.shape}, {names[1]} {b.shape}; "
                         "evaluate both checkpoints on the same directions and resolution")
    R, C = a.shape
    rows, cols = tuple(str(k) for k in range(R)), tuple(str(k) for k in range(C))
    shared = color_scale(np.concatenate([a.ravel(), b.ravel()]), log)
    diff = a - b
    finite = np.abs(diff[np.isfinite(diff)])
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0

    def chart(values, title, value_title, scale):
        return MatrixChart(values=values, row_labels=rows, col_labels=cols, title=title, x_label="α index",
                           y_label="β index", value_title=value_title, value_name=value_title, scale=scale,
                           row_name="β", col_name="α")

    return [
        chart(a, f"loss of {names[0]}", "loss", shared),
        chart(b, f"loss of {names[1]}", "loss", shared),
        chart(diff, f"{names[0]} − {names[1]}", "loss difference",
              color_scale(diff, False, lo=-top, hi=top, colormap="rdbu")),
    ]


def overlay_figures(charts: Sequence[LineChart | MatrixChart], *, width: int = 380, height: int = 340):
    """The charts side by side as one Bokeh row (for a report)."""
    from bokeh.layouts import row

    from .bokeh import chart_figure

    return row([chart_figure(c, width=width, height=height) for c in charts])
