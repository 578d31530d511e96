"""Checked conversions of the values :class:`~.landscape.LandscapeWidget` receives, as pure functions.

Values from the browser are untrusted: the view state the page may set (``selected_point``, ``log_scale``,
``view``, ``quantity``, ``show_contours``) is checked against the grid and the menus
(:func:`check_view_state`; a point is snapped to the nearest grid point). The constructor's arguments are
checked here too: sizes (:func:`check_grid_options`), explicit grid coordinates (:func:`check_grid`),
directions given as a pair (:func:`check_given_directions`), their eigenvalues (:func:`check_eigenvalues`)
and the trajectory's step numbers (:func:`check_trajectory_steps`). Labels of the directions and the
quadratic model's curves are turned into what the page shows. Directions, grids and slices themselves come
from :mod:`tscope_widgets.kernels.landscape`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..kernels.landscape import DIRECTION_KINDS, direction_norm, landscape_grid, quadratic_model
from ._sensitivity_state import check_log_scale
from ._values import Check, choice, flag, is_finite, is_int

__all__ = [
    "QUANTITIES",
    "VIEWS",
    "BROWSER_TRAITS",
    "MIN_RESOLUTION",
    "CHECKPOINT_MARGIN",
    "check_grid_options",
    "check_grid",
    "check_grids",
    "check_direction_kind",
    "check_given_directions",
    "check_eigenvalues",
    "check_trajectory_steps",
    "direction_labels",
    "quadratic_curves",
    "nearest_index",
    "check_point",
    "check_view_state",
]

QUANTITIES = ("loss", "accuracy")
VIEWS = ("2d", "3d")
BROWSER_TRAITS = ("selected_point", "log_scale", "view", "quantity", "show_contours")
MIN_RESOLUTION = 2
CHECKPOINT_MARGIN = 0.5  # default grid of "checkpoints": [-0.5, 1.5] in both directions (0.5 ± 1)


def check_grid_options(resolution: Any, span: Any, seed: Any) -> tuple[int, float | None, int]:
    """``(resolution, span or None, seed)`` of the grid and the random directions.

    Raises:
        ValueError: For a ``resolution`` that is not an int ``>= 2``, or a ``span`` that is not a positive
            finite number.
        TypeError: For a ``seed`` that is not an int.
    """
    if not is_int(resolution) or resolution < MIN_RESOLUTION:
        raise ValueError(f"resolution must be an int >= {MIN_RESOLUTION}, got {resolution!r}")
    if span is not None and (not is_finite(span) or span <= 0):
        raise ValueError(f"span must be a positive number, got {span!r}")
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return int(resolution), None if span is None else float(span), int(seed)


def check_grid(values: Any, span: float, resolution: int, what: str, center: float = 0.0) -> Tensor:
    """``values`` as a float64 tensor ``[A]``, or (for None) :func:`landscape_grid`: ``resolution`` points from
    ``center - span`` to ``center + span``.

    Raises:
        TypeError: For values that are not numbers.
        ValueError: For values that are not a non-empty 1-D increasing sequence of finite numbers.
    """
    if values is not None:
        try:
            t = torch.as_tensor(values).detach().to("cpu", torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{what} must be a 1-D sequence of numbers ({e})") from e
        if t.ndim != 1 or t.numel() < 1 or not torch.isfinite(t).all():
            raise ValueError(f"{what} must be a non-empty 1-D sequence of finite numbers, got shape {list(t.shape)}")
        if t.numel() > 1 and not (t[1:] > t[:-1]).all():
            raise ValueError(f"{what} must be strictly increasing")
        return t
    return landscape_grid(span, resolution, center=center)


def check_grids(kind: str, span: float | None, resolution: int, alphas: Any, betas: Any) -> tuple[Tensor, Tensor]:
    """The grid ``(alphas [A], betas [B])`` float64: explicit coordinates, else ``resolution`` points over
    ``[-span, span]`` (``span`` None: 1, or for ``"checkpoints"`` directions ``[-0.5, 1.5]``, so that the
    model sits at 0 and each checkpoint at 1).

    Raises:
        TypeError, ValueError: As :func:`check_grid`.
    """
    center = 0.0
    if kind == "checkpoints" and span is None and alphas is None and betas is None:
        span, center = 0.5 + CHECKPOINT_MARGIN, 0.5
    span = 1.0 if span is None else span
    return check_grid(alphas, span, resolution, "alphas", center), check_grid(betas, span, resolution, "betas", center)


def check_direction_kind(directions: str, eigenvalues: Any) -> str:
    """A kind of directions by name (one of ``DIRECTION_KINDS``), with no ``eigenvalues`` unless ``"eigen"``.

    Raises:
        ValueError: For an unknown kind, or eigenvalues passed with directions that are not eigenvectors.
    """
    if directions not in DIRECTION_KINDS:
        raise ValueError(f"directions={directions!r}; use one of {list(DIRECTION_KINDS)} or a pair (d1, d2)")
    if eigenvalues is not None and directions != "eigen":
        raise ValueError(
            "eigenvalues describe Hessian eigenvector directions: pass them with directions=(d1, d2), "
            "or use directions='eigen', which computes its own"
        )
    return directions


def check_given_directions(directions: Any) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A pair ``(d1, d2)`` of directions ``{parameter name: Tensor}`` (matched to the model by the kernel).

    Raises:
        TypeError: For something that is not a pair of such dicts.
    """
    if not isinstance(directions, (tuple, list)) or len(directions) != 2:
        raise TypeError(
            f"directions must be one of {list(DIRECTION_KINDS)} or a pair (d1, d2) of dicts "
            f"{{parameter name: Tensor}}, got {type(directions).__name__}"
        )
    d1, d2 = directions
    for name, d in (("d1", d1), ("d2", d2)):
        if not isinstance(d, Mapping) or not all(isinstance(t, Tensor) for t in d.values()):
            raise TypeError(f"{name} must be a dict {{parameter name: Tensor}}, got {type(d).__name__}")
    return dict(d1), dict(d2)


