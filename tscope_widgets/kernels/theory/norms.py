r"""Closed-form Jacobians and Hessians of LayerNorm and RMSNorm over the last dimension.

LayerNorm (Ba, Kiros & Hinton 2016, arXiv:1607.06450), as ``torch.nn.LayerNorm`` computes it (biased
variance, ``eps`` inside the square root), for ``x ∈ R^D``:

.. math::

    \mu = \tfrac1D \textstyle\sum_i x_i, \quad
    \sigma = \sqrt{\tfrac1D \textstyle\sum_i (x_i - \mu)^2 + \epsilon}, \quad
    \hat x = (x - \mu) / \sigma, \quad y = \gamma \odot \hat x + \beta.

With the centering projector :math:`P = I - \mathbf 1 \mathbf 1^\top / D`,
:math:`\partial (x - \mu) / \partial x = P` and :math:`\partial \sigma / \partial x_i = (x_i - \mu)/(D\sigma)
= \hat x_i / D` (``eps`` does not change this), so

.. math::

    \frac{\partial y_k}{\partial x_i} = \frac{\gamma_k}{\sigma}
        \Big(\delta_{ki} - \frac1D - \frac{\hat x_k \hat x_i}{D}\Big),
    \qquad J = \frac1\sigma \operatorname{diag}(\gamma) \Big(I - \frac{\mathbf 1\mathbf 1^\top}{D}
        - \frac{\hat x \hat x^\top}{D}\Big).

The sketch :math:`\frac1\sigma (I - \mathbf 1 \mathbf 1^\top / D)` drops the :math:`\hat x \hat x^\top / D`
term (the dependence of :math:`\sigma` on ``x``) and ``γ``; it is not the Jacobian. Differentiating
:math:`\partial \hat x_k / \partial x_j = (P_{kj} - \hat x_k \hat x_j / D)/\sigma` once more with the same
two rules gives a tensor symmetric in ``(k, i, j)`` before the weight:

.. math::

    \frac{\partial^2 y_k}{\partial x_i \partial x_j} = -\frac{\gamma_k}{D \sigma^2}
        \Big(P_{ki} \hat x_j + P_{kj} \hat x_i + P_{ij} \hat x_k - \frac{3}{D} \hat x_i \hat x_j \hat x_k\Big).

RMSNorm (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", NeurIPS):
:math:`r = \sqrt{\tfrac1D \sum_i x_i^2 + \epsilon}`, :math:`\hat x = x / r`, :math:`y = \gamma \odot \hat x`.
Now :math:`\partial r / \partial x_i = \hat x_i / D` and there is no centering, so the same formulas hold
with ``P = I`` and ``σ = r``:

.. math::

    \frac{\partial y_k}{\partial x_i} = \frac{\gamma_k}{r}\Big(\delta_{ki} - \frac{\hat x_k \hat x_i}{D}\Big),
    \qquad
    \frac{\partial^2 y_k}{\partial x_i \partial x_j} = -\frac{\gamma_k}{D r^2}
        \Big(\delta_{ki} \hat x_j + \delta_{kj} \hat x_i + \delta_{ij} \hat x_k
        - \frac{3}{D} \hat x_i \hat x_j \hat x_k\Big).

The bias ``β`` drops out of every derivative. All four functions are batched over any leading
dimensions and work in the dtype of ``x``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["layernorm_jacobian", "layernorm_hessian", "rmsnorm_jacobian", "rmsnorm_hessian"]


def _check(x: Tensor, weight: Tensor | None, eps: float, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor [..., D], got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"{name}: x must have a last (normalized) dimension D >= 1, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: x must be floating point, got {x.dtype}; convert it with x.double()")
    if weight is not None:
        if not isinstance(weight, Tensor) or weight.shape != x.shape[-1:]:
            got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(f"{name}: weight must be a tensor of shape [{x.shape[-1]}] (the last dim of x), got {got}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{name}: eps must be a float >= 0, got {eps!r}")


def _layer_stats(x: Tensor, eps: float, center: bool) -> tuple[Tensor, Tensor]:
    """``(x̂ [..., D], σ [..., 1])`` of LayerNorm (``center=True``) or RMSNorm."""
    xc = x - x.mean(-1, keepdim=True) if center else x
    sigma = (xc.square().mean(-1, keepdim=True) + eps).sqrt()
    return xc / sigma, sigma


def _jacobian(x: Tensor, weight: Tensor | None, eps: float, center: bool) -> Tensor:
    D = x.shape[-1]
    xh, sigma = _layer_stats(x, eps, center)
    eye = torch.eye(D, dtype=x.dtype, device=x.device)
    J = eye - xh[..., :, None] * xh[..., None, :] / D  # [..., D, D]
    if center:
        J = J - 1.0 / D
    J = J / sigma[..., None]
    if weight is not None:
        J = J * weight.to(x.dtype)[:, None]
    return J


def _hessian(x: Tensor, weight: Tensor | None, eps: float, center: bool) -> Tensor:
    D = x.shape[-1]
    xh, sigma = _layer_stats(x, eps, center)
    P = torch.eye(D, dtype=x.dtype, device=x.device)
    if center:
        P = P - 1.0 / D
    a = xh[..., :, None, None]  # x̂_k
    b = xh[..., None, :, None]  # x̂_i
    c = xh[..., None, None, :]  # x̂_j
    H = P[:, :, None] * c + P[:, None, :] * b + P[None, :, :] * a - (3.0 / D) * a * b * c  # [..., D, D, D]
    H = H * (-1.0 / (D * sigma.square()))[..., None, None]
    if weight is not None:
        H = H * weight.to(x.dtype)[:, None, None]
    return H


def layernorm_jacobian(x: Tensor, weight: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    r"""Jacobian of LayerNorm over the last dimension, in closed form (derivation in the module docstring).

    .. math:: J_{ki} = \frac{\partial y_k}{\partial x_i}
        = \frac{\gamma_k}{\sigma}\Big(\delta_{ki} - \frac1D - \frac{\hat x_k \hat x_i}{D}\Big)

    Args:
        x: Input ``[..., D]``, any floating dtype; leading dimensions are batch dimensions.
        weight: ``γ [D]`` (``None``: ones). The bias does not enter the Jacobian.
        eps: The ``eps`` inside the square root, as in ``torch.nn.LayerNorm``.

    Returns:
        ``[..., D, D]`` in ``x``'s dtype, entry ``[..., k, i] = ∂y_k/∂x_i``.

    Raises:
        TypeError: If ``x`` is not a floating-point tensor.
        ValueError: If ``weight`` is not ``[D]`` or ``eps`` is negative.
    """
    _check(x, weight, eps, "layernorm_jacobian")
    return _jacobian(x, weight, eps, center=True)


def layernorm_hessian(x: Tensor, weight: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    r"""Second derivatives of LayerNorm over the last dimension, in closed form (module docstring).

    .. math:: \frac{\partial^2 y_k}{\partial x_i \partial x_j} = -\frac{\gamma_k}{D \sigma^2}
        \Big(P_{ki} \hat x_j + P_{kj} \hat x_i + P_{ij} \hat x_k - \frac{3}{D} \hat x_i \hat x_j \hat x_k\Big),
        \quad P = I - \mathbf 1 \mathbf 1^\top / D

    Args:
        x: Input ``[..., D]``, any floating dtype.
        weight: ``γ [D]`` (``None``: ones).
        eps: The ``eps`` inside the square root.

    Returns:
        ``[..., D, D, D]`` in ``x``'s dtype, entry ``[..., k, i, j] = ∂²y_k/∂x_i∂x_j`` (symmetric in ``i, j``).

    Raises:
        TypeError: If ``x`` is not a floating-point tensor.
        ValueError: If ``weight`` is not ``[D]`` or ``eps`` is negative.
    """
    _check(x, weight, eps, "layernorm_hessian")
    return _hessian(x, weight, eps, center=True)


def rmsnorm_jacobian(x: Tensor, weight: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    r"""Jacobian of RMSNorm ``y = γ ⊙ x / sqrt(mean(x²) + eps)`` over the last dimension, in closed form.

    .. math:: J_{ki} = \frac{\gamma_k}{r}\Big(\delta_{ki} - \frac{\hat x_k \hat x_i}{D}\Big),
        \quad r = \sqrt{\tfrac1D \textstyle\sum_i x_i^2 + \epsilon}, \quad \hat x = x / r

    Args:
        x: Input ``[..., D]``, any floating dtype.
        weight: ``γ [D]`` (``None``: ones).
        eps: The ``eps`` inside the square root.

    Returns:
        ``[..., D, D]`` in ``x``'s dtype, entry ``[..., k, i] = ∂y_k/∂x_i``.

    Raises:
        TypeError: If ``x`` is not a floating-point tensor.
        ValueError: If ``weight`` is not ``[D]`` or ``eps`` is negative.
    """
    _check(x, weight, eps, "rmsnorm_jacobian")
    return _jacobian(x, weight, eps, center=False)


def rmsnorm_hessian(x: Tensor, weight: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    r"""Second derivatives of RMSNorm over the last dimension, in closed form (module docstring).

    .. math:: \frac{\partial^2 y_k}{\partial x_i \partial x_j} = -\frac{\gamma_k}{D r^2}
        \Big(\delta_{ki} \hat x_j + \delta_{kj} \hat x_i + \delta_{ij} \hat x_k
        - \frac{3}{D} \hat x_i \hat x_j \hat x_k\Big)

    Args:
        x: Input ``[..., D]``, any floating dtype.
        weight: ``γ [D]`` (``None``: ones).
        eps: The ``eps`` inside the square root.

    Returns:
        ``[..., D, D, D]`` in ``x``'s dtype, entry ``[..., k, i, j] = ∂²y_k/∂x_i∂x_j``.

    Raises:
        TypeError: If ``x`` is not a floating-point tensor.
        ValueError: If ``weight`` is not ``[D]`` or ``eps`` is negative.
    """
    _check(x, weight, eps, "rmsnorm_hessian")
    return _hessian(x, weight, eps, center=False)
