r"""What the block-spectra view shows: each diagonal Hessian block's density, one line per block, and the
matrix of Jensen–Shannon distances between them (Zhang et al., "Why Transformers Need Adam: A Hessian
Perspective", NeurIPS 2024, their Figure 3 and :math:`JS^0`), as chart descriptions.

The densities are drawn as the distances compare them (:mod:`tscope_widgets.kernels.heterogeneity`): each
block divided by its 10th-largest Ritz value in magnitude, on the signed log scale
:math:`u = \operatorname{sign}(x) \log_{10}(\max(|x|, f)/f)` with the floor ``f``, each a probability vector
on the common grid; the y axis is logarithmic, as in Zhang et al.'s plots. Series colours follow the block's
index (Tableau 10, :func:`~.charts.series_color`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .charts import LineChart, MatrixChart, Series, as_array, color_scale, format_value, line_chart, series_color

__all__ = ["block_density_chart", "heterogeneity_chart"]


def block_density_chart(labels: Sequence[str], grid, densities, *, floor: float = 1e-4, log: bool = True) -> LineChart:
    """One line per block: its normalised density ``densities [G, X]`` on the common grid ``grid [X]``.

    Args:
        labels: The ``G`` block labels (legend).
        grid: Signed log-magnitudes ``[X]`` (see the module docstring).
        densities: ``[G, X]`` probability vectors.
        floor: The floor of the log scale (for the axis title).
        log: Logarithmic y axis.
    """
    values = as_array(densities, 2, "densities")
    labels = [str(s) for s in labels]
    if values.shape[0] != len(labels):
        raise ValueError(f"{len(labels)} labels for {values.shape[0]} densities")
    lines = [Series(f"block:{g}", g, values[i], series_color(i)) for i, g in enumerate(labels)]
    x_label = f"sign(λ)·log10(max(|λ|/λ₁₀, {format_value(floor)}) / {format_value(floor)})"
    return line_chart(grid, lines, "block Hessian spectra, normalised by each block's 10th eigenvalue (SLQ)",
                      x_label, "density (per grid point)", log)


def heterogeneity_chart(labels: Sequence[str], distances, mean: float) -> MatrixChart:
    """The Jensen–Shannon distances ``[G, G]`` between block spectra; the title gives their mean :math:`JS^0`."""
    values = as_array(distances, 2, "distances")
    labels = tuple(str(s) for s in labels)
    if values.shape != (len(labels), len(labels)):
        raise ValueError(f"distances must be [{len(labels)}, {len(labels)}], got {values.shape}")
    return MatrixChart(
        values=np.ascontiguousarray(values),
        row_labels=labels,
        col_labels=labels,
        title=f"Jensen–Shannon distance between block spectra (mean JS⁰ = {format_value(mean)})",
        x_label="block b",
        y_label="block a",
        value_title="JS(a, b)",
        value_name="JS distance",
        scale=color_scale(values, False),
        row_name="block a",
        col_name="block b",
    )
