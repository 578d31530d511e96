r"""Stability thresholds of optimisers on a quadratic: the edge of stability a training run is compared with.

Full-batch gradient descent with step size :math:`\eta` on a quadratic with curvature :math:`\lambda`
multiplies the error along that eigenvector by :math:`1 - \eta\lambda`, which diverges once
:math:`\lambda > 2/\eta`; Cohen, Kaur, Li, Kolter & Talwalkar (ICLR 2021) observe that
:math:`\lambda_{max}` of the training loss rises to this threshold and hovers there. A formula, no state:
:class:`tscope_widgets.tracking.SpectrumTracker` records it next to the measured :math:`\lambda_{max}`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["adam_preconditioner", "adam_stability_threshold", "sgd_stability_threshold"]


def sgd_stability_threshold(
    lr: float,
    momentum: float = 0.0,
    *,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> float:
    r"""Largest loss-Hessian eigenvalue at which ``torch.optim.SGD`` is stable on a quadratic.

    PyTorch's SGD with learning rate :math:`\eta`, momentum :math:`\beta`, dampening ``d`` and weight decay
    ``w`` applied to :math:`L(\theta) = \tfrac12 \lambda \theta^2` is a linear recurrence in
    :math:`(\theta, \text{buffer})`; with :math:`a = \eta(\lambda + w)` its characteristic polynomial has a
    root at :math:`-1` (the period-two divergence of the edge of stability) when

    .. math::

        a = \frac{2 + 2\beta}{1 - d} \ \text{(heavy ball)}, \qquad
        a = \frac{2 + 2\beta}{1 + (2 - d)\beta} \ \text{(Nesterov)},

    which gives :math:`2/\eta` without momentum and :math:`(2 + 2\beta)/\eta` with heavy-ball momentum
    (Cohen et al., ICLR 2021). Weight decay adds ``w`` to every eigenvalue of the objective's Hessian, so
    the threshold for the eigenvalues of the *loss* Hessian is lowered by ``w``.

    Args:
        lr: Learning rate :math:`\eta > 0`.
        momentum: :math:`\beta \in [0, 1)`.
        dampening: ``d \in [0, 1)`` as in ``torch.optim.SGD``.
        nesterov: Nesterov momentum as in ``torch.optim.SGD``.
        weight_decay: L2 coefficient ``w`` as in ``torch.optim.SGD``.

    Returns:
        The threshold for :math:`\lambda_{max}` of the loss Hessian (NaN for a non-positive ``lr``).

    Example:
        >>> sgd_stability_threshold(0.5), sgd_stability_threshold(0.5, momentum=0.5)
        (4.0, 6.0)
    """
    lr = float(lr)
    if not lr > 0:
        return math.nan
    if nesterov:
        a = (2 + 2 * momentum) / (1 + (2 - dampening) * momentum)
    else:
        a = (2 + 2 * momentum) / (1 - dampening)
    return a / lr - weight_decay


def adam_stability_threshold(lr: float, beta1: float = 0.9) -> float:
    r"""The preconditioned sharpness at which Adam is stable on a quadratic: :math:`(2 + 2\beta_1)/((1 - \beta_1)\eta)`.

    Cohen et al. (2022, "Adaptive Gradient Methods at the Edge of Stability", arXiv 2207.14484): with the
    preconditioner ``P`` frozen, Adam's update is heavy-ball momentum :math:`\beta_1` on :math:`P^{-1} H` with
    step :math:`(1 - \beta_1)\eta` (the EMA of gradients), stable while
    :math:`\lambda_{max}(P^{-1} H) < (2 + 2\beta_1)/((1 - \beta_1)\eta)`, 38/η for :math:`\beta_1 = 0.9`;
    full-batch Adam's preconditioned sharpness rises to it and hovers there.

    Args:
        lr: Learning rate :math:`\eta > 0`.
        beta1: First-moment coefficient :math:`\beta_1 \in [0, 1)`.

    Returns:
        The threshold (NaN for a non-positive ``lr`` or ``beta1`` outside ``[0, 1)``).

    Example:
        >>> adam_stability_threshold(0.01)
        3800.0000000000005
    """
    lr, beta1 = float(lr), float(beta1)
    if not lr > 0 or not 0 <= beta1 < 1:
        return math.nan
    return (2 + 2 * beta1) / ((1 - beta1) * lr)


def adam_preconditioner(optimizer, named_params: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
    r"""Adam's diagonal preconditioner :math:`P = \operatorname{diag}(\sqrt{\hat v} + \epsilon)` per parameter.

    :math:`\hat v = v / (1 - \beta_2^t)` is the bias-corrected second moment (``exp_avg_sq``; ``max_exp_avg_sq``
    with AMSGrad) after ``t`` steps, exactly the denominator of ``torch.optim.Adam``/``AdamW``'s update
    :math:`\theta \leftarrow \theta - \frac{\eta}{1 - \beta_1^t} \hat m / (\sqrt{\hat v} + \epsilon)` (AdamW's
    decoupled weight decay does not enter ``P``; the first-moment bias correction :math:`1/(1 - \beta_1^t)`,
    which tends to 1, is left out, as by Cohen et al. 2022).

    Args:
        optimizer: A ``torch.optim.Adam`` or ``AdamW`` (its ``state`` keyed by parameter).
        named_params: ``{name: parameter}`` of the model the optimiser trains.

    Returns:
        ``{name: P diagonal}`` (same shapes, float64) for every parameter, or None before the first step
        (no state yet).

    Raises:
        TypeError: For an optimiser that is not Adam or AdamW.
    """
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        raise TypeError(f"adam_preconditioner needs torch.optim.Adam or AdamW, got {type(optimizer).__name__}")
    settings = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = {}
    for name, p in named_params.items():
        state = optimizer.state.get(p)
        if not state or "exp_avg_sq" not in state:
            return None
        group = settings[id(p)]
        beta2, eps = group["betas"][1], group["eps"]
        t = float(state["step"])
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        v_hat = v.detach().double() / (1 - beta2**t)
        out[name] = v_hat.sqrt() + eps
    return out
