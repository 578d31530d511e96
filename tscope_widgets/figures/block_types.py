r"""What the block-type sharpness view shows: :math:`S(t)`, each block type's mean :math:`\lambda_{\max}(H_{aa})`
(Wang et al., "The Sharpness Disparity Principle in Transformers", ICML 2025, arXiv 2502.19002), as a table
with the ratios of neighbours in the principle's order :math:`S(\mathrm{Emb}) \ll S(\mathrm{QK}) <
S(\mathrm{FFN}) < S(\mathrm{VO}) \ll S(\mathrm{Norm})`, as a strip of the types (one snapshot), as a point
chart of the types (one snapshot: the type's position in the order across, :math:`S(t)` upwards, one point per
type), as lines over training steps (one per type), and each block's :math:`\lambda_{\max}` as a map of kind × layer.

Types are shown in the principle's order (the output head last), each with a fixed colour: its index in that
order (Tableau 10, :func:`~.charts.series_color`). The builders take plain arrays and labels.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

import numpy as np

from .charts import LineChart, MatrixChart, Series, as_array, color_scale, format_value, line_chart, series_color

__all__ = [
    "TYPE_ORDER",
    "block_kind_chart",
    "type_points_chart",
    "type_sharpness_chart",
    "type_steps_chart",
    "type_table_html",
]

# The Sharpness Disparity order, then the output head (not part of the principle).
TYPE_ORDER = ("embed", "qk", "mlp", "vo", "norm", "head")
TYPE_NAMES = {"embed": "Emb", "qk": "QK", "mlp": "FFN", "vo": "VO", "norm": "Norm", "head": "head"}
_BLOCK = re.compile(r"^block(\d+)\.(.+)$")


def _ordered(types: Sequence[str], values) -> tuple[list[str], np.ndarray]:
    """Types in :data:`TYPE_ORDER` and ``values [..., Ty]`` reordered alike."""
    types = [str(t) for t in types]
    unknown = [t for t in types if t not in TYPE_ORDER]
    if unknown:
        raise ValueError(f"unknown block types {unknown}; expected some of {', '.join(TYPE_ORDER)}")
    values = np.asarray(values, dtype=np.float64)
    if values.shape[-1:] != (len(types),):
        raise ValueError(f"values must be [..., {len(types)}] (one per type), got {values.shape}")
    order = sorted(range(len(types)), key=lambda k: TYPE_ORDER.index(types[k]))
    return [types[k] for k in order], values[..., order]


def type_sharpness_chart(types: Sequence[str], values, *, log: bool = True) -> MatrixChart:
    """One snapshot: :math:`S(t)` of each type ``values [Ty]`` as a strip of cells, in the principle's order."""
    types, v = _ordered(types, as_array(values, 1, "values"))
    row = np.ascontiguousarray(v[None, :])
    return MatrixChart(
        values=row,
        row_labels=("S(t)",),
        col_labels=tuple(TYPE_NAMES[t] for t in types),
        title="sharpness by block type: mean λ_max(H_aa) over the blocks of a type",
        x_label="block type (Sharpness Disparity order)",
        y_label="",
        value_title="S(t)",
        value_name="mean λ_max(H_aa)",
        scale=color_scale(row, log),
        row_name="",
        col_name="type",
        square=False,
    )


def type_points_chart(types: Sequence[str], values, *, log: bool = True) -> LineChart:
    """One snapshot as points: the types present in the principle's order at ``x = 0, 1, ...`` (the legend
    names them, ``S(Emb)``, ``S(QK)``, ...), :math:`S(t)` ``values [Ty]`` upwards, each type a series of one
    point in its fixed colour (NaN at the other positions). Rising points left to right: the order holds."""
    types, v = _ordered(types, as_array(values, 1, "values"))
    x = np.arange(len(types), dtype=np.float64)
    lines = []
    for k, t in enumerate(types):
        y = np.full(len(types), np.nan)
        y[k] = v[k]
        lines.append(Series(f"type:{t}", f"S({TYPE_NAMES[t]})", y, series_color(TYPE_ORDER.index(t))))
    order = " < ".join(TYPE_NAMES[t] for t in types)
    return line_chart(x, lines, "sharpness by block type: mean λ_max(H_aa) of its blocks",
                      f"block type, Sharpness Disparity order ({order})", "mean λ_max(H_aa)", log)


