r"""What the block-spectra view shows: each diagonal Hessian block's density, one line per block, and the
matrix of Jensen–Shannon distances between them (Zhang et al., "Why Transformers Need Adam: A Hessian
Perspective", NeurIPS 2024, their Figure 3 and :math:`JS^0`), as chart descriptions.

The densities are drawn as the distances compare them (:mod:`tscope_widgets.kernels.heterogeneity`): each
block divided by its 10th-largest Ritz value in magnitude, on the signed log scale
:math:`u = \operatorname{sign}(x) \log_{10}(\max(|x|, f)/f)` with the floor ``f``, each a probability vector
on the common grid; the y axis is logarithmic, as in Zhang et al.'s plots, each density floored at
:data:`~.spectrum.DENSITY_LOG_RANGE` times its peak there (:func:`~.spectrum.floored_density`: the Gaussian tails
underflow far below anything visible). Series colours follow the block's index among all blocks (Tableau 10,
:func:`~.charts.series_color`), so a block keeps its colour whichever blocks are picked.

:func:`block_spectra_charts` is the whole view of :class:`~tscope_widgets.widgets.BlockSpectraWidget` (and of
its picture): the picked blocks' densities overlaid in one chart or side by side (one chart each, on a shared y
range), the distance matrix of all blocks done, and the sharpness by block type
(:func:`~.block_types.type_points_chart`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .block_types import type_points_chart
from .charts import (
    Chart,
    LineChart,
    MatrixChart,
    Series,
    as_array,
    color_scale,
    format_value,
    joint_range,
    line_chart,
    series_color,
)
from .spectrum import floored_density

__all__ = ["block_density_chart", "block_spectra_charts", "density_x_label", "heterogeneity_chart"]

DENSITY_TITLE = "block Hessian spectra, normalised by each block's 10th eigenvalue (SLQ)"


def density_x_label(floor: float) -> str:
    """The x axis title of the normalised block densities (the signed log scale with its floor)."""
    return f"sign(λ)·log10(max(|λ|/λ₁₀, {format_value(floor)}) / {format_value(floor)})"


def block_density_chart(labels: Sequence[str], grid, densities, *, floor: float = 1e-4, log: bool = True,
                        colors: Sequence[int] | None = None, title: str = DENSITY_TITLE) -> LineChart:
    """One line per block: its normalised density ``densities [G, X]`` on the common grid ``grid [X]``.

    Args:
        labels: The ``G`` block labels (legend).
        grid: Signed log-magnitudes ``[X]`` (see the module docstring).
        densities: ``[G, X]`` probability vectors.
        floor: The floor of the log scale (for the axis title).
        log: Logarithmic y axis (each density floored at ``DENSITY_LOG_RANGE`` times its peak).
        colors: Colour index of each line (its block's index among all blocks); default ``0 .. G-1``.
        title: Chart title.
    """
    values = as_array(densities, 2, "densities")
    labels = [str(s) for s in labels]
    if values.shape[0] != len(labels):
        raise ValueError(f"{len(labels)} labels for {values.shape[0]} densities")
    colors = list(range(len(labels))) if colors is None else [int(c) for c in colors]
    if len(colors) != len(labels):
        raise ValueError(f"{len(colors)} colour indices for {len(labels)} blocks")
    lines = [Series(f"block:{g}", g, floored_density(values[i]) if log else values[i], series_color(colors[i]))
             for i, g in enumerate(labels)]
    return line_chart(grid, lines, title, density_x_label(floor), "density (per grid point)", log)


def block_spectra_charts(view: Mapping[str, Any] | None, selected: Sequence[str] | None = None, *,
                         overlay: bool = True, log: bool = True) -> list[Chart]:
    """The block-spectra view: densities of the ``selected`` blocks, the JS distance matrix, the type chart.

    Args:
        view: What ``widgets._block_spectra_state.blocks_view`` returns (``labels``, ``grid [X]``,
            ``densities [G, X]``, ``distances [G, G]``, ``js_mean``, ``floor``, ``types``), or None.
        selected: Blocks whose densities are drawn (None: all), in block order.
        overlay: One chart with every selected density; else one chart per block, all on one y range.
        log: Logarithmic y axes (densities and sharpness).

    Returns:
        The charts (empty for no view).
    """
    if view is None:
        return []
    labels = list(view["labels"])
    chosen = set(labels if selected is None else selected)
    rows = [i for i, g in enumerate(labels) if g in chosen]
    dens = as_array(view["densities"], 2, "densities")
    charts: list[Chart] = []
    if rows and overlay:
        charts.append(block_density_chart([labels[i] for i in rows], view["grid"], dens[rows], floor=view["floor"],
                                          log=log, colors=rows))
    elif rows:
        parts = [block_density_chart([labels[i]], view["grid"], dens[[i]], floor=view["floor"], log=log,
                                     colors=[i], title=f"{labels[i]}: normalised spectrum") for i in rows]
        shared = joint_range([s.y for c in parts for s in c.series], log)
        charts += [replace(c, y_range=shared) for c in parts]
    mean = view["js_mean"]
    charts.append(heterogeneity_chart(labels, view["distances"], math.nan if mean is None else mean))
    types = view.get("types")
    if types is not None:
        charts.append(type_points_chart(types["types"], types["values"], log=log))
    return charts


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
