r"""Heterogeneity of a transformer's Hessian (Ormaniec, Dangel & Singh, ICLR 2025): the dense matrix by blocks,
and the distributions of the entries of its query and value blocks.

:func:`hessian_heatmap` materialises the dense float64 Hessian (or its GGN or functional part) over chosen
parameter groups with :func:`~tscope_widgets.kernels.curvature.dense_hessian` and keeps the group layout, so
that a view can draw :math:`\log_{10}(|H_{ij}| + \varepsilon)` with separators between the blocks (the paper's
Fig. 1: one layer, one head, ``d = 16``, ``d_mlp = 64``, ReLU, no LayerNorm: 3,836 parameters, 1,024 of them in
attention). :func:`entry_histograms` counts the magnitudes :math:`|H_{ij}|` of diagonal blocks on shared
log-spaced bins (the paper compares :math:`|H_{VV}|` and :math:`|H_{QQ}|` under softmax and linear attention:
the query block's entries are orders of magnitude smaller than the value block's at small embedding scales).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ...models.registry import adapt
from ..curvature import DENSE_HESSIAN_MAX_BYTES, ParamLayout, dense_hessian, resolve_groups

__all__ = ["HessianHeatmap", "entry_histograms", "hessian_heatmap"]


@dataclass
class HessianHeatmap:
    r"""A dense curvature matrix with its block layout.

    Attributes:
        hessian: ``[P, P]`` float64 (CPU), in the flat order of the groups.
        groups: Group names in order.
        sizes: Parameters per group (``sum = P``).
        kind: ``"hessian"``, ``"ggn"`` or ``"functional"``.
        eps: The floor of :meth:`log_abs`.
    """

    hessian: Tensor
    groups: list[str]
    sizes: list[int]
    kind: str = "hessian"
    eps: float = 1e-6

    @property
    def offsets(self) -> list[int]:
        """Start index of each group (``[G]``)."""
        out, pos = [], 0
        for n in self.sizes:
            out.append(pos)
            pos += n
        return out

    def log_abs(self) -> Tensor:
        r""":math:`\log_{10}(|H| + \varepsilon)` ``[P, P]`` float64."""
        return (self.hessian.abs() + self.eps).log10()

    def block(self, row: str, col: str | None = None) -> Tensor:
        """The block ``H[row, col]`` (``col`` defaults to ``row``), a view ``[P_row, P_col]``."""
        rows, cols = self._span(row), self._span(row if col is None else col)
        return self.hessian[rows, cols]

    def _span(self, group: str) -> slice:
        if group not in self.groups:
            raise ValueError(f"unknown group {group!r}; this heatmap has {self.groups}")
        g = self.groups.index(group)
        start = self.offsets[g]
        return slice(start, start + self.sizes[g])


def hessian_heatmap(
    adapter,
    data,
    groups=None,
    *,
    kind: str = "hessian",
    loss=None,
    eps: float = 1e-6,
    max_bytes: int = DENSE_HESSIAN_MAX_BYTES,
) -> HessianHeatmap:
    """The dense float64 curvature matrix over ``groups`` with its block layout (see the module docstring).

    Args:
        adapter: A model or :class:`~tscope_widgets.models.ModelAdapter` (never modified).
        data: A batch dict or a list of them (as for ``HessianOperator``).
        groups: Group names or patterns (``None``: every group, e.g. all 3,836 parameters of the paper's model;
            ``"block0.attn.*"``: the 1,024 attention weights).
        kind: ``"hessian"``, ``"ggn"`` or ``"functional"``.
        loss: As for ``HessianOperator`` (``None``: the LM loss on the labelled tokens).
        eps: The floor added before the logarithm in :meth:`HessianHeatmap.log_abs` (``> 0``).
        max_bytes: Refuse a matrix larger than this (see ``dense_hessian``).

    Returns:
        A :class:`HessianHeatmap`.

    Raises:
        ValueError: for an unknown group or ``eps <= 0``. MemoryError: over ``max_bytes``.
    """
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"hessian_heatmap: eps must be a positive number, got {eps!r}")
    user = adapt(adapter)
    available = user.param_groups()
    names = resolve_groups(available, groups)
    layout = ParamLayout(dict(user.model.named_parameters()), available, names)
    H = dense_hessian(user, data, groups=names, kind=kind, loss=loss, dtype=torch.float64, max_bytes=max_bytes)
    return HessianHeatmap(H.detach().cpu(), names, [layout.sizes[g] for g in names], kind, float(eps))


def entry_histograms(
    blocks: Mapping[str, Tensor], *, bins: int = 60, floor: float = 1e-12
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Histograms of :math:`\log_{10} |H_{ij}|` of several blocks on shared bins.

    Args:
        blocks: ``{name: block [m, n]}`` (any float dtype).
        bins: Number of bins ``>= 1``, evenly spaced in :math:`\log_{10} |H_{ij}|` between the smallest and the
            largest magnitude over all blocks (entries below ``floor`` are counted at ``floor``).
        floor: Smallest magnitude shown (``> 0``; exact zeros land in the first bin).

    Returns:
        ``(edges [bins + 1], {name: counts [bins]})``: edges in :math:`\log_{10}` units, counts as float64
        fractions of each block's entries (each sums to 1).
    """
    if not blocks:
        raise ValueError("entry_histograms: blocks must name at least one block")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"entry_histograms: bins must be a positive int, got {bins!r}")
    if not (isinstance(floor, (int, float)) and floor > 0):
        raise ValueError(f"entry_histograms: floor must be a positive number, got {floor!r}")
    logs = {k: v.detach().double().abs().clamp_min(floor).log10().reshape(-1).cpu() for k, v in blocks.items()}
    lo = min(float(v.min()) for v in logs.values())
    hi = max(float(v.max()) for v in logs.values())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    counts = {}
    for k, v in logs.items():
        idx = torch.bucketize(v, edges[1:-1], right=True)  # [n] in 0 .. bins-1
        counts[k] = torch.bincount(idx, minlength=bins).to(torch.float64) / v.numel()
    return edges, counts
