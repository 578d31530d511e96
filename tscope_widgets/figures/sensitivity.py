r"""What a sensitivity map shows: :class:`~.charts.MatrixChart` descriptions of ``[S, S]`` statistics.

Row ``i`` (output position) runs down, column ``j`` (input position) across, as in the live view. Axis labels
read ``"i:token"`` with the token's whitespace made visible and cut to 10 characters (the live view's axes);
hover names are cut at 24. Titles read ``"layer 1 · mean ‖J_ij‖²_F"``. The colour scale is ``"auto"`` by
default: logarithmic where the values span decades (:func:`~.charts.auto_log`), never for counts; it may be
clamped by percentiles or values and drawn with any of :data:`~.charts.COLORMAPS` (``viridis`` by default).
The builders take plain arrays or
tensors (a results file's statistics as well as a widget's snapshot), never a widget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .charts import MatrixChart, as_array, color_scale, position_label, resolve_log

__all__ = [
    "QUANTITY",
    "STATISTICS",
    "STAT_TITLES",
    "layer_title",
    "method_note",
    "position_labels",
    "sensitivity_chart",
    "sensitivity_grid",
    "value_title",
]

QUANTITY = "‖J_ij‖²_F"
STATISTICS = ("mean", "std", "var", "sem", "cv", "min", "max", "count")
STAT_TITLES = {
    "mean": "mean",
    "std": "std",
    "var": "variance",
    "sem": "std. error of mean",
    "cv": "std / |mean|",
    "min": "min",
    "max": "max",
    "count": "samples per cell",
}
X_LABEL = "input position j"
Y_LABEL = "output position i"
AXIS_CHARS = 10  # token characters on an axis label (positionLabel in js/src/lib/axes.js)
HOVER_CHARS = 24  # ... in the cell details


def layer_title(layer) -> str:
    """``"layer 3"``, or ``"final norm"`` for the layer ``"final"``."""
    return "final norm" if layer == "final" else f"layer {layer}"


def method_note(method: str, probes: int | None = None) -> str:
    r"""What the numbers of a map are, by method: ``"exact"``, or for Hutchinson that they are estimates.

    Hutchinson's estimator :math:`\tfrac1K\sum_k \lVert J_{ij}^\top z_k\rVert^2` with Rademacher probes
    :math:`z_k` is unbiased for :math:`\lVert J_{ij}\rVert_F^2` (Hutchinson 1990); each sample's value is one
    estimate, so a cell's mean over samples carries the probes' noise as well as the data's spread, and its
    standard error of the mean (``sem`` = std / √n over the per-sample estimates) covers both.

    Args:
        method: ``"exact"``, ``"hutchinson"`` or ``"full"``.
        probes: Probes per position (Hutchinson), or None when not known yet.
    """
    if method == "hutchinson":
        per = f" with {probes} probes" if probes else ""
        return f"Hutchinson estimates{per}: cell means ± standard error (sem)"
    return f"{method} values" if method else ""


def value_title(statistic: str, quantity: str = QUANTITY) -> str:
    """``"mean ‖J_ij‖²_F"``; counts read ``"samples per cell"``."""
    return STAT_TITLES.get(statistic, statistic) + ("" if statistic == "count" else f" {quantity}")


def position_labels(token_labels: Sequence[str] | None, S: int, max_chars: int = AXIS_CHARS) -> list[str]:
    """``"i:token"`` for each position (``"i"`` alone without tokens or for an empty token).

    Raises:
        ValueError: For token labels of another length than ``S``.
    """
    if token_labels is not None:
        token_labels = list(token_labels)
        if len(token_labels) != S:
            raise ValueError(f"token_labels has {len(token_labels)} entries for a map with {S} positions")
    return [position_label(i, token_labels, max_chars) for i in range(S)]


def sensitivity_chart(
    values,
    *,
    title: str = "",
    token_labels: Sequence[str] | None = None,
    log: bool | str = "auto",
    value_title: str = "value",
    value_name: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    percentiles: tuple[float, float] | None = None,
    log_range: float | None = None,
    colormap: str | Sequence[str] = "viridis",
    count: bool = False,
) -> MatrixChart:
    """One ``[S, S]`` map as a :class:`MatrixChart`.

    Args:
        values: ``[S, S]`` tensor or array (NaN = no data).
        title: Chart title.
        token_labels: ``S`` strings naming the positions, or None.
        log: Logarithmic colour scale: True, False or ``"auto"`` (log where the values span decades).
        value_title: Colour-bar title (quantity).
        value_name: Short name of the value for hover (default: ``value_title``).
        vmin: Lower colour limit instead of the shared rule (see :func:`~.charts.color_scale`).
        vmax: Upper colour limit instead of the shared rule.
        percentiles: ``(p_lo, p_hi)``: colour limits at these percentiles of the values (``vmin``/``vmax`` win).
        log_range: For ``log`` without ``vmin``: the scale spans at most ``vmax / log_range`` .. ``vmax``.
        colormap: Colour map (see :data:`~.charts.COLORMAPS`).
        count: The values are counts (a linear scale whatever ``log`` says).

    Raises:
        ValueError: For a non-square input, token labels of the wrong length, ``vmin <= 0`` with ``log`` or
            bad percentiles.
    """
    arr = as_array(values)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"expected a square matrix [S, S] with S >= 1, got shape {tuple(arr.shape)}")
    S = arr.shape[0]
    labels = tuple(position_labels(token_labels, S))
    hover = tuple(position_labels(token_labels, S, HOVER_CHARS))
    return MatrixChart(
        values=arr,
        row_labels=labels,
        col_labels=labels,
        title=title,
        x_label=X_LABEL,
        y_label=Y_LABEL,
        value_title=value_title,
        value_name=value_name or value_title,
        scale=color_scale(
            arr, log, lo=vmin, hi=vmax, percentiles=percentiles, log_range=log_range, colormap=colormap, count=count
        ),
        row_hover=hover,
        col_hover=hover,
        row_name="output i",
        col_name="input j",
    )


def _statistic(state, name: str):
    return state[name] if isinstance(state, Mapping) else getattr(state, name)


def sensitivity_grid(
    stats: Mapping,
    token_labels: Sequence[str] | None = None,
    statistics: str | Sequence[str] = ("mean",),
    *,
    log: bool | str = "auto",
    quantity: str = QUANTITY,
    note: str = "",
    percentiles: tuple[float, float] | None = None,
    limits: tuple[float | None, float | None] | None = None,
    colormap: str | Sequence[str] = "viridis",
) -> list[list[MatrixChart]]:
    """Charts of several layers and statistics: one row per layer, one column per statistic.

    Args:
        stats: ``{layer: state}``, a state being a :class:`~tscope_widgets.kernels.WelfordState` or a mapping
            ``{statistic: [S, S]}`` (as read from a results file); all of the same ``S``.
        token_labels: ``S`` strings for the axes.
        statistics: Names among :data:`STATISTICS`.
        log: Logarithmic colour scales: True, False or ``"auto"`` (each map by its own values); never for
            counts.
        quantity: How the per-sample value is written in titles.
        note: Appended to every title after ``" · "`` (e.g. the samples done), if given.
        percentiles: ``(p_lo, p_hi)``: clamp each colour scale to these percentiles (not for counts).
        limits: ``(lo, hi)``: clamp each colour scale to these values (either may be None; not for counts; a
            low limit ``<= 0`` is dropped on a log scale, as in the live view).
        colormap: Colour map of every panel but counts (always ``viridis``).

    Returns:
        ``[[chart per statistic] per layer]``; titles read ``"layer 0 · mean ‖J_ij‖²_F"``.

    Raises:
        ValueError: For empty ``stats``, an unknown statistic or maps of different sizes.
    """
    if not isinstance(stats, Mapping) or not stats:
        raise ValueError("stats must be a non-empty mapping {layer: WelfordState}")
    statistics = [statistics] if isinstance(statistics, str) else list(statistics)
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown or not statistics:
        raise ValueError(f"unknown statistics {unknown or statistics}; choose from {list(STATISTICS)}")
    arrays = {layer: {s: as_array(_statistic(state, s)) for s in statistics} for layer, state in stats.items()}
    sizes = {layer: next(iter(a.values())).shape for layer, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all layers must have the same map size, got {sizes}")
    lo, hi = (None, None) if limits is None else limits
    clamp = dict(vmin=lo, vmax=hi, percentiles=percentiles, colormap=colormap)
    rows = []
    for layer, by_stat in arrays.items():
        row = []
        for stat, values in by_stat.items():
            name = value_title(stat, quantity)
            log_here = resolve_log(log, values, count=stat == "count")
            extra = {} if stat == "count" else dict(clamp)
            if log_here and lo is not None and not lo > 0:
                extra["vmin"] = None
            row.append(
                sensitivity_chart(
                    values,
                    title=f"{layer_title(layer)} · {name}" + (f" · {note}" if note else ""),
                    token_labels=token_labels,
                    log=log_here,
                    value_title=name,
                    value_name=stat,
                    count=stat == "count",
                    **extra,
                )
            )
        rows.append(row)
    return rows

