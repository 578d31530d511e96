r"""Per-batch attention maps: per-query entropy and attention rollout.

Attention weights ``A ∈ R^{B×n_heads×S×S}`` (query rows ``i``, key columns ``j``, rows summing to 1)
come from the model's own attention modules (:meth:`ModelAdapter.attention_weights`).

- Entropy of query ``i``'s attention (nats): :math:`H_i = -\sum_j A_{ij} \log A_{ij}`, with
  :math:`0 \log 0 = 0`; between 0 (one key) and :math:`\log(\#\text{keys})` (uniform).
- Attention rollout (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers", ACL): per
  block the head-averaged weights :math:`\bar A_l = \tfrac{1}{n_h} \sum_h A_{l,h}` are mixed with the
  residual identity and renormalised, :math:`\hat A_l = \operatorname{rownorm}(0.5 \bar A_l + 0.5 I)`, and
  multiplied through the layers: :math:`R_0 = \hat A_0`, :math:`R_l = \hat A_l R_{l-1}`. Row ``i`` of
  :math:`R_l` is how much of each input token reaches position ``i`` after block ``l``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["attention_entropy", "attention_rollout"]


def attention_entropy(weights: Tensor) -> Tensor:
    r"""Entropy :math:`-\sum_j A_{ij} \log A_{ij}` (nats) of every query's attention row.

    Args:
        weights: Attention weights ``[..., S_q, S_k]`` (rows are distributions), floating.

    Returns:
        ``[..., S_q]`` in the weights' dtype (``0 \log 0 = 0``).
    """
    return -torch.special.xlogy(weights, weights).sum(-1)


def attention_rollout(weights: Sequence[Tensor], attention_mask: Tensor | None = None) -> Tensor:
    r"""Attention rollout :math:`R_l = \hat A_l \cdots \hat A_0`, :math:`\hat A = \mathrm{rownorm}(0.5\bar A + 0.5I)`.

    Abnar & Zuidema (2020), ACL. Padding is removed first: rows and columns of padded positions of
    :math:`\bar A` are set to zero, so a padded position only keeps its identity share and no real
    position receives anything through it.

    Args:
        weights: Attention weights of blocks ``0, 1, ..., L-1`` in order, each ``[B, n_heads, S, S]``.
        attention_mask: ``[B, S]``, 1 for tokens and 0 for padding, or ``None``.

    Returns:
        ``[L, B, S, S]``: the rollout after each block.
    """
    if not weights:
        raise ValueError("attention_rollout needs the weights of at least one block")
    A = torch.stack([w.mean(1) for w in weights])  # [L, B, S, S], heads averaged
    S = A.shape[-1]
    if attention_mask is not None:
        keep = attention_mask.to(A.device).bool()
        A = A * (keep[:, :, None] & keep[:, None, :]).to(A.dtype)  # [L, B, S, S]
    A = 0.5 * A + 0.5 * torch.eye(S, dtype=A.dtype, device=A.device)
    A = A / A.sum(-1, keepdim=True)
    out = [A[0]]
    for layer in range(1, A.shape[0]):  # a product through the layers: sequential by nature
        out.append(A[layer] @ out[-1])  # [B, S, S]
    return torch.stack(out)
