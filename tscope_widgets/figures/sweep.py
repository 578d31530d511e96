r"""The sweep view: any swept quantity against a swept axis on log-log axes, as a sweep fills in.

:func:`sweep_chart` takes a :class:`SweepTable` (one row per finished run: the axis values and the scalar
summaries), a summary and an axis, and describes one chart:

- one group per value of the other axes (seed axes excepted: those are the repeats), one colour each;
- every run as a dot, and per ``x`` the mean over seeds with an error bar of ± one standard error
  :math:`s/\sqrt{n}` (sample standard deviation :math:`s`, :math:`n` seeds; no bar below two seeds; on the log
  axis a bar whose lower end is not positive reaches down to the bottom of the plot, ``err_lo = NaN``);
- per group the power law :math:`y = c\,x^a` fitted by :func:`~tscope_widgets.kernels.power_law.fit_power_law`
  (least squares on :math:`\log x, \log y`, percentile bootstrap over whole seeds) to the runs with ``x`` inside
  ``fit_range`` (all runs when None), drawn over that range; the legend gives :math:`a` and its interval;
- grey guide lines :math:`\propto x^k` for given exponents ``k`` (e.g. the paper's :math:`\sigma^5`,
  :math:`\sigma^2`), through the first group's mean at its smallest ``x``, clipped to the plot box;
- a dashed vertical marker (e.g. :math:`\sigma = 1`) when asked.

Runs whose ``x`` or ``y`` cannot sit on a log axis (zero, negative, NaN, not a number) are left out and counted
(``dropped``). :func:`growth_table` turns a growth-rate snapshot (:func:`~tscope_widgets.kernels.theory.growth.
iter_growth_rates`) into such a table. :mod:`.svg_sweep` and :mod:`.bokeh` render the description; the widget's
live view (``js/src/sweep_widget.js``) draws the same description sent as plain lists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..kernels.power_law import PowerLawFit, fit_power_law
from .charts import series_color
from .scaling import MIN_POINTS, ScalingChart, ScalingSeries, fit_text

__all__ = ["GUIDE_COLOR", "GuideLine", "SweepChart", "SweepGroup", "SweepTable", "growth_table", "sweep_chart",
           "residual_chart", "table_from_rows"]

GUIDE_COLOR = "#9e9e9e"
FIT_POINTS = 32  # points of a drawn fit line
PAD = 0.05  # each axis extends by this fraction of its decades on either side


@dataclass(frozen=True)
class SweepTable:
    """Rows of a sweep (finished runs only), the snapshot a sweep source yields.

    Attributes:
        rows: One dict per run: the values of ``axes`` and the summaries (numbers).
        axes: The swept axes (columns), in order.
        seed_axes: Axes whose values are seeds (repeats: averaged and resampled, never a group or x).
        done: Runs finished. total: Runs in all (None: unknown).
    """

    rows: tuple[dict[str, Any], ...]
    axes: tuple[str, ...]
    seed_axes: tuple[str, ...] = ()
    done: int = 0
    total: int | None = None


@dataclass(frozen=True, eq=False)
class SweepGroup:
    """One value of the other axes: its runs, their means over seeds with error bars, and its fit.

    Attributes:
        key: The other axes' values as text (``"setting=L=1"``; ``"all"`` when there are none).
        label: Legend text with the exponent and its interval.
        color: ``#rrggbb``.
        x: ``[M]`` distinct x values, increasing (float64).
        mean, stderr: ``[M]`` mean of y over the runs at each x, and its standard error (NaN below 2 runs).
        err_lo, err_hi: ``[M]`` ends of the error bars ``mean ∓ stderr`` (NaN: no bar; ``err_lo`` NaN alone: the
            bar reaches the bottom of a log axis).
        count: ``[M]`` runs at each x (int64).
        points_x, points_y: ``[N]`` every run.
        seeds: ``[N]`` the seed of each run, as text.
        fit: The :class:`PowerLawFit` over ``fit_range``, or None (fewer than two x values there).
        fit_x, fit_y: ``[FIT_POINTS]`` the fitted line (None without a fit).
    """

    key: str
    label: str
    color: str
    x: np.ndarray
    mean: np.ndarray
    stderr: np.ndarray
    err_lo: np.ndarray
    err_hi: np.ndarray
    count: np.ndarray
    points_x: np.ndarray
    points_y: np.ndarray
    seeds: tuple[str, ...]
    fit: PowerLawFit | None
    fit_x: np.ndarray | None
    fit_y: np.ndarray | None


@dataclass(frozen=True)
class GuideLine:
    """A guide :math:`y \\propto x^k` as a segment ``(x0, y0) → (x1, y1)`` inside the plot box."""

    exponent: float
    label: str
    x: tuple[float, float]
    y: tuple[float, float]
    color: str = GUIDE_COLOR


@dataclass(frozen=True, eq=False)
class SweepChart:
    """A summary against a swept axis, log x and log y (see the module docstring).

    Attributes:
        title, x_label, y_label: Texts.
        groups: The groups, in order of first appearance in the table.
        guides: The guide lines that cross the plot box.
        x_range, y_range: Axis ranges (data units, positive); None when nothing can be drawn.
        fit_range: The x range of the fits, or None (all runs).
        marker_x: A dashed vertical line here, or None.
        dropped: Runs left out for an x or y that is not positive and finite.
        confidence: Coverage of the fits' intervals.
    """

    title: str
    x_label: str
    y_label: str
    groups: tuple[SweepGroup, ...]
    guides: tuple[GuideLine, ...] = ()
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None
    fit_range: tuple[float, float] | None = None
    marker_x: float | None = None
    dropped: int = 0
    confidence: float = 0.95
    notes: tuple[str, ...] = field(default_factory=tuple)


def _positive(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _padded(lo: float, hi: float) -> tuple[float, float]:
    """``[lo, hi]`` widened by :data:`PAD` of its decades on each side (a factor 2 when ``lo == hi``)."""
    span = math.log10(hi) - math.log10(lo)
    if span <= 0:
        return float(lo / 2), float(hi * 2)
    f = 10 ** (PAD * span)
    return float(lo / f), float(hi * f)


def _clip_guide(k: float, x0: float, y0: float, xr: tuple[float, float], yr: tuple[float, float]):
    """The part of :math:`\\log y = \\log y_0 + k (\\log x - \\log x_0)` inside the box, or None."""
    lx0, ly0 = math.log10(x0), math.log10(y0)
    a, b = math.log10(xr[0]), math.log10(xr[1])  # x interval, shrunk by the y limits below
    if k != 0:
        t1 = lx0 + (math.log10(yr[0]) - ly0) / k
        t2 = lx0 + (math.log10(yr[1]) - ly0) / k
        a, b = max(a, min(t1, t2)), min(b, max(t1, t2))
    elif not math.log10(yr[0]) <= ly0 <= math.log10(yr[1]):
        return None
    if not a < b:
        return None
    return (10**a, 10**b), (10 ** (ly0 + k * (a - lx0)), 10 ** (ly0 + k * (b - lx0)))


def _group_stats(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, ...]:
    ux = np.unique(xs)
    mean, stderr, count = np.empty(ux.size), np.full(ux.size, np.nan), np.empty(ux.size, np.int64)
    for i, v in enumerate(ux):
        y = ys[xs == v]
        mean[i], count[i] = y.mean(), y.size
        if y.size >= 2:
            stderr[i] = y.std(ddof=1) / math.sqrt(y.size)
    err_hi = mean + stderr
    err_lo = np.where(mean - stderr > 0, mean - stderr, np.nan)
    return ux, mean, stderr, err_lo, err_hi, count


def sweep_chart(
    table: SweepTable,
    summary: str,
    axis: str,
    *,
    guides: Sequence[float] = (),
    fit_range: tuple[float, float] | None = None,
    marker_x: float | None = None,
    confidence: float = 0.95,
    num_bootstrap: int = 1000,
    seed: int = 0,
) -> SweepChart:
    """Describe ``summary`` against ``axis`` for the rows of ``table`` (see the module docstring).

    Args:
        table: The runs so far.
        summary: The y column.
        axis: The x column (one of ``table.axes``, not a seed axis).
        guides: Exponents ``k`` of guide lines :math:`\\propto x^k`.
        fit_range: ``(lo, hi)``: fit only runs with ``lo <= x <= hi`` (e.g. the paper's ``σ <= 0.26``).
        marker_x: x of a dashed vertical marker, or None.
        confidence: Coverage of the fits' bootstrap intervals.
        num_bootstrap: Bootstrap replicates per fit.
        seed: Seed of the bootstrap (the intervals are reproducible).

    Returns:
        A :class:`SweepChart`.
    """
    others = [a for a in table.axes if a != axis and a not in table.seed_axes]
    grouped: dict[str, list[tuple[float, float, str]]] = {}
    dropped = 0
    for row in table.rows:
        x, y = _positive(row.get(axis)), _positive(row.get(summary))
        if x is None or y is None:
            dropped += 1
            continue
        key = ", ".join(f"{a}={row.get(a)}" for a in others) or "all"
        run_seed = "/".join(str(row.get(s)) for s in table.seed_axes)
        grouped.setdefault(key, []).append((x, y, run_seed))
    groups = []
    lo_x = lo_y = math.inf
    hi_x = hi_y = -math.inf
    for i, (key, items) in enumerate(grouped.items()):
        xs = np.array([t[0] for t in items], np.float64)
        ys = np.array([t[1] for t in items], np.float64)
        seeds = tuple(t[2] for t in items)
        ux, mean, stderr, err_lo, err_hi, count = _group_stats(xs, ys)
        use = np.ones(xs.size, bool) if fit_range is None else (xs >= fit_range[0]) & (xs <= fit_range[1])
        fit = fit_x = fit_y = None
        if np.unique(xs[use]).size >= MIN_POINTS:
            fit_seeds = [s for s, u in zip(seeds, use, strict=True) if u] if table.seed_axes else None
            fit = fit_power_law(xs[use], ys[use], fit_seeds, num_bootstrap=num_bootstrap, confidence=confidence,
                                seed=seed)
            fit_x = np.geomspace(xs[use].min(), xs[use].max(), FIT_POINTS)
            fit_y = fit.predict(fit_x)
        groups.append(SweepGroup(key, f"{key}: {fit_text(fit)}", series_color(i), ux, mean, stderr, err_lo, err_hi,
                                 count, xs, ys, seeds, fit, fit_x, fit_y))
        lo_x, hi_x = min(lo_x, xs.min()), max(hi_x, xs.max())
        lo_y, hi_y = min(lo_y, ys.min(), np.nanmin(err_lo, initial=np.inf)), max(hi_y, ys.max(),
                                                                                 np.nanmax(err_hi, initial=-np.inf))
    x_range = y_range = None
    lines = []
    if groups:
        x_range, y_range = _padded(lo_x, hi_x), _padded(lo_y, hi_y)
        g0 = groups[0]
        for k in guides:
            clipped = _clip_guide(float(k), float(g0.x[0]), float(g0.mean[0]), x_range, y_range)
            if clipped is not None:
                lines.append(GuideLine(float(k), f"∝ {axis}^{float(k):g}", *clipped))
    level = f"{round(100 * confidence)}%"
    where = "" if fit_range is None else f", fitted on {fit_range[0]:g} ≤ {axis} ≤ {fit_range[1]:g}"
    return SweepChart(
        title=f"{summary} against {axis}: y = c·{axis}^a ({level} interval over seeds{where})",
        x_label=axis,
        y_label=summary,
        groups=tuple(groups),
        guides=tuple(lines),
        x_range=x_range,
        y_range=y_range,
        fit_range=None if fit_range is None else (float(fit_range[0]), float(fit_range[1])),
        marker_x=None if marker_x is None else float(marker_x),
        dropped=dropped,
        confidence=float(confidence),
    )


def growth_table(snapshot) -> SweepTable:
    """A growth-rate snapshot (:class:`~tscope_widgets.kernels.theory.growth.GrowthRates`) as a sweep table.

    One row per finished ``(setting, σ, seed)`` point: ``setting`` (the label), ``sigma``, ``seed`` and one
    column ``<block>_<part>`` per block-norm (``q_hessian``, ``q_ggn``, ``q_functional``, ``v_hessian`` ...):
    :math:`\\lVert \\cdot \\rVert_F` as measured. Axes ``("setting", "sigma", "seed")``, seed axis ``seed``.

    Raises:
        TypeError: For an object without the fields of ``GrowthRates``.
    """
    from ..kernels.theory.growth import GROWTH_BLOCKS, GROWTH_PARTS

    missing = [n for n in ("settings", "seeds", "sigmas", "norms", "point_done", "done", "total")
               if not hasattr(snapshot, n)]
    if missing:
        raise TypeError(f"expected a GrowthRates snapshot (from iter_growth_rates); {type(snapshot).__name__} "
                        f"lacks {missing}")
    norms = np.asarray(snapshot.norms, np.float64)  # [G, I, J, B, P]
    sigmas = np.asarray(snapshot.sigmas, np.float64)  # [G, I]
    done = np.asarray(snapshot.point_done, bool)  # [G, I, J]
    rows = []
    for g, i, j in zip(*np.nonzero(done), strict=True):
        row: dict[str, Any] = {"setting": snapshot.settings[g].label, "sigma": float(sigmas[g, i]),
                               "seed": int(snapshot.seeds[j])}
        for b, block in enumerate(GROWTH_BLOCKS):
            for p, part in enumerate(GROWTH_PARTS):
                row[f"{block}_{part}"] = float(norms[g, i, j, b, p])
        rows.append(row)
    return SweepTable(tuple(rows), ("setting", "sigma", "seed"), ("seed",), int(snapshot.done),
                      None if snapshot.total is None else int(snapshot.total))


def table_from_rows(rows: Sequence[Mapping[str, Any]], axes: Sequence[str], seed_axes: Sequence[str] = (),
                    total: int | None = None) -> SweepTable:
    """A :class:`SweepTable` of finished rows (``done`` is their count)."""
    return SweepTable(tuple(dict(r) for r in rows), tuple(axes), tuple(seed_axes), len(rows), total)


def residual_chart(chart: SweepChart) -> ScalingChart:
    r"""The fits' residuals :math:`\log y - \log \hat y` (natural log) against x, one series per fitted group.

    A curve in the residuals means the runs are not a power law over the fit range. Drawn by
    :func:`~tscope_widgets.figures.bokeh.scaling_chart_figure` (log x, linear y, a zero line).
    """
    series = []
    for g in chart.groups:
        if g.fit is None:
            continue
        lo, hi = chart.fit_range if chart.fit_range is not None else (-math.inf, math.inf)
        use = (g.points_x >= lo) & (g.points_x <= hi)
        seeds = tuple(s for s, u in zip(g.seeds, use, strict=True) if u)
        series.append(ScalingSeries(g.key, g.key, g.color, g.points_x[use], g.fit.residuals, seeds, None, None, g.fit))
    return ScalingChart(f"residuals of the fits: log {chart.y_label} − log fit", chart.x_label, "log residual",
                        tuple(series), residuals=True, dropped=chart.dropped)
