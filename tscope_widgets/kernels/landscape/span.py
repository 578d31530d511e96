r"""How far a landscape grid should reach: spans chosen from the curvature or from the loss rise.

A fixed span hides sharp directions: with :math:`\lambda_1 = 2808` the loss along the top eigenvector
rises by one nat within :math:`|\alpha| \approx 0.027`, so a grid over ``[-1, 1]`` is a plateau with a
one-cell well. Both rules here pick the span at which the loss has risen by a set amount ``rise``:

- :func:`eigen_span`: along Hessian eigenvectors (unit norm) the quadratic model
  :math:`L(\alpha) \approx L_0 + \tfrac12 \lambda \alpha^2` reaches :math:`L_0 + \Delta L` at
  :math:`\alpha^* = \sqrt{2 \Delta L / \lambda}`; the span is that of the sharpest direction (the
  largest :math:`\lambda`), so the grid's edge sits where its loss has risen by ``rise`` and flatter
  directions rise less inside it (Li et al., NeurIPS 2018, for the plots; the model is the second-order
  Taylor expansion at a critical point).
- :func:`rise_span`: for any direction, from losses measured along it (a 1D probe), the smallest
  :math:`|\alpha|` at which the loss has risen by ``rise`` over :math:`L_0`, linearly interpolated; the
  largest probed :math:`|\alpha|` when it never does.
- :func:`probe_span`: runs that 1D probe along each direction of a plane (:func:`~.slices.slice_1d` at
  :data:`PROBE_ALPHAS`) and returns the smaller of the two rise spans, so that the sharper direction sets
  the grid as in :func:`eigen_span`. Used for every direction kind but eigenvectors (which have
  their curvature) and checkpoints (whose points of interest sit at fixed coordinates).

``eigen_span`` and ``rise_span`` are pure functions of numbers; ``probe_span`` evaluates the model
(``2 * len(PROBE_ALPHAS)`` points and the origin per direction), never modifying it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import torch
from torch import Tensor

from .slices import slice_1d

__all__ = ["DEFAULT_RISE", "PROBE_ALPHAS", "eigen_span", "probe_span", "rise_span"]

DEFAULT_RISE = 1.0  # nats: the loss increase at the grid's edge
# Coordinates of the 1D probe of `probe_span`: +-2^-k for k = 7 .. 0, up to 1, the span Li et al. (2018)
# use for filter-normalised directions (and the span where the loss never rises by `rise`).
PROBE_ALPHAS = tuple(sign * 2.0**-k for sign in (-1.0, 1.0) for k in range(7, -1, -1))


def eigen_span(eigenvalues: Sequence[float] | Tensor, rise: float = DEFAULT_RISE) -> float:
    r"""The span :math:`\sqrt{2\,\Delta L / \lambda_{\max}}` of a plane of Hessian eigenvectors.

    Args:
        eigenvalues: The directions' eigenvalues :math:`\lambda_k` (any number of them; None entries
            are skipped), for unit-norm eigenvectors.
        rise: :math:`\Delta L > 0`, the loss increase of the quadratic model at the edge.

    Returns:
        The span (a positive float).

    Raises:
        ValueError: For a non-positive or non-finite ``rise``, or without a positive finite eigenvalue
            (a flat or concave plane has no curvature to size it by: pass ``span=`` instead).
    """
    if not (isinstance(rise, (int, float)) and math.isfinite(rise) and rise > 0):
        raise ValueError(f"rise must be a positive number of nats, got {rise!r}")
    values = [float(v) for v in eigenvalues if v is not None]
    positive = [v for v in values if math.isfinite(v) and v > 0]
    if not positive:
        raise ValueError(
            f"no positive eigenvalue among {values} to choose a span from; pass span= (the grid's half-width)"
        )
    return math.sqrt(2.0 * rise / max(positive))


def rise_span(alphas, losses, loss0: float, rise: float = DEFAULT_RISE) -> float:
    r"""The smallest :math:`|\alpha|` where the loss has risen by ``rise`` over ``loss0``, from a 1D probe.

    Each side of the origin is searched outwards; the crossing is linearly interpolated between the last
    point below and the first at or above :math:`L_0 + \Delta L`. The span is the nearer crossing of the
    two sides, or the largest probed :math:`|\alpha|` where neither side reaches it.

    Args:
        alphas: ``[N]`` probe coordinates (any order, both signs or one; 0 may be absent).
        losses: ``[N]`` losses at those coordinates (NaN: not measured, skipped).
        loss0: The loss at the origin :math:`L_0`.
        rise: :math:`\Delta L > 0`.

    Returns:
        The span (a positive float).

    Raises:
        ValueError: For shapes that differ, no finite point away from 0, or a bad ``rise``.
    """
    if not (isinstance(rise, (int, float)) and math.isfinite(rise) and rise > 0):
        raise ValueError(f"rise must be a positive number of nats, got {rise!r}")
    a = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(losses, dtype=torch.float64).reshape(-1)
    if a.shape != y.shape:
        raise ValueError(f"alphas {tuple(a.shape)} and losses {tuple(y.shape)} must have the same shape")
    keep = torch.isfinite(a) & torch.isfinite(y) & (a != 0)
    if not bool(keep.any()):
        raise ValueError("rise_span needs finite losses at some alpha != 0")
    a, y = a[keep], y[keep] - float(loss0)
    crossings = []
    for side in (a > 0, a < 0):
        r, d = a[side].abs(), y[side]
        if r.numel() == 0:
            continue
        order = torch.argsort(r)
        r, d = torch.cat([r.new_zeros(1), r[order]]), torch.cat([d.new_zeros(1), d[order]])  # from the origin
        hit = torch.nonzero(d >= rise).flatten()
        if hit.numel():
            k = int(hit[0])
            t = (rise - d[k - 1]) / (d[k] - d[k - 1])  # d[k-1] < rise <= d[k]
            crossings.append(float(r[k - 1] + t * (r[k] - r[k - 1])))
    return min(crossings) if crossings else float(a.abs().max())


def probe_span(adapter, data, directions, *, rise: float = DEFAULT_RISE, dtype: torch.dtype | None = None,
               points_per_call: int | None = None) -> float:
    r"""The span of a plane from the loss rise along each of its directions (a 1D probe of each).

    For each direction :math:`d`, :math:`g(\alpha) = L(\theta + \alpha d)` is evaluated at
    :data:`PROBE_ALPHAS` (:func:`~.slices.slice_1d`, on a private copy of the model) and
    :func:`rise_span` finds where :math:`g` has risen by ``rise`` over :math:`g(0)`; the span is the
    smaller of the directions' spans (at most :math:`\max |\alpha| = 1`, reached where the loss
    never rises that much).

    Args:
        adapter: A model or :class:`~tscope_widgets.models.ModelAdapter` (what ``slice_1d`` takes).
        data: A batch dict or a list of them (what ``slice_1d`` takes).
        directions: One or more directions ``{parameter name: Tensor}``.
        rise: :math:`\Delta L > 0` in nats.
        dtype: Compute dtype of the probe (``None``: the model's, at least float32).
        points_per_call: As in ``slice_1d``.

    Returns:
        The span (a positive float, at most 1).

    Raises:
        ValueError: For a bad ``rise`` or no direction, and what ``slice_1d`` refuses (directions
            that do not match the model, data without targets).
    """
    if not (isinstance(rise, (int, float)) and math.isfinite(rise) and rise > 0):
        raise ValueError(f"rise must be a positive number of nats, got {rise!r}")
    directions = list(directions)
    if not directions:
        raise ValueError("probe_span needs at least one direction")
    spans = []
    for direction in directions:
        stream = slice_1d(adapter, data, direction, list(PROBE_ALPHAS), dtype=dtype, points_per_call=points_per_call)
        final = deque(stream, maxlen=1)[0]  # the complete slice
        spans.append(rise_span(PROBE_ALPHAS, final.loss, float(final.origin_loss), rise))
    return min(spans)
