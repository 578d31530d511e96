"""The attention views of a ``tscope run`` report: mean attention maps, the sensitivity map and head spectra.

Built from plain arrays (no results folder, no config) as chart descriptions (:mod:`.charts`), rendered by
:mod:`.bokeh`:

- one row per layer: the mean attention weights of each head ``[S, S]`` (query rows, key columns; colour
  range shared by the row: weights are in ``[0, 1]``), the rollout after the layer and, when computed, the
  mean sensitivity ``s_ij`` of the correlation samples;
- per circuit ``W_QK`` and ``W_OV``: the singular values of every head, one row per ``layer.head`` (log colours);
- the correlation table is text (report notes), made by :func:`correlation_lines`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .charts import MatrixChart, as_array, color_scale
from .sensitivity import sensitivity_chart

__all__ = ["attention_rows", "spectrum_chart", "correlation_lines", "attention_report_figures"]


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
