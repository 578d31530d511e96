"""The scaling report of a sweep: power-law fits of every summary against every swept numeric axis.

:func:`sweep_fits` picks the pairs worth fitting (a numeric axis with at least two positive values that is not
a seed axis; a summary column with positive values that is not constant) and fits them per group of the other
axes (:func:`~tscope_widgets.figures.scaling.scaling_fits`). :func:`write_scaling_report` writes ``fits.json``
(exponent, interval, prefactor, R² per summary, axis and group) and ``scaling_report.html``: per pair the
log-log chart with its fits and the residual chart, Bokeh with its JavaScript inline (opens offline).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._atomic import write_text
from .sweep_config import SweepConfig
from .sweep_rows import SUMMARY_DOCS

NUM_BOOTSTRAP = 2000
CONFIDENCE = 0.95


def _numeric(values: Sequence[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return []
        out.append(float(v))
    return out


def fit_pairs(sweep: SweepConfig, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(summary, axis)`` pairs with something to fit, summaries in :data:`SUMMARY_DOCS` order."""
    axes = []
    for axis in sweep.axes:
        if axis in sweep.seed_axes:
            continue
        values = _numeric([r.get(axis) for r in rows])
        if values and len({v for v in values if v > 0}) >= 2:
            axes.append(axis)
    pairs = []
    for summary in SUMMARY_DOCS:
        values = [r.get(summary) for r in rows]
        finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
        if len(set(finite)) >= 2:
            pairs.extend((summary, axis) for axis in axes)
    return pairs


def sweep_fits(sweep: SweepConfig, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per summary, axis and group: exponent, interval, prefactor, R², points and seeds."""
    from ..figures.scaling import scaling_fits

    records = []
    for summary, axis in fit_pairs(sweep, rows):
        fitted, dropped = scaling_fits(rows, summary, axis, list(sweep.axes), sweep.seed_axes,
                                       num_bootstrap=NUM_BOOTSTRAP, confidence=CONFIDENCE)
        for group, (_, _, _, fit) in fitted.items():
            if fit is None:
                continue
            records.append({
                "summary": summary,
                "axis": axis,
                "group": group,
                "exponent": fit.exponent,
                "ci_low": None if math.isnan(fit.ci_low) else fit.ci_low,
                "ci_high": None if math.isnan(fit.ci_high) else fit.ci_high,
                "confidence": fit.confidence,
                "prefactor": fit.prefactor,
                "r_squared": fit.r_squared,
                "points": fit.num_points,
                "seeds": fit.num_seeds,
                "dropped": dropped,
            })
    return records


def write_scaling_report(out: Path, sweep: SweepConfig, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Write ``fits.json`` and (when there is something to plot) ``scaling_report.html``; return their paths."""
    from bokeh.layouts import row

    from ..export.html import save_report
    from ..figures.bokeh import scaling_chart_figure
    from ..figures.scaling import scaling_charts

    fits = sweep_fits(sweep, rows)
    document = {"confidence": CONFIDENCE, "num_bootstrap": NUM_BOOTSTRAP, "seed_axes": list(sweep.seed_axes),
                "fits": fits}
    paths = [write_text(out / "fits.json", json.dumps(document, indent=1, allow_nan=False))]
    pairs = fit_pairs(sweep, rows)
    if not pairs:
        return paths
    figures = []
    for summary, axis in pairs:
        main, residual = scaling_charts(rows, summary, axis, list(sweep.axes), sweep.seed_axes,
                                        num_bootstrap=NUM_BOOTSTRAP, confidence=CONFIDENCE)
        figures.append(row(scaling_chart_figure(main), scaling_chart_figure(residual, width=420)))
    seeds = ", ".join(sweep.seed_axes) or "none (intervals resample the points)"
    notes = [
        f"{len(rows)} of {len(sweep.points)} points of {sweep.path.name}; axes {', '.join(sweep.axes)}; "
        f"seed axes: {seeds}.",
        "Each chart: a summary against a swept axis on log-log axes, one colour per value of the other axes; "
        "lines are least-squares fits of log y on log x, y = c·x^a; the legend gives the exponent a and its "
        f"{round(100 * CONFIDENCE)}% percentile bootstrap interval ({NUM_BOOTSTRAP} resamples of whole seeds). "
        "The right chart shows the residuals log y − log fit: a curve in them means the data are not a power "
        "law over this range. Points that are zero, negative or missing are left out.",
        *(f"{k}: {v}." for k, v in SUMMARY_DOCS.items() if any(s == k for s, _ in pairs)),
    ]
    paths.append(save_report(out / "scaling_report.html", figures, title=f"tscope sweep: {sweep.path.name}",
                             notes=notes))
    return paths