def check_eigenvalues(eigenvalues: Any) -> Tensor | None:
    """Hessian eigenvalues of given directions as a float64 tensor ``[2]`` (NaN for a None), or None.

    Raises:
        ValueError: For anything but two finite numbers or Nones.
    """
    if eigenvalues is None:
        return None
    try:
        values = list(eigenvalues.tolist() if isinstance(eigenvalues, Tensor) else eigenvalues)
    except TypeError:
        values = []
    if len(values) != 2 or not all(v is None or is_finite(v) for v in values):
        raise ValueError(f"eigenvalues must be two finite numbers (or None for one), got {eigenvalues!r}")
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)


def check_trajectory_steps(steps: Any, count: int) -> np.ndarray:
    """Step numbers ``[T]`` int64 of a trajectory of ``count`` checkpoints (None: ``0 .. T-1``).

    Raises:
        ValueError: For anything but ``count`` ints.
    """
    if steps is None:
        return np.arange(count, dtype=np.int64)
    try:
        array = np.asarray(steps)
    except (TypeError, ValueError):
        array = np.asarray([])
    if array.shape != (count,) or array.dtype.kind not in "iu":
        raise ValueError(f"trajectory_steps must be {count} ints, one per checkpoint")
    return array.astype(np.int64)


def direction_labels(
    kind: str,
    d1: Mapping[str, Tensor],
    d2: Mapping[str, Tensor],
    *,
    seed: int = 0,
    eigenvalues: Tensor | None = None,
    explained: Tensor | None = None,
) -> list[str]:
    """What the axes say of the two directions of ``kind`` (``"given"`` for a pair passed in)."""
    pairs = ((1, d1), (2, d2))
    if kind == "random":
        return [
            f"random direction {k} (filter-normalised, seed {seed}, ‖d{k}‖ = {direction_norm(d):.3g})" for k, d in pairs
        ]
    if kind == "eigen":
        return [f"Hessian eigenvector {k} (λ{k} = {float(eigenvalues[k - 1]):.4g})" for k, _ in pairs]
    if kind == "pca":
        return [f"PCA direction {k} ({float(explained[k - 1]):.1%} of the trajectory's variance)" for k, _ in pairs]
    if kind == "checkpoints":
        return [
            f"toward checkpoint {ab} (θ{ab} − θ, ‖d{k}‖ = {direction_norm(d):.3g})"
            for (k, d), ab in zip(pairs, "ab", strict=True)
        ]
    labels = []
    for k, d in pairs:
        lam = eigenvalues is not None and not math.isnan(eigenvalues[k - 1])
        lam = f", λ{k} = {float(eigenvalues[k - 1]):.4g}" if lam else ""
        labels.append(f"direction {k} (‖d{k}‖ = {direction_norm(d):.3g}{lam})")
    return labels


