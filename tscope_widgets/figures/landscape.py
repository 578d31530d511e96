r"""What the loss-landscape view shows: a :class:`~.charts.LandscapeChart` of a grid ``[A, B]``.

The grid's colours follow the shared rule (:func:`~.charts.color_scale`), the contour levels are nice round
values inside that colour domain (:func:`~.charts.contour_levels`, in log values on a log scale), computed
as lines with ``contourpy``; the trajectory keeps its finite points with their step numbers; the origin is
marked when it lies on the grid's area. The builder takes plain arrays (a results file's slice as well as a
widget's state), never a widget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import contourpy
import numpy as np

from .charts import LandscapeChart, as_array, color_scale, contour_levels

__all__ = ["LABEL_GAP", "QUANTITY_TITLES", "cell_edges", "contour_lines", "landscape_chart", "thin_labels"]

QUANTITY_TITLES = {
    "loss": "loss (token cross-entropy, nats)",
    "accuracy": "accuracy (fraction of targets right)",
}
MIN_CONTOUR_POINTS = 4


def contour_lines(
    alphas, betas, values, levels: Sequence[float], log: bool = False
) -> list[tuple[float, list[np.ndarray]]]:
    """Contour lines of ``values [A, B]`` over the grid, in grid coordinates.

    Args:
        alphas: ``[A]`` ascending coordinates (first axis of ``values``).
        betas: ``[B]`` ascending coordinates.
        values: ``[A, B]`` floats; NaN (not computed) is left out, as are values ``<= 0`` for ``log``.
        levels: Contour values.
        log: Interpolate in log values.

    Returns:
        ``[(level, [line [n, 2] of (alpha, beta)])]``; lines stop where values are missing.
    """
    z = np.array(values, dtype=np.float64).T  # [B, A]: contourpy wants z[y, x]
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(z > 0, np.log(z), np.nan)
    if z.shape[0] < 2 or z.shape[1] < 2 or np.isfinite(z).sum() < MIN_CONTOUR_POINTS:
        return [(float(level), []) for level in levels]
    z = np.where(np.isfinite(z), z, np.nan)
    gen = contourpy.contour_generator(np.asarray(alphas, float), np.asarray(betas, float), z, line_type="Separate")
    out = []
    for level in levels:
        v = math.log(level) if log else level
        out.append((float(level), [np.asarray(line) for line in gen.lines(v) if len(line) >= 2]))
    return out


def cell_edges(c: np.ndarray) -> np.ndarray:
    """``[n + 1]`` edges of the cells around grid coordinates ``c [n]`` (midpoints; the ends mirrored)."""
    c = np.asarray(c, dtype=np.float64)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def landscape_chart(
    alphas,
    betas,
    values,
    *,
    value_title: str = "loss",
    value_name: str | None = None,
    title: str = "",
    x_label: str = "α",
    y_label: str = "β",
    log: bool = False,
    contours: bool = True,
    trajectory=None,
    trajectory_steps=None,
    log_range: float | None = None,
    colormap: str | Sequence[str] = "viridis",
) -> LandscapeChart:
    """A landscape grid as a :class:`LandscapeChart`.

    Args:
        alphas: ``[A]`` increasing coordinates along the first direction (across).
        betas: ``[B]`` increasing coordinates along the second direction (upwards).
        values: ``[A, B]`` values at ``(alphas[i], betas[j])`` (NaN = not computed yet).
        value_title: Colour-bar title (quantity and units).
        value_name: Short name of the value for hover (default: ``value_title``).
        title: Chart title.
        x_label: Title of the x axis (the first direction).
        y_label: Title of the y axis (the second direction).
        log: Logarithmic colour scale (contours in log values).
        contours: Compute contour lines (when at least four values are finite).
        trajectory: ``[T, 2]`` points ``(alpha, beta)``; non-finite ones are dropped with their steps.
        trajectory_steps: ``[T]`` step numbers (default ``0 .. T-1``).
        log_range: Clip a log colour scale to ``hi / log_range`` (None: the shared full-range rule).
        colormap: Colour map.

    Raises:
        ValueError: For ``values`` that are not ``[A, B]``, coordinates that are not increasing, or trajectory
            steps of the wrong length.
    """
    a = as_array(alphas).reshape(-1)
    b = as_array(betas).reshape(-1)
    arr = as_array(values)
    if arr.shape != (a.size, b.size):
        raise ValueError(f"values must have shape [A, B] = [{a.size}, {b.size}], got {list(arr.shape)}")
    for name, c in (("alphas", a), ("betas", b)):
        if c.size == 0 or (c.size > 1 and not (np.diff(c) > 0).all()):
            raise ValueError(f"{name} must be a non-empty increasing sequence")
    scale = color_scale(arr, log, log_range=log_range, colormap=colormap)
    levels: tuple[float, ...] = ()
    lines: tuple = ()
    if contours and np.isfinite(arr).sum() >= MIN_CONTOUR_POINTS:
        levels = tuple(contour_levels((scale.lo, scale.hi), log=scale.log))
        lines = tuple((lv, tuple(ls)) for lv, ls in contour_lines(a, b, arr, levels, scale.log))
    points = steps = None
    if trajectory is not None and len(trajectory):
        pts = as_array(trajectory).reshape(-1, 2)
        st = np.arange(len(pts)) if trajectory_steps is None else np.asarray(trajectory_steps).reshape(-1)
        if st.shape != (len(pts),):
            raise ValueError(f"trajectory_steps has {st.size} entries for {len(pts)} points")
        keep = np.isfinite(pts).all(axis=1)
        points, steps = pts[keep], st[keep].astype(np.int64)
    ea, eb = cell_edges(a), cell_edges(b)
    on_grid = ea[0] <= 0 <= ea[-1] and eb[0] <= 0 <= eb[-1]
    return LandscapeChart(
        alphas=a,
        betas=b,
        values=arr,
        scale=scale,
        title=title,
        x_label=x_label,
        y_label=y_label,
        value_title=value_title,
        value_name=value_name or value_title,
        contour_levels=levels,
        contour_lines=lines,
        trajectory=points,
        trajectory_steps=steps,
        origin=(0.0, 0.0) if on_grid else None,
    )


LABEL_GAP = 18.0  # pixels: step labels closer than this to a kept one are dropped (thinLabels in the live view)


def thin_labels(points, candidates: Sequence[int], min_gap: float = LABEL_GAP) -> list[int]:
    """The candidates whose labels do not pile up: each kept label is at least ``min_gap`` pixels from every
    label kept before it, the candidates taken in priority order (the last, the first, then the rest as
    given), so a trajectory's ends keep theirs. ``thinLabels`` of ``js/src/lib/trajectory.js``.

    Args:
        points: ``[T, 2]`` label anchors in pixels.
        candidates: Indices into ``points`` that would get a label (e.g. every k-th step).
        min_gap: Least distance in pixels between two kept labels.

    Returns:
        The kept indices, ascending.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    order = list(dict.fromkeys(int(k) for k in candidates))
    if len(order) > 1:
        order = [order[-1], order[0], *order[1:-1]]
    kept: list[int] = []
    for k in order:  # greedy: each candidate against the few already kept (vectorised per candidate)
        if not kept or bool((np.hypot(*(pts[kept] - pts[k]).T) >= min_gap).all()):
            kept.append(k)
    return sorted(kept)

