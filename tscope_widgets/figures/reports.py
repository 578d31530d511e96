r"""The report views of ``tscope run`` (``report.html``): curvature and landscape, from plain arrays.

Each view is a list of chart descriptions (:mod:`.charts`) rendered by :mod:`.bokeh`, so the report follows
the same colour, range and contour rules as the widgets' pictures. The curvature view adds the Lanczos
eigenvalues as triangles on the density (hover: value and residual), which only the report shows.

Arrays are numpy or torch, any float dtype; nothing here reads a results folder or a config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .charts import LineChart, Series, as_array, line_chart, resolve_log, series_color
from .landscape import landscape_chart
from .spectrum import DENSITY_LOG_RANGE, block_norm_chart, floored_density  # noqa: F401  (DENSITY_LOG_RANGE: used by cli.reports)

REPORT_WIDTH = 760
MARKER_COLOR = series_color(2)  # Tableau 10 red, the live view's λ_max


def density_chart(grid, density, sigma: float, matrix_name: str) -> LineChart:
    r"""The SLQ density :math:`\phi(\lambda)` ``[G]`` on ``grid [G]``, log axis floored at
    :data:`DENSITY_LOG_RANGE` times its peak (a Gaussian-smoothed density underflows to 1e-300 far from the
    nodes, which would stretch a log axis over hundreds of decades)."""
    line = Series("density", "SLQ density", floored_density(density), series_color(0))
    title = f"Spectral density of the {matrix_name} (SLQ, σ = {sigma:.3g}); ▲ Lanczos eigenvalues"
    return line_chart(grid, [line], title, "eigenvalue λ", "density φ(λ)", log=True)


def eigenvalue_chart(eigenvalues, matrix_name: str) -> LineChart:
    """The Lanczos eigenvalues ``[m]`` against their index (ascending), when there is no density."""
    values = as_array(eigenvalues).reshape(-1)
    line = Series("eigenvalues", "Lanczos eigenvalues", values, series_color(0))
    title = f"Extreme eigenvalues of the {matrix_name} (Lanczos)"
    return line_chart(np.arange(values.size), [line], title, "index (ascending)", "eigenvalue λ")


def curvature_figures(
    matrix_name: str,
    eigenvalues,
    residuals,
    *,
    density: tuple[np.ndarray, np.ndarray, float] | None = None,
    blocks: tuple[Sequence[str], np.ndarray, bool, int] | None = None,
    log: bool = False,
) -> list:
    """Bokeh figures of a curvature run: the density (or the eigenvalues) with the Lanczos eigenvalues
    marked, and the block-norm map.

    Args:
        matrix_name: ``"Hessian"``, ``"Gauss–Newton part"``, ...
        eigenvalues: ``[m]`` Ritz values.
        residuals: ``[m]`` their residual norms.
        density: ``(grid [G], density [G], sigma)`` of an SLQ run, or None.
        blocks: ``(labels [K], frobenius [K, K], exact, probes per group)``, or None.
        log: Log colours for the block-norm map (True, False or ``"auto"``).
    """
    from bokeh.models import ColumnDataSource, HoverTool, Span

    from .bokeh import line_chart_figure, matrix_chart_figure

    lam, res = as_array(eigenvalues).reshape(-1), as_array(residuals).reshape(-1)
    if density is not None:
        grid, values, sigma = density
        chart = density_chart(grid, values, sigma, matrix_name)
        xs, ys = lam, np.interp(lam, chart.x, chart.series[0].y)
    else:
        chart = eigenvalue_chart(lam, matrix_name)
        xs, ys = np.arange(lam.size), lam
    fig = line_chart_figure(chart, width=REPORT_WIDTH, height=320)
    for x in lam if density is not None else ():
        fig.add_layout(Span(location=float(x), dimension="height", line_color=MARKER_COLOR, line_dash="dotted"))
    source = ColumnDataSource({"x": xs, "y": ys, "lam": lam, "residual": res})
    marks = fig.scatter("x", "y", source=source, marker="triangle", size=9, color=MARKER_COLOR)
    fig.add_tools(HoverTool(renderers=[marks], tooltips=[("λ", "@lam{%.6g}"), ("residual", "@residual{%.2e}")],
                            formatters={"@lam": "printf", "@residual": "printf"}))
    figures = [fig]
    if blocks is not None:
        labels, frobenius, exact, probes = blocks
        norms = block_norm_chart(labels, frobenius, exact=exact, log=log)
        norms = replace(norms, title=f"Block norms ‖H_ab‖_F of the {matrix_name}"
                        + ("" if exact else f" ({probes} probes per group)"))
        figures.append(matrix_chart_figure(norms, width=max(460, 24 * len(norms.row_labels) + 200)))
    return figures


def landscape_figures(
    alphas,
    betas,
    loss,
    accuracy,
    *,
    direction_names: tuple[str, str],
    origin_loss: float,
    eigenvalues: Sequence[float] | None = None,
    log: bool | str = False,
) -> list:
    r"""Bokeh figures of a landscape run: the loss with contour lines, the accuracy, and the cuts through the
    origin (with the quadratic model :math:`L_0 + \tfrac12 \lambda \alpha^2` along eigenvectors).

    Args:
        alphas: ``[A]`` grid coordinates along the first direction.
        betas: ``[B]`` grid coordinates along the second direction.
        loss: ``[A, B]`` loss at each grid point.
        accuracy: ``[A, B]`` accuracy at each grid point.
        direction_names: How the two directions are called on the axes.
        origin_loss: The loss at the model itself.
        eigenvalues: The directions' Hessian eigenvalues (eigen directions), or None.
        log: Log colours (and contours in log values) for the loss: True, False or ``"auto"`` (where the
            losses span decades).
    """
    from .bokeh import landscape_chart_figure, line_chart_figure

    a, b = as_array(alphas).reshape(-1), as_array(betas).reshape(-1)
    loss, accuracy = as_array(loss), as_array(accuracy)
    log = resolve_log(log, loss)
    x_label, y_label = f"α · {direction_names[0]}", f"β · {direction_names[1]}"
    loss_chart = landscape_chart(a, b, loss, title="Loss L(θ + α d1 + β d2)" + (" (log colours)" if log else ""),
                                 value_title="loss", log=log, x_label=x_label, y_label=y_label)
    accuracy_chart = landscape_chart(a, b, accuracy, title="Token accuracy", value_title="accuracy",
                                     contours=False, x_label=x_label, y_label=y_label)
    figures = [landscape_chart_figure(loss_chart), landscape_chart_figure(accuracy_chart)]
    ia, ib = np.flatnonzero(a == 0), np.flatnonzero(b == 0)
    if ia.size and ib.size:  # the grid goes through the origin: cuts along each direction
        lines = [Series("cut1", f"along {direction_names[0]} (β = 0)", loss[:, ib[0]], series_color(0)),
                 Series("cut2", f"along {direction_names[1]} (α = 0)", loss[ia[0], :], series_color(1))]
        for k, lam in enumerate(eigenvalues or ()):
            lines.append(Series(f"quadratic{k + 1}", f"L0 + ½λ α² (v{k + 1}, λ = {lam:.4g})",
                                origin_loss + 0.5 * lam * a**2, series_color(2 + k)))
        title = "Cuts through θ" + (" and the quadratic model of each eigenvalue" if eigenvalues else "")
        cuts = line_chart(a, lines, title, "step along the direction", "loss", marker_x=0.0)
        figures.append(line_chart_figure(cuts, width=REPORT_WIDTH, height=300))
    return figures