def quadratic_curves(
    alphas: Tensor, betas: Tensor, eigenvalues: Tensor | None, norms: Sequence[float], origin_loss: float
) -> dict[str, Any] | None:
    r"""The quadratic model :math:`L_0 + \tfrac12 \lambda_k \lVert d_k \rVert^2 t^2` over each axis, as the page
    draws it: ``{eigenvalues [2], alpha [A] | None, beta [B] | None}`` (None without eigenvalues)."""
    if eigenvalues is None:
        return None
    curves: dict[str, Any] = {"eigenvalues": [float(v) for v in eigenvalues]}
    axes = (("alpha", alphas, eigenvalues[0], norms[0]), ("beta", betas, eigenvalues[1], norms[1]))
    for key, grid, lam, norm in axes:
        curves[key] = None if math.isnan(lam) else quadratic_model(grid * norm, float(lam), origin_loss).numpy()
    return curves


def nearest_index(grid: Tensor, x: float) -> int:
    """The index of the grid point nearest to ``x``."""
    return int(torch.argmin((grid - float(x)).abs()))


def check_point(value: Any, alphas: Tensor, betas: Tensor) -> Check:
    """``selected_point``: None, or ``[alpha, beta]`` inside the grid (half a step beyond its ends), snapped to
    the nearest grid point."""
    if value is None:
        return True, None, ""
    why = "must be null or [alpha, beta], two finite numbers inside the grid"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return False, None, why
    out = []
    for x, grid in zip(value, (alphas, betas), strict=True):
        if not is_finite(x):
            return False, None, why
        step = float(grid[-1] - grid[0]) / max(grid.numel() - 1, 1) or 1.0
        if not float(grid[0]) - step / 2 <= float(x) <= float(grid[-1]) + step / 2:
            return False, None, f"{why} ([{float(grid[0]):.4g}, {float(grid[-1]):.4g}])"
        out.append(float(grid[nearest_index(grid, x)]))
    return True, out, ""


def check_view_state(name: str, value: Any, *, alphas: Tensor, betas: Tensor) -> Check:
    """``(ok, canonical value, reason if not ok)`` for a view-state trait of the widget.

    Args:
        name: One of :data:`BROWSER_TRAITS`.
        value: The value proposed (from the browser: anything JSON can hold).
        alphas: The grid coordinates ``[A]`` (float64) along the first direction; ``selected_point`` snaps
            to them.
        betas: The grid coordinates ``[B]`` (float64) along the second direction.
    """
    if name == "log_scale":
        return check_log_scale(value)
    if name == "show_contours":
        return flag(value)
    if name == "view":
        return choice(value, VIEWS)
    if name == "quantity":
        return choice(value, QUANTITIES)
    if name == "selected_point":
        return check_point(value, alphas, betas)
    raise KeyError(f"{name!r} is not a view-state trait of LandscapeWidget; those are {list(BROWSER_TRAITS)}")
