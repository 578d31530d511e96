r"""What the spectrum-during-training view shows: line charts of the tracked series, the spectral density, the
block-norm map and the block × step :math:`\lambda_{\max}` map, as chart descriptions.

Series options (:func:`series_options`) fix each series' colour by its index among all options, the rule of
the live view (``seriesColor(index)``, Tableau 10): the loss is blue, :math:`\lambda_{\max}` red, wherever
they are drawn. The builders take a history as plain arrays (a mapping, a
:class:`~tscope_widgets.tracking.SpectrumHistory` or what a results file holds), never a widget.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .block_types import TYPE_ORDER, type_steps_chart
from .charts import LineChart, MatrixChart, Series, as_array, color_scale, format_value, line_chart, series_color

__all__ = [
    "DEFAULT_SERIES",
    "DENSITY_LOG_RANGE",
    "GRAD_NORM_PREFIX",
    "NO_THRESHOLD_LABEL",
    "PANELS",
    "SERIES",
    "block_norm_chart",
    "block_steps_chart",
    "density_chart",
    "floored_density",
    "density_index",
    "eigen_table_html",
    "series_charts",
    "series_options",
    "spectrum_charts",
]

# Panels of line charts: key -> (title, y axis label with units).
PANELS = {
    "loss": ("training loss", "loss (cross-entropy, nats)"),
    "curvature": ("extreme Hessian eigenvalues", "eigenvalue of ∇²L"),
    "trace": ("Hessian trace (band: ± 1 std. error)", "tr ∇²L"),
    "gradient norms": ("gradient norm per parameter group", "‖∇L‖₂ of the group"),
    "learning rate": ("learning rate", "learning rate η"),
    "cost": ("Hessian-vector products per record", "HVPs"),
}
# Scalar series of a SpectrumHistory: attribute -> (legend label, panel). Gradient norms are added per group.
SERIES = {
    "loss": ("loss on the curvature data", "loss"),
    "train_loss": ("training loss (batch)", "loss"),
    "lambda_max": ("λ_max", "curvature"),
    "lambda_min": ("λ_min", "curvature"),
    "threshold": ("2/η (edge of stability)", "curvature"),
    "trace": ("tr ∇²L", "trace"),
    "lr": ("η", "learning rate"),
    "matvecs": ("HVPs", "cost"),
    # Adam/AdamW (Cohen et al. 2022), appended so that the colours of the series above stay as they were
    "precond_lambda_max": ("λ_max(P⁻¹H) (Adam)", "curvature"),
    "adam_threshold": ("(2+2β₁)/((1−β₁)η) (Adam edge of stability)", "curvature"),
}
DEFAULT_SERIES = (
    "loss", "train_loss", "lambda_max", "lambda_min", "threshold", "trace", "precond_lambda_max", "adam_threshold"
)
# Series that exist only for some optimisers: drawn only where they have a finite value.
OPTIMISER_SERIES = ("threshold", "precond_lambda_max", "adam_threshold")
THRESHOLD_SERIES = ("threshold", "adam_threshold")
NO_THRESHOLD_LABEL = "no known stability threshold for this optimiser (or η unknown)"
MAX_DEFAULT_GRAD_NORMS = 10
GRAD_NORM_PREFIX = "grad_norm:"
X_LABEL = "training step"
DENSITY_KEY = "density"
DENSITY_LOG_RANGE = 1e-6  # a density on a log axis is floored this far below its peak


def _field(h, name: str, default=None):
    if isinstance(h, Mapping):
        return h.get(name, default)
    return getattr(h, name, default)


def series_options(grad_norm_labels: Sequence[str] = ()) -> list[dict[str, str]]:
    """Every series the view can draw, in order: ``{key, label, panel, color}``.

    The colour is fixed by the option's index (Tableau 10, as the live view's ``seriesColor``).
    """
    options = [{"key": k, "label": label, "panel": panel} for k, (label, panel) in SERIES.items()]
    options += [
        {"key": GRAD_NORM_PREFIX + g, "label": f"‖∇L‖ {g}", "panel": "gradient norms"} for g in grad_norm_labels
    ]
    return [{**o, "color": series_color(k)} for k, o in enumerate(options)]


def default_selection(grad_norm_labels: Sequence[str] = ()) -> list[str]:
    """The series shown before a user picks: :data:`DEFAULT_SERIES` and the first ten gradient norms."""
    defaults = set(DEFAULT_SERIES) | {GRAD_NORM_PREFIX + g for g in list(grad_norm_labels)[:MAX_DEFAULT_GRAD_NORMS]}
    return [o["key"] for o in series_options(grad_norm_labels) if o["key"] in defaults]


def series_values(h, key: str) -> np.ndarray:
    """``[T]`` values of the series ``key`` of a history (``grad_norm:<group>`` for a gradient norm)."""
    if key.startswith(GRAD_NORM_PREFIX):
        labels = list(_field(h, "grad_norm_labels", []))
        return as_array(_field(h, "grad_norms"), 2, "grad_norms")[:, labels.index(key[len(GRAD_NORM_PREFIX) :])]
    values = _field(h, key)
    steps = as_array(_field(h, "steps")).reshape(-1)
    return np.full(steps.shape, np.nan) if values is None else as_array(values).reshape(-1)


def density_index(density_steps, picked_step: int | None) -> int | None:
    """Index of the density to show: the one recorded nearest to ``picked_step`` (ties: the earlier), the
    latest without a pick; None without densities."""
    ds = np.asarray(density_steps).reshape(-1)
    if ds.size == 0:
        return None
    return ds.size - 1 if picked_step is None else int(np.argmin(np.abs(ds - picked_step)))


def series_charts(h, selected: Sequence[str] | None = None, *, log: bool = True, picked_step=None) -> list[LineChart]:
    r"""One line chart per panel with a selected series (panels in :data:`PANELS` order, series in option order).

    The stability lines follow the optimiser the history was recorded with: the SGD line :math:`2/\eta`
    (momentum-aware, NaN for other optimisers) and Adam's preconditioned sharpness with its threshold
    :math:`(2 + 2\beta_1)/((1 - \beta_1)\eta)` (NaN unless Adam/AdamW) are drawn only where they have a value;
    when a selected threshold has none, the legend says :data:`NO_THRESHOLD_LABEL` instead of an empty entry.

    Args:
        h: A history (mapping or object with ``steps [T]``, the :data:`SERIES` vectors, ``trace_stderr``,
            ``grad_norms [T, L]`` and ``grad_norm_labels``).
        selected: Series keys (default: :func:`default_selection`).
        log: Logarithmic y axes.
        picked_step: The picked step, marked by a dashed line.
    """
    steps = as_array(_field(h, "steps")).reshape(-1)
    grad_labels = list(_field(h, "grad_norm_labels", []) or [])
    options = series_options(grad_labels)
    chosen = set(default_selection(grad_labels) if selected is None else selected)
    charts = []
    for panel, (title, y_label) in PANELS.items():
        lines = []
        missing_threshold = None
        for o in options:
            if o["panel"] != panel or o["key"] not in chosen:
                continue
            y = series_values(h, o["key"])
            if o["key"] in OPTIMISER_SERIES and not np.isfinite(y).any():
                if o["key"] in THRESHOLD_SERIES and missing_threshold is None:
                    missing_threshold = Series(o["key"], NO_THRESHOLD_LABEL, y, o["color"])
                continue
            band = None
            if o["key"] == "trace" and _field(h, "trace_stderr") is not None:
                se = as_array(_field(h, "trace_stderr")).reshape(-1)
                band = (y - se, y + se)
            lines.append(Series(o["key"], o["label"], y, o["color"], band))
        if missing_threshold is not None and not any(s.key in THRESHOLD_SERIES for s in lines):
            lines.append(missing_threshold)
        if lines:
            charts.append(line_chart(steps, lines, title, X_LABEL, y_label, log, picked_step))
    return charts


def floored_density(density, log_range: float = DENSITY_LOG_RANGE) -> np.ndarray:
    r"""``max(φ, log_range · max φ)``: a density ``[P]`` for a log axis (float64).

    An SLQ density is a sum of Gaussians (Ghorbani, Krishnan & Xiao 2019); far from the Ritz values it
    underflows to 1e-47 and below, which stretched the log axis over dozens of decades and flattened
    the peaks. As in the log density plots of Zhang et al. (2024, "Why Transformers Need Adam"), values
    under ``log_range`` times the peak are shown at that floor. NaN stays NaN.
    """
    values = as_array(density).reshape(-1)
    finite = values[np.isfinite(values)]
    peak = float(finite.max()) if finite.size else 0.0
    return np.where(np.isnan(values), np.nan, np.maximum(values, max(peak, 1e-300) * log_range))


def density_chart(grid, density, step: int, *, log: bool = True) -> LineChart:
    """The spectral density ``φ(λ)`` on ``grid [P]``, recorded at ``step``; on a log axis floored at
    :data:`DENSITY_LOG_RANGE` times its peak (:func:`floored_density`)."""
    y = floored_density(density) if log else as_array(density).reshape(-1)
    line = Series(DENSITY_KEY, "φ(λ)", y, series_color(0))
    return line_chart(grid, [line], f"spectral density at step {int(step)} (SLQ)", "eigenvalue λ of ∇²L",
                       "density φ(λ)", log)


def block_norm_chart(labels: Sequence[str], frobenius, *, exact: bool = True, log: bool = True) -> MatrixChart:
    """The block-norm map ``‖H_ab‖_F [G, G]`` (``" (estimate)"`` in the title unless exact, as the live view)."""
    values = as_array(frobenius, 2, "frobenius")
    labels = tuple(str(s) for s in labels)
    return MatrixChart(
        values=values,
        row_labels=labels,
        col_labels=labels,
        title="block norms ‖H_ab‖_F" + ("" if exact else " (estimate)"),
        x_label="block b",
        y_label="block a",
        value_title="‖H_ab‖_F",
        value_name="‖H_ab‖_F",
        scale=color_scale(values, log),
        row_name="block a",
        col_name="block b",
    )


def block_steps_chart(labels: Sequence[str], steps, block_lambda_max, *, log: bool = True) -> MatrixChart:
    """Each block's ``λ_max(H_aa)`` over the recorded steps: ``block_lambda_max [T, G]`` drawn as ``[G, T]``."""
    values = np.ascontiguousarray(as_array(block_lambda_max, 2, "block_lambda_max").T)
    return MatrixChart(
        values=values,
        row_labels=tuple(str(s) for s in labels),
        col_labels=tuple(str(int(s)) for s in np.asarray(steps).reshape(-1)),
        title="λ_max of each Hessian block H_aa",
        x_label=X_LABEL,
        y_label="block a",
        value_title="λ_max(H_aa)",
        value_name="λ_max(H_aa)",
        scale=color_scale(values, log),
        row_name="block a",
        col_name="step",
        square=False,
    )


