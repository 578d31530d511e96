r"""Scaling views: a summary against a swept quantity on log-log axes, with power-law fits and their residuals.

:func:`scaling_charts` takes the rows of a sweep table (plain dicts), one summary and one swept axis, splits the
rows by the values of the other axes (seeds excepted: those are the repeats a fit resamples), fits
:math:`y = c\,x^a` to each group (:func:`~tscope_widgets.kernels.power_law.fit_power_law`, bootstrap over seeds)
and describes two charts: the points with their fitted lines (legend: the exponent and its interval), and the
residuals :math:`\log y - \log \hat y`. :mod:`.bokeh` draws them (``scaling_chart_figure``).

Points that cannot sit on a log axis (zero, negative, NaN) are left out and counted in the chart's note.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..kernels.power_law import PowerLawFit, fit_power_law
from .charts import series_color

__all__ = ["ScalingChart", "ScalingSeries", "fit_text", "scaling_charts", "scaling_fits"]

MIN_POINTS = 2  # distinct x values a group needs for a fit


@dataclass(frozen=True, eq=False)
class ScalingSeries:
    r"""One group of runs (fixed values of the other axes) in a :class:`ScalingChart`.

    Attributes:
        key: The other axes' values as text (``"n_layer=2"``; ``"all"`` when there are none).
        label: Legend text, with the exponent and its interval when fitted.
        color: ``#rrggbb``.
        x, y: ``[N]`` the runs (all seeds); in a residual chart ``y`` is :math:`\log y - \log \hat y`.
        seeds: ``[N]`` the seed of each run (text), for hover.
        fit_x, fit_y: ``[M]`` the fitted line (``None`` without a fit or in a residual chart).
        fit: The :class:`PowerLawFit`, or ``None`` when the group has too few points.
    """

    key: str
    label: str
    color: str
    x: np.ndarray
    y: np.ndarray
    seeds: tuple[str, ...]
    fit_x: np.ndarray | None
    fit_y: np.ndarray | None
    fit: PowerLawFit | None


@dataclass(frozen=True, eq=False)
class ScalingChart:
    """A summary against a swept axis: log x always, log y unless it shows residuals.

    Attributes:
        title, x_label, y_label: Texts.
        series: The groups, in the order of the other axes' values.
        residuals: Whether ``y`` holds the fit residuals (linear y axis, a zero line).
        dropped: Runs left out for values that are not positive and finite.
    """

    title: str
    x_label: str
    y_label: str
    series: tuple[ScalingSeries, ...]
    residuals: bool = False
    dropped: int = 0

    @property
    def log_y(self) -> bool:
        """Whether the y axis is logarithmic."""
        return not self.residuals


def _group_key(row: Mapping, others: Sequence[str]) -> str:
    return ", ".join(f"{a}={row.get(a)}" for a in others) or "all"


def _positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def scaling_fits(
    rows: Sequence[Mapping], summary: str, axis: str, axes: Sequence[str], seed_axes: Sequence[str] = (),
    *, num_bootstrap: int = 2000, confidence: float = 0.95,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, tuple[str, ...], PowerLawFit | None]], int]:
    """Split ``rows`` by the other axes and fit each group.

    Args:
        rows: Table rows (dicts: axis values and summaries).
        summary: The column to fit.
        axis: The swept column on x (numeric).
        axes: Every swept axis of the table.
        seed_axes: Axes holding seeds: not groups, resampled by the fit.
        num_bootstrap: Bootstrap replicates per fit.
        confidence: Interval coverage.

    Returns:
        ``({group: (x [N], y [N], seeds, fit or None)}, dropped)``; groups in order of first appearance.
    """
    others = [a for a in axes if a != axis and a not in seed_axes]
    groups: dict[str, list] = {}
    dropped = 0
    for row in rows:
        x, y = _positive(row.get(axis)), _positive(row.get(summary))
        if x is None or y is None:
            dropped += 1
            continue
        seed = "/".join(str(row.get(s)) for s in seed_axes)
        groups.setdefault(_group_key(row, others), []).append((x, y, seed))
    out = {}
    for key, items in groups.items():
        xs = np.array([i[0] for i in items])
        ys = np.array([i[1] for i in items])
        seeds = tuple(i[2] for i in items)
        fit = None
        if np.unique(xs).size >= MIN_POINTS:
            fit = fit_power_law(xs, ys, seeds if seed_axes else None, num_bootstrap=num_bootstrap,
                                confidence=confidence)
        out[key] = (xs, ys, seeds, fit)
    return out, dropped


def fit_text(fit: PowerLawFit | None) -> str:
    """Legend text of a fit: ``a = 2.01 [1.97, 2.05]``, the exponent alone with one seed, or why there is none."""
    if fit is None:
        return "no fit (fewer than 2 x values)"
    if math.isnan(fit.ci_low):
        return f"a = {fit.exponent:.3g} (one seed: no interval)"
    return f"a = {fit.exponent:.3g} [{fit.ci_low:.3g}, {fit.ci_high:.3g}]"


def scaling_charts(
    rows: Sequence[Mapping], summary: str, axis: str, axes: Sequence[str], seed_axes: Sequence[str] = (),
    *, num_bootstrap: int = 2000, confidence: float = 0.95,
) -> tuple[ScalingChart, ScalingChart]:
    """The log-log chart of ``summary`` against ``axis`` with power-law fits, and its residual chart.

    See :func:`scaling_fits` for the arguments. Each group of the other axes is a series (Tableau colours in
    order); the fitted line spans the group's x range.
    """
    fitted, dropped = scaling_fits(rows, summary, axis, axes, seed_axes, num_bootstrap=num_bootstrap,
                                   confidence=confidence)
    main, residual = [], []
    for i, (key, (xs, ys, seeds, fit)) in enumerate(fitted.items()):
        color = series_color(i)
        label = f"{key}: {fit_text(fit)}"
        fit_x = fit_y = None
        if fit is not None:
            fit_x = np.geomspace(xs.min(), xs.max(), 32)
            fit_y = fit.predict(fit_x)
            residual.append(ScalingSeries(key, key, color, xs, fit.residuals, seeds, None, None, fit))
        main.append(ScalingSeries(key, label, color, xs, ys, seeds, fit_x, fit_y, fit))
    level = f"{round(100 * confidence)}%"
    title = f"{summary} against {axis}: y = c·x^a ({level} interval, bootstrap over seeds)"
    return (
        ScalingChart(title, axis, summary, tuple(main), dropped=dropped),
        ScalingChart(f"residuals of the fits: log {summary} − log fit", axis, "log residual", tuple(residual),
                     residuals=True, dropped=dropped),
    )
