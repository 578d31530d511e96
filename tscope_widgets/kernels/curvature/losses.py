r"""Losses on the logits that the curvature operators split into Gauss–Newton and functional parts.

A :class:`LogitLoss` is a loss :math:`\ell(z, \text{batch})` of the logits ``z [B, S, V]`` alone, so that the
Hessian of the data loss splits through the logits (Schraudolph, 2002; Martens, 2020, JMLR 21(146)):

.. math::

    H = J^\top (\nabla_z^2 \ell)\, J + \sum_{t,k} \frac{\partial \ell}{\partial z_{tk}} \nabla_\theta^2 z_{tk},
    \qquad J = \partial z / \partial \theta .

Built in (each token ``t`` with a target :math:`y_t`, ``N`` labelled tokens over all batches):

- ``"ce"``: :math:`L = \frac1N \sum_t -\log \operatorname{softmax}(z_t)_{y_t}` (the LM loss), with
  :math:`\nabla^2_{z_t} \ell = (\operatorname{diag}(p_t) - p_t p_t^\top) / N`.
- ``"mse"``: :math:`L = \frac1N \sum_t \lVert z_t - e_{y_t} \rVert^2` (squared distance of the logits to the
  one-hot target, the MSE variant of Ormaniec, Dangel & Singh, ICLR 2025), with
  :math:`\nabla^2_{z_t} \ell = 2 I / N`.

``positions`` keeps only the tokens at those logits positions (e.g. the answer digits of a task; negative
indices count from the end). A callable ``fn(logits [B, S, V], batch) -> scalar`` is any other loss on the
logits: batches are then weighted by their samples ``B`` and :math:`\nabla_z^2 \ell` is applied by
forward-over-reverse autodiff of ``fn`` (``torch.func.jvp`` of ``torch.func.grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ...models.adapter import IGNORE_INDEX

__all__ = ["LogitLoss", "LOGIT_LOSSES", "as_logit_loss"]

LOGIT_LOSSES = ("ce", "mse")


@dataclass(frozen=True)
class LogitLoss:
    """A loss on the logits for :class:`~.hessian.HessianOperator` (``loss=``); see the module docstring.

    Example:
        >>> LogitLoss("mse", positions=(-7, -6, -5, -4, -3, -2))
        LogitLoss(fn='mse', positions=(-7, -6, -5, -4, -3, -2))

    Attributes:
        fn: ``"ce"``, ``"mse"`` or a callable ``fn(logits [B, S, V], batch) -> scalar`` (pure torch, so that
            it can be differentiated twice).
        positions: Logits positions scored (``None``: every labelled one); ``"ce"``/``"mse"`` only.
    """

    fn: str | Callable[[Tensor, Mapping[str, Tensor]], Tensor] = "ce"
    positions: tuple[int, ...] | None = None

    def __post_init__(self):
        if isinstance(self.fn, str):
            if self.fn not in LOGIT_LOSSES:
                raise ValueError(f"LogitLoss: fn={self.fn!r}; expected one of {LOGIT_LOSSES} or a callable "
                                 "fn(logits, batch) -> scalar")
        elif not callable(self.fn):
            raise TypeError(f"LogitLoss: fn must be 'ce', 'mse' or a callable fn(logits, batch), got {self.fn!r}")
        if self.positions is not None:
            if not isinstance(self.fn, str):
                raise ValueError("LogitLoss: positions= applies to 'ce' and 'mse'; a callable selects its own "
                                 "positions from the logits")
            pos = self.positions
            if isinstance(pos, (str, bytes)) or not isinstance(pos, Sequence) or not pos or not all(
                isinstance(p, int) and not isinstance(p, bool) for p in pos
            ):
                raise ValueError(f"LogitLoss: positions must be a non-empty sequence of ints, got {pos!r}")
            object.__setattr__(self, "positions", tuple(pos))

    @property
    def token_weighted(self) -> bool:
        """Whether batches are weighted by labelled tokens (``"ce"``, ``"mse"``) instead of samples."""
        return isinstance(self.fn, str)

    def targets(self, targets: Tensor) -> Tensor:
        """``targets [B, S]`` with positions outside ``positions`` set to ``IGNORE_INDEX``."""
        if self.positions is None:
            return targets
        S = targets.shape[-1]
        bad = [p for p in self.positions if not -S <= p < S]
        if bad:
            raise ValueError(f"LogitLoss: positions {bad} lie outside the {S} logits positions of the batch")
        keep = torch.zeros(S, dtype=torch.bool, device=targets.device)
        keep[torch.tensor([p % S for p in self.positions], device=targets.device)] = True
        return targets.masked_fill(~keep, IGNORE_INDEX)

    def mean(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The mean over labelled tokens of ``targets [B, S]`` of the per-token loss (``"ce"``/``"mse"``)."""
        mask = targets != IGNORE_INDEX  # [B, S]
        n = int(mask.sum())
        if n == 0:
            raise ValueError("no position of the batch has a label among the positions scored; nothing to average")
        if self.fn == "ce":
            return torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
            )
        onehot = torch.nn.functional.one_hot(targets.clamp_min(0), logits.shape[-1]).to(logits.dtype)  # [B, S, V]
        return ((logits - onehot).square().sum(-1) * mask).sum() / n

    def output_hessian(self, logits: Tensor, targets: Tensor | None, batch, weight: float, count: int):
        r"""``W [K, B, S, V] -> (\nabla_z^2 L_{\text{share}}) W`` for one batch.

        ``count`` is ``N`` (labelled tokens over all batches) for the built-in losses; ``weight`` the
        batch's weight (used by a callable, whose share of the loss is ``weight * fn(logits, batch)``).
        """
        z = logits.detach()
        if self.fn == "ce":
            p = torch.softmax(z, dim=-1)  # [B, S, V]
            m = (targets != IGNORE_INDEX).to(p.dtype)[..., None] / count  # [B, S, 1]
            return lambda w: (p * w - p * (p * w).sum(-1, keepdim=True)) * m
        if self.fn == "mse":
            m = 2 * (targets != IGNORE_INDEX).to(z.dtype)[..., None] / count  # [B, S, 1]
            return lambda w: w * m
        fn = self.fn
        hvp = lambda w: torch.func.jvp(torch.func.grad(lambda x: fn(x, batch) * weight), (z,), (w,))[1]  # noqa: E731
        return torch.func.vmap(hvp)


def as_logit_loss(loss) -> LogitLoss | Callable | None:
    """``None``, a :class:`LogitLoss`, ``"ce"``/``"mse"`` (made a :class:`LogitLoss`) or a callable
    ``loss(adapter, batch)`` as given; anything else is a ``TypeError`` naming the choices."""
    if loss is None or isinstance(loss, LogitLoss):
        return loss
    if isinstance(loss, str):
        return LogitLoss(loss)
    if callable(loss):
        return loss
    raise TypeError(
        f"loss must be None (the LM loss), 'ce', 'mse', a LogitLoss(fn, positions) or a callable "
        f"loss(adapter, batch) -> scalar, got {loss!r}"
    )