def type_history(history) -> tuple[list[str], np.ndarray] | None:
    r"""``(types, values [T, Ty])``: the mean :math:`\lambda_{\max}(H_{aa})` of the tracked blocks of each type at
    every record (types in the Sharpness Disparity order, then the head), or None without tracked blocks or
    when a block has no single type (a whole layer)."""
    from ..kernels.block_types import block_type_sharpness

    labels = list(_field(history, "block_labels", []) or [])
    if not labels:
        return None
    try:
        t = block_type_sharpness(as_array(_field(history, "block_lambda_max"), 2, "block_lambda_max"), labels)
    except ValueError:
        return None
    order = sorted(range(len(t.types)), key=lambda k: TYPE_ORDER.index(t.types[k]))
    return [t.types[k] for k in order], t.values.numpy()[:, order]


def spectrum_charts(
    history=None,
    *,
    norms: Mapping | Any | None = None,
    selected: Sequence[str] | None = None,
    log: bool = True,
    picked_step: int | None = None,
) -> list[LineChart | MatrixChart]:
    """Every chart of the view, in order: line charts per panel, the density nearest to the picked step, the
    block-norm map, the block × step map, the sharpness by block type over the steps (tracked blocks of one
    parameter group each: :func:`type_history`).

    Args:
        history: A history as plain arrays (see :func:`series_charts`; also ``density_steps [D]``,
            ``density_grid [D, P]``, ``density [D, P]``, ``block_lambda_max [T, G]``, ``block_labels``), or None.
        norms: Block norms: mapping or object with ``labels``, ``frobenius [G, G]`` and ``exact``, or None.
        selected: Series keys (default: the view's default selection).
        log: Logarithmic y axes and colour scales.
        picked_step: The picked step (marker; which density is shown).
    """
    charts: list[LineChart | MatrixChart] = []
    steps = None if history is None else as_array(_field(history, "steps")).reshape(-1)
    if steps is not None and steps.size:
        charts += series_charts(history, selected, log=log, picked_step=picked_step)
        ds = _field(history, "density_steps")
        index = None if ds is None else density_index(ds, picked_step)
        if index is not None:
            grid = as_array(_field(history, "density_grid"), 2, "density_grid")[index]
            charts.append(density_chart(grid, as_array(_field(history, "density"))[index], int(np.asarray(ds)[index]),
                                        log=log))
    if norms is not None:
        charts.append(block_norm_chart(_field(norms, "labels"), _field(norms, "frobenius"),
                                       exact=bool(_field(norms, "exact", False)), log=log))
    block_labels = [] if history is None else list(_field(history, "block_labels", []) or [])
    if steps is not None and steps.size and block_labels:
        charts.append(block_steps_chart(block_labels, steps, _field(history, "block_lambda_max"), log=log))
        typed = type_history(history)
        if typed is not None:
            charts.append(type_steps_chart(steps, typed[0], typed[1], log=log))
    return charts


def eigen_table_html(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A small HTML table of block eigenvalues ``{label: {step, status, eigenvalues, residuals, message}}``."""
    esc = html.escape
    rows = []
    for label, r in results.items():
        values = r.get("eigenvalues")
        text = (
            ", ".join(f"{format_value(v)} (res {format_value(e)})" for v, e in zip(values, r["residuals"], strict=True))
            if values is not None
            else esc(r.get("message", ""))
        )
        rows.append(
            f"<tr><td>{esc(label)}</td><td>{esc(str(r.get('step')))}</td><td>{esc(r['status'])}</td>"
            f"<td>{esc(text)}</td></tr>"
        )
    return (
        '<table class="tscope-static-eigen" '
        'style="font-size:11px;border-collapse:separate;border-spacing:10px 1px;margin-left:-10px">'
        "<tr><th>block</th><th>weights of step</th><th>status</th><th>top eigenvalues of H_aa (residual)</th></tr>"
        + "".join(rows)
        + "</table>"
    )
