r"""Views of the Hessian's heterogeneity (Ormaniec, Dangel & Singh, ICLR 2025): the dense matrix by blocks and
the distributions of block entries.

:func:`hessian_heatmap_chart`: :math:`\log_{10}(|H_{ij}| + \varepsilon)` as a heatmap with a line before every
parameter group and the group's name on its first row and column. A matrix larger than ``max_cells`` per side
is shown pooled: each cell holds the *largest* value of the ``k × k`` entries it covers (``k = ceil(P /
max_cells)``), so no large entry disappears; a block boundary then falls on the cell that holds it.
:func:`entry_histogram_chart`: fractions of entries per bin of :math:`\log_{10} |H_{ij}|`, one line per block.
Built from plain arrays; :mod:`.svg` and :mod:`.bokeh` render the descriptions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .charts import LineChart, MatrixChart, Series, as_array, color_scale, line_chart, series_color

__all__ = ["entry_histogram_chart", "hessian_heatmap_chart", "pool_max"]


def pool_max(values: np.ndarray, k: int) -> np.ndarray:
    """``[P, Q] -> [ceil(P/k), ceil(Q/k)]``: the largest value of each ``k × k`` window (NaN ignored)."""
    P, Q = values.shape
    R, C = math.ceil(P / k), math.ceil(Q / k)
    padded = np.full((R * k, C * k), -np.inf)
    padded[:P, :Q] = np.where(np.isnan(values), -np.inf, values)
    out = padded.reshape(R, k, C, k).max(axis=(1, 3))
    return np.where(np.isneginf(out), np.nan, out)


def hessian_heatmap_chart(
    values,
    groups: Sequence[str],
    sizes: Sequence[int],
    *,
    title: str = "log10(|H| + 1e-6)",
    value_title: str = "log10(|H| + 1e-6)",
    max_cells: int = 400,
) -> MatrixChart:
    """The block heatmap of a dense curvature matrix (see the module docstring).

    Args:
        values: ``[P, P]`` values to colour, e.g. :math:`\\log_{10}(|H| + 10^{-6})`.
        groups: Group names in order.
        sizes: Parameters per group (``sum = P``).
        title: Chart title.
        value_title: Colour-bar title.
        max_cells: Largest side shown before pooling by the maximum.

    Returns:
        A :class:`~.charts.MatrixChart` with ``separators`` at the group boundaries (linear colours of the
        given values: they are logarithms already).
    """
    arr = as_array(values, 2)
    P = arr.shape[0]
    if arr.shape != (P, P) or sum(sizes) != P or len(groups) != len(sizes):
        raise ValueError(f"hessian_heatmap_chart: a square [P, P] matrix and group sizes summing to P are needed, "
                         f"got {arr.shape} and sizes {list(sizes)} for {len(groups)} groups")
    k = max(1, math.ceil(P / max_cells))
    shown = pool_max(arr, k) if k > 1 else arr
    R = shown.shape[0]
    starts = np.cumsum([0, *sizes[:-1]])
    labels = [""] * R
    hover = [""] * R
    for name, start, n in zip(groups, starts, sizes, strict=True):
        first, last = int(start) // k, (int(start) + n - 1) // k
        if not labels[first]:
            labels[first] = name
        for i in range(first, last + 1):
            hover[i] = name if not hover[i] else f"{hover[i]} / {name}"
    separators = tuple(sorted({int(s) // k for s in starts[1:] if 0 < int(s) // k < R}))
    pooled = f" (max over {k}×{k} entries per cell)" if k > 1 else ""
    return MatrixChart(
        values=shown, row_labels=tuple(labels), col_labels=tuple(labels), title=title + pooled,
        x_label="parameter (by group)", y_label="parameter (by group)", value_title=value_title,
        value_name="value", scale=color_scale(shown, log=False), row_hover=tuple(hover), col_hover=tuple(hover),
        row_name="rows of", col_name="columns of", separators=separators,
    )


def entry_histogram_chart(edges, counts: Mapping[str, np.ndarray], *, title: str | None = None) -> LineChart:
    """Fractions of block entries per bin of :math:`\\log_{10} |H_{ij}|`, one line per block.

    Args:
        edges: ``[bins + 1]`` bin edges in :math:`\\log_{10}` units.
        counts: ``{block name: fractions [bins]}``.
        title: Chart title (default names the blocks).
    """
    e = as_array(edges, 1)
    centers = (e[:-1] + e[1:]) / 2
    lines = [Series(f"block:{name}", name, as_array(c, 1), series_color(i))
             for i, (name, c) in enumerate(counts.items())]
    return line_chart(centers, lines, title or "Entries |H_ij| of " + ", ".join(counts), "log10 |H_ij|",
                      "fraction of entries")