def type_steps_chart(steps, types: Sequence[str], values, *, log: bool = True) -> LineChart:
    """During training: :math:`S(t)` over the recorded ``steps [T]``, ``values [T, Ty]``, one line per type."""
    types, v = _ordered(types, as_array(values, 2, "values"))
    lines = [Series(f"type:{t}", f"S({TYPE_NAMES[t]})", v[:, k], series_color(TYPE_ORDER.index(t)))
             for k, t in enumerate(types)]
    return line_chart(steps, lines, "sharpness by block type (mean λ_max of its blocks)", "training step",
                      "mean λ_max(H_aa)", log)


def block_kind_chart(labels: Sequence[str], values, *, log: bool = True) -> MatrixChart:
    """Each block's :math:`\\lambda_{\\max}(H_{aa})` ``values [G]`` as a map of kind (``attn.q``, ``mlp.in``, ...;
    rows) × layer (columns); blocks outside the layers (``embed``, ``ln_f``, ``head``) form their own rows in
    the column ``"—"``. Cells without a block are NaN."""
    v = as_array(values, 1, "values")
    labels = [str(s) for s in labels]
    if v.size != len(labels):
        raise ValueError(f"{len(labels)} labels for {v.size} values")
    cells: dict[tuple[str, str], float] = {}
    rows: list[str] = []
    cols: list[str] = []
    for label, value in zip(labels, v, strict=True):
        m = _BLOCK.match(label)
        kind, col = (m[2], m[1]) if m else (label, "—")
        rows += [] if kind in rows else [kind]
        cols += [] if col in cols else [col]
        cells[kind, col] = float(value)
    cols.sort(key=lambda c: (c == "—", int(c) if c.isdigit() else 0))
    grid = np.array([[cells.get((r, c), np.nan) for c in cols] for r in rows], dtype=np.float64)
    return MatrixChart(
        values=grid,
        row_labels=tuple(rows),
        col_labels=tuple(cols),
        title="λ_max of each Hessian block H_aa (kind × layer)",
        x_label="layer",
        y_label="block kind",
        value_title="λ_max(H_aa)",
        value_name="λ_max(H_aa)",
        scale=color_scale(grid, log),
        row_name="kind",
        col_name="layer",
        square=False,
    )


def type_table_html(types: Sequence[str], values, counts: Sequence[int], ratios: Mapping[str, float],
                    follows: bool) -> str:
    """An HTML table of one snapshot: type, blocks, :math:`S(t)` and the ratio to the previous type present in
    the principle's order; its caption says whether the order holds."""
    esc = html.escape
    order = {t: k for k, t in enumerate(types)}
    types_sorted, v = _ordered(types, as_array(values, 1, "values"))
    rows = []
    for t, value in zip(types_sorted, v, strict=True):
        ratio = next((r for key, r in ratios.items() if key.split("/")[0] == t), None)
        rows.append(
            f"<tr><td>{esc(TYPE_NAMES[t])}</td><td>{int(counts[order[t]])}</td><td>{esc(format_value(value))}</td>"
            f"<td>{esc('' if ratio is None else '×' + format_value(float(ratio)))}</td></tr>"
        )
    verdict = "holds" if follows else "does not hold"
    return (
        '<table class="tscope-types" style="font-size:12px;border-collapse:separate;border-spacing:10px 1px">'
        f"<caption>Sharpness Disparity order S(Emb) &lt; S(QK) &lt; S(FFN) &lt; S(VO) &lt; S(Norm): {verdict}"
        "</caption><tr><th>type</th><th>blocks</th><th>S(t) = mean λ_max(H_aa)</th>"
        "<th>ratio to the previous type</th></tr>" + "".join(rows) + "</table>"
    )
