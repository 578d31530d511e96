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

Pure functions of numbers; no model, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["DEFAULT_RISE", "eigen_span", "rise_span"]

DEFAULT_RISE = 1.0  # nats: the loss increase at the grid's edge


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
