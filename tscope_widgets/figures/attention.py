"""The attention views of a ``tscope run`` report: mean attention maps, the sensitivity map and head spectra.

Built from plain arrays (no results folder, no config) as chart descriptions (:mod:`.charts`), rendered by
:mod:`.bokeh`:

- one row per layer: the mean attention weights of each head ``[S, S]`` (query rows, key columns; colour
  range shared by the row: weights are in ``[0, 1]``), the rollout after the layer and, when computed, the
  mean sensitivity ``s_ij`` of the correlation samples;
- per circuit ``W_QK`` and ``W_OV``: the singular values of every head, one row per ``layer.head`` (log colours);
- the correlation table is text (report notes), made by :func:`correlation_lines`.

The :class:`~tscope_widgets.widgets.AttentionExplorer` shows (and pictures) the same views, one at a time:

- :func:`attention_pane_charts`: one layer's mean attention map (a head, the head mean or the rollout) beside
  the layer's mean sensitivity on the same cells, the Spearman ρ with its interval in the title;
- :func:`rank_grid_chart`: one effective rank (or condition number) of every head, layers × heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .charts import MatrixChart, as_array, color_scale
from .sensitivity import sensitivity_chart

__all__ = [
    "attention_rows",
    "spectrum_chart",
    "correlation_lines",
    "attention_report_figures",
    "attention_pane_charts",
    "rank_grid_chart",
    "map_title",
    "MEASURE_TITLES",
]

MEASURE_TITLES = {
    "participation_ratio": "participation ratio (Σσ)²/Σσ²",
    "entropy_rank": "entropy rank exp H(σ/Σσ)",
    "stable_rank": "stable rank ‖W‖²_F/‖W‖²_2",
    "condition_number": "condition number σ_max/σ_min",
}


def attention_rows(
    weights: Mapping[int, object],
    rollout: Mapping[int, object],
    sensitivity: Mapping[int, object] | None = None,
    token_labels: Sequence[str] | None = None,
    log: bool | str = "auto",
) -> list[list[MatrixChart]]:
    """Per layer: each head's mean attention ``[S, S]`` (one shared ``[0, max]`` scale), the rollout and the
    mean sensitivity (own scale, ``log`` as given).

    Args:
        weights: ``{layer: [n_heads, S, S]}`` mean attention weights (NaN where no sample counts a cell).
        rollout: ``{layer: [S, S]}`` mean rollout after the layer.
        sensitivity: ``{layer: [S', S']}`` mean ``s_ij`` or None (drawn at its own size ``S'``).
        token_labels: ``S`` position labels, or None.
        log: Colour scale of the sensitivity maps: True, False or ``"auto"``.
    """
    rows = []
    for layer, w in weights.items():
        arr = as_array(w)
        finite = arr[np.isfinite(arr)]
        hi = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        row = [
            sensitivity_chart(arr[h], title=f"layer {layer} · head {h} · mean attention", token_labels=token_labels,
                              log=False, value_title="attention weight", value_name="mean A_ij", vmin=0.0, vmax=hi)
            for h in range(arr.shape[0])
        ]
        row.append(sensitivity_chart(rollout[layer], title=f"layer {layer} · attention rollout",
                                     token_labels=token_labels, log=False, value_title="rollout",
                                     value_name="mean R_ij", vmin=0.0))
        if sensitivity is not None and layer in sensitivity:
            s = as_array(sensitivity[layer])
            labels = list(token_labels)[: s.shape[0]] if token_labels is not None else None
            row.append(sensitivity_chart(s, title=f"layer {layer} · mean sensitivity ‖∂h_i/∂e_j‖²_F", log=log,
                                         token_labels=labels, value_title="s_ij", value_name="mean s_ij"))
        rows.append(row)
    return rows


def spectrum_chart(singular_values, layers: Sequence[int], kind: str) -> MatrixChart:
    """Singular values ``[L, n, r]`` of one kind (``"qk"``, ``"ov"``, ...) as rows ``layer.head``, log colours."""
    sv = as_array(singular_values)
    L, n, r = sv.shape
    values = sv.reshape(L * n, r)
    rows = tuple(f"L{layer}.h{h}" for layer in layers for h in range(n))
    positive = values[values > 0]
    log = bool(positive.size)
    return MatrixChart(
        values=np.where(values > 0, values, np.nan) if log else values,
        row_labels=rows,
        col_labels=tuple(f"σ{i + 1}" for i in range(r)),
        title=f"Singular values of W_{kind.upper()} per head",
        x_label="singular value (descending)",
        y_label="layer.head",
        value_title=f"σ(W_{kind.upper()})",
        value_name="σ",
        scale=color_scale(values[values > 0] if log else values, log),
        row_name="head",
        col_name="index",
        square=False,
        nan_note="grey: zero",
    )


def correlation_lines(rows: Mapping[int, Sequence[Mapping]], confidence: float, samples: int) -> list[str]:
    """One sentence per layer and map: Spearman rho with its interval and the most discordant cells.

    Args:
        rows: ``{layer: AttentionSensitivityCorrelation.rows()}``.
        confidence: Interval coverage.
        samples: Samples the correlation used.
    """
    lines = [
        f"Spearman correlation of mean attention with mean sensitivity over the off-diagonal token cells of "
        f"{samples} sequences; {100 * confidence:g}% percentile bootstrap intervals over sequences."
    ]
    for layer, table in rows.items():
        for row in table:
            att = ", ".join(f"({i},{j})" for i, j in row["attention_high"][:3])
            sens = ", ".join(f"({i},{j})" for i, j in row["sensitivity_high"][:3])
            lines.append(
                f"layer {layer} · {row['map']}: ρ = {row['rho']:.3f} [{row['low']:.3f}, {row['high']:.3f}] over "
                f"{row['cells']} cells; attention high, sensitivity low at {att}; the reverse at {sens}."
            )
    return lines


def attention_report_figures(
    weights: Mapping[int, object],
    rollout: Mapping[int, object],
    singular_values: Mapping[str, object],
    layers: Sequence[int],
    sensitivity: Mapping[int, object] | None = None,
    token_labels: Sequence[str] | None = None,
    log: bool | str = "auto",
) -> list:
    """Bokeh figures of an attention run: the map grid of :func:`attention_rows` and the ``W_QK``, ``W_OV``
    spectra of :func:`spectrum_chart`."""
    from bokeh.layouts import row as bokeh_row

    from .bokeh import matrix_chart_figure

    figures = []
    for row in attention_rows(weights, rollout, sensitivity, token_labels, log):
        figures.append(bokeh_row([matrix_chart_figure(c, width=320) for c in row]))
    for kind in ("qk", "ov"):
        chart = spectrum_chart(singular_values[kind], layers, kind)
        figures.append(matrix_chart_figure(chart, width=460))
    return figures


def map_title(label: str) -> str:
    """How an attention map of the explorer is named: ``"head2"`` -> ``"head 2"``; ``"head mean"``, ``"rollout"``."""
    return f"head {label[4:]}" if label.startswith("head") and label[4:].isdigit() else label


def attention_pane_charts(
    mean_attention,
    mean_sensitivity,
    *,
    layer: int,
    label: str,
    rho: float,
    low: float,
    high: float,
    samples: int,
    token_labels: Sequence[str] | None = None,
    log: bool | str = "auto",
) -> list[MatrixChart]:
    """One layer's mean attention map ``[S, S]`` (linear, from 0) beside its mean sensitivity ``[S, S]`` (``log``).

    Args:
        mean_attention: ``[S, S]`` mean attention (or rollout) over the samples, NaN where no token pair.
        mean_sensitivity: ``[S, S]`` mean ``s_ij`` of the same samples.
        layer: Block index (titles).
        label: The map (``"head0"``, ``"head mean"``, ``"rollout"``).
        rho: Spearman ρ of the two maps (the attention chart's title).
        low: Lower end of its interval.
        high: Upper end of its interval.
        samples: Samples the maps average.
        token_labels: ``S`` position labels, or None.
        log: Colour scale of the sensitivity map.
    """
    what = "rollout" if label == "rollout" else "mean attention"
    att = sensitivity_chart(
        mean_attention,
        title=f"layer {layer} · {map_title(label)} · {what} ({samples} samples) · "
        f"ρ = {rho:.2f} [{low:.2f}, {high:.2f}]",
        token_labels=token_labels,
        log=False,
        value_title="rollout" if label == "rollout" else "attention weight",
        value_name="mean R_ij" if label == "rollout" else "mean A_ij",
        vmin=0.0,
    )
    sens = sensitivity_chart(
        mean_sensitivity,
        title=f"layer {layer} · mean sensitivity ‖∂h_i/∂e_j‖²_F",
        token_labels=token_labels,
        log=log,
        value_title="s_ij",
        value_name="mean s_ij",
    )
    return [att, sens]


def rank_grid_chart(values, layers: Sequence[int], measure: str, kind: str, step: int | None = None) -> MatrixChart:
    """One effective rank of every head as a ``[L, n]`` heatmap: rows layers, columns heads (linear colours;
    log for the condition number).

    Args:
        values: ``[L, n]`` values of ``measure`` for the matrices ``kind`` (``q k v o qk ov``).
        layers: The ``L`` block indices.
        measure: A key of :data:`MEASURE_TITLES`.
        kind: Which matrix.
        step: Training step of the record shown, or None (the model as it is).
    """
    arr = as_array(values)
    L, n = arr.shape
    log = measure == "condition_number" and bool(np.any(arr[np.isfinite(arr)] > 0))
    title = f"{MEASURE_TITLES.get(measure, measure)} of W_{kind.upper()} per head"
    if step is not None:
        title += f" · step {step}"
    return MatrixChart(
        values=arr,
        row_labels=tuple(f"layer {lay}" for lay in layers),
        col_labels=tuple(f"h{h}" for h in range(n)),
        title=title,
        x_label="head",
        y_label="layer",
        value_title=measure.replace("_", " "),
        value_name=measure.replace("_", " "),
        scale=color_scale(arr[np.isfinite(arr)], log),
        row_name="layer",
        col_name="head",
        square=False,
        nan_note="grey: zero matrix",
    )
