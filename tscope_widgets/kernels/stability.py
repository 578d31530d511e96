r"""Stability thresholds of optimisers on a quadratic: the edge of stability a training run is compared with.

Full-batch gradient descent with step size :math:`\eta` on a quadratic with curvature :math:`\lambda`
multiplies the error along that eigenvector by :math:`1 - \eta\lambda`, which diverges once
:math:`\lambda > 2/\eta`; Cohen, Kaur, Li, Kolter & Talwalkar (ICLR 2021) observe that
:math:`\lambda_{max}` of the training loss rises to this threshold and hovers there. A formula, no state:
:class:`tscope_widgets.tracking.SpectrumTracker` records it next to the measured :math:`\lambda_{max}`.
"""

from __future__ import annotations

import math

__all__ = ["sgd_stability_threshold"]


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
