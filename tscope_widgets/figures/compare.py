r"""What a comparison of two runs shows: per layer, the difference of the mean maps beside both mean maps.

- **Difference** :math:`\bar s_a - \bar s_b` in the diverging colour map ``"rdbu"`` (:data:`~.charts.COLORMAPS`:
  blue below zero, white at zero, red above) on a domain symmetric about zero, :math:`[-M, M]` with :math:`M`
  the largest :math:`|\bar s_a - \bar s_b|` of the layer; cells that are not significant (``q >= alpha``) are faded
  (:attr:`~.charts.MatrixChart.faded`), untested cells (fewer than 2 values on a side) grey.
- **Mean of a** and **mean of b** on one shared colour scale (the same limits, so equal colours mean equal
  values), logarithmic by default: sensitivities span orders of magnitude.

The builders take plain arrays or tensors (a comparison's fields, read from a file or just computed);
:func:`comparison_figures` renders them with :mod:`.bokeh` for ``tscope compare``'s report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from .charts import MatrixChart, as_array, color_domain, joint_range
from .sensitivity import QUANTITY, layer_title, sensitivity_chart

__all__ = ["comparison_figures", "comparison_rows", "difference_chart", "mean_charts"]


def difference_chart(
    difference,
    significant,
    *,
    title: str,
    token_labels: Sequence[str] | None = None,
    names: tuple[str, str] = ("a", "b"),
    value_title: str | None = None,
) -> MatrixChart:
    """The ``[S, S]`` difference map: diverging colours symmetric about 0, non-significant cells faded.

    Args:
        difference: ``[S, S]`` mean of ``a`` minus mean of ``b`` (NaN = not tested).
        significant: bool ``[S, S]``, cells where ``q < alpha``.
        title: Chart title.
        token_labels: ``S`` strings naming the positions, or None.
        names: How runs ``a`` and ``b`` are called (colour-bar title).
        value_title: Colour-bar title instead of ``"a − b"`` (e.g. for a log ratio or an effect size drawn
            the same way).

    Raises:
        ValueError: For a non-square map or a mask of another shape.
    """
    diff = as_array(difference, 2, "difference")
    sig = np.asarray(as_array(significant, 2, "significant") > 0)
    if sig.shape != diff.shape:
        raise ValueError(f"significant has shape {sig.shape}, the difference {diff.shape}")
    finite = np.abs(diff[np.isfinite(diff)])
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    shown = value_title or f"{names[0]} − {names[1]}"
    chart = sensitivity_chart(diff, title=title, token_labels=token_labels, value_title=shown,
                              value_name=value_title or "difference", vmin=-top, vmax=top, colormap="rdbu")
    faded = ~sig & np.isfinite(diff)
    return replace(chart, faded=faded, nan_note="grey: not tested; faded: q ≥ alpha")


def mean_charts(
    mean_a, mean_b, *, layer, token_labels: Sequence[str] | None = None, names: tuple[str, str] = ("a", "b"),
    log: bool = True,
) -> list[MatrixChart]:
    """Both mean maps ``[S, S]`` on one colour scale (the joint range; positive values only for ``log``)."""
    a, b = as_array(mean_a, 2, "mean_a"), as_array(mean_b, 2, "mean_b")
    usable = log and joint_range([a, b], log=True) is not None
    lo, hi = color_domain(np.concatenate([a.ravel(), b.ravel()]), usable)
    return [
        sensitivity_chart(m, title=f"{layer_title(layer)} · mean {QUANTITY} of {name}", token_labels=token_labels,
                          log=usable, value_title=f"mean {QUANTITY}", value_name=f"mean of {name}",
                          vmin=lo, vmax=hi)
        for m, name in ((a, names[0]), (b, names[1]))
    ]


def comparison_rows(
    fields: Mapping, layers: Sequence, *, token_labels: Sequence[str] | None = None,
    names: tuple[str, str] = ("a", "b"), log: bool = True,
) -> list[list[MatrixChart]]:
    """One row per layer: the difference chart, then the two mean charts.

    Args:
        fields: ``{"difference", "significant", "mean_a", "mean_b"}`` each ``[L, S, S]`` (one slice per layer).
        layers: The ``L`` layer labels.
        token_labels: ``S`` position names, or None.
        names: How runs ``a`` and ``b`` are called.
        log: Log colours for the mean maps.
    """
    rows = []
    for k, layer in enumerate(layers):
        diff = difference_chart(fields["difference"][k], fields["significant"][k], token_labels=token_labels,
                                names=names, title=f"{layer_title(layer)} · difference of mean {QUANTITY}")
        rows.append([diff, *mean_charts(fields["mean_a"][k], fields["mean_b"][k], layer=layer,
                                         token_labels=token_labels, names=names, log=log)])
    return rows


def comparison_figures(fields: Mapping, layers: Sequence, **kwargs):
    """The rows of :func:`comparison_rows` as a Bokeh grid (shared pan and zoom), for the report."""
    from .bokeh import matrix_grid

    return matrix_grid(comparison_rows(fields, layers, **kwargs), width=380, height=360)
