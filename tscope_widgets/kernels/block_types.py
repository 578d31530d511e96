r"""Sharpness by block type: the largest eigenvalue of each diagonal Hessian block, aggregated by what the
block is (embedding, query-key, value-output, MLP, normalisation, output head).

Wang, Wang, Zhou, Yan, E & Wu ("The Sharpness Disparity Principle in Transformers for Accelerating Language
Model Pre-Training", ICML 2025, arXiv 2502.19002) average a sharpness measure over the blocks of each type and
find, early in training and then throughout,

.. math:: S(\mathrm{Emb}) \ll S(\mathrm{QK}) < S(\mathrm{FFN}) < S(\mathrm{VO}) \ll S(\mathrm{Norm}),

which motivates their blockwise learning rates. Their per-block measure is a Gauss–Newton approximation of
the Hessian's diagonal averaged over the block; here the per-block value is :math:`\lambda_{\max}(H_{aa})` of
the diagonal block :math:`H_{aa}` (the sharpness of the block in the edge-of-stability sense), and a type's
value is the mean (or the maximum) over its blocks:

.. math:: S(t) = \frac{1}{|B_t|} \sum_{a \in B_t} \lambda_{\max}(H_{aa}), \qquad
          B_t = \{a : \mathrm{type}(a) = t\}.

:func:`block_type` reads a type from the adapter's parameter-group names (``embed``,
``block{l}.attn.q|k|v|o`` and their ``.head{h}`` views, ``block{l}.mlp.in|out``, ``block{l}.ln1|ln2``,
``ln_f``, ``head``), the same for every supported family. A pure function of numbers: the values come from the
tracker (:class:`tscope_widgets.tracking.SpectrumTracker`) or from block densities (their largest Ritz value).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["BLOCK_TYPES", "SDP_ORDER", "BlockTypeSharpness", "block_type", "block_type_sharpness"]

BLOCK_TYPES = ("embed", "qk", "vo", "mlp", "norm", "head")
# Increasing sharpness in the Sharpness Disparity Principle (Wang et al. 2025); the output head is not part of it.
SDP_ORDER = ("embed", "qk", "mlp", "vo", "norm")

_GROUP = re.compile(
    r"^(?:(?P<embed>embed)(?:\..+)?"
    r"|block\d+\.(?:attn\.(?P<attn>[qkvo])(?:\.head\d+)?|mlp\.(?P<mlp>in|out)|(?P<ln>ln[12]))"
    r"|(?P<lnf>ln_f)|(?P<head>head))$"
)
_GROUP_NAMES = (
    "embed, block{l}.attn.q|k|v|o (also .head{h}), block{l}.mlp.in|out, block{l}.ln1|ln2, ln_f or head"
)


def block_type(group: str) -> str:
    """The type of a parameter group: one of :data:`BLOCK_TYPES`.

    ``attn.q``/``attn.k`` are ``"qk"``, ``attn.v``/``attn.o`` are ``"vo"`` (the circuits :math:`W_{QK}` and
    :math:`W_{OV}`), ``mlp.in``/``mlp.out`` ``"mlp"``, ``ln1``/``ln2``/``ln_f`` ``"norm"``.

    Args:
        group: A group name of :meth:`ModelAdapter.param_groups` (e.g. ``"block3.attn.k"``).

    Returns:
        The type name.

    Raises:
        ValueError: For a name that is not a group name of the adapters.

    Example:
        >>> [block_type(g) for g in ("embed", "block0.attn.k", "block2.attn.o.head1", "block0.mlp.in", "ln_f")]
        ['embed', 'qk', 'vo', 'mlp', 'norm']
    """
    if not isinstance(group, str):
        raise TypeError(f"a parameter group name must be a string, got {type(group).__name__}")
    m = _GROUP.match(group)
    if m is None:
        raise ValueError(
            f"cannot tell the block type of {group!r}: expected a parameter group name ({_GROUP_NAMES}); "
            "track blocks of one group each (e.g. blocks=['block0.attn.q', 'block0.mlp.in'])"
        )
    if m["embed"]:
        return "embed"
    if m["attn"]:
        return "qk" if m["attn"] in "qk" else "vo"
    if m["mlp"]:
        return "mlp"
    if m["ln"] or m["lnf"]:
        return "norm"
    return "head"


@dataclass
class BlockTypeSharpness:
    r"""Sharpness per block type.

    Attributes:
        types: The types present, in :data:`BLOCK_TYPES` order (``Ty`` of them).
        values: :math:`S(t)` ``[..., Ty]`` (float64; the leading axes those of the block values, e.g. ``T``
            steps); NaN where no block of the type has a finite value.
        counts: Blocks of each type ``[Ty]`` (int64).
        reduce: ``"mean"`` or ``"max"``.
        block_types: ``{block label: type}``.
    """

    types: list[str]
    values: Tensor
    counts: Tensor
    reduce: str
    block_types: dict[str, str]

    def __getitem__(self, name: str) -> Tensor:
        """``values[..., k]`` of the type ``name``."""
        if name not in self.types:
            raise KeyError(f"no block of type {name!r}; types present: {', '.join(self.types) or 'none'}")
        return self.values[..., self.types.index(name)]

    def ratios(self) -> dict[str, Tensor]:
        r"""Ratios of neighbours in the Sharpness Disparity order, ``{"qk/embed": S(QK)/S(Emb), ...}`` ``[...]``.

        Only pairs of types present are given (a missing type is skipped: ``"mlp/qk"`` compares the next types
        present). Above 1 where the principle holds.
        """
        present = [t for t in SDP_ORDER if t in self.types]
        return {f"{b}/{a}": self[b] / self[a] for a, b in zip(present, present[1:], strict=False)}

    def follows_sdp(self) -> Tensor:
        r"""Whether the types present are ordered as :math:`S(\mathrm{Emb}) < S(\mathrm{QK}) < S(\mathrm{FFN})
        < S(\mathrm{VO}) < S(\mathrm{Norm})` ``[...]`` (bool; False where a value is NaN)."""
        ratios = list(self.ratios().values())
        if not ratios:
            return torch.ones(self.values.shape[:-1], dtype=torch.bool)
        return torch.stack([r > 1 for r in ratios], -1).all(-1)


def block_type_sharpness(
    block_lambda_max: Tensor | np.ndarray | Sequence[float],
    blocks: Sequence[str] | Mapping[str, Sequence[str]],
    *,
    reduce: str = "mean",
) -> BlockTypeSharpness:
    r"""Aggregate each block's :math:`\lambda_{\max}(H_{aa})` by block type (see the module docstring).

    NaN values (a block not computed at a step) are left out of their type's mean or maximum.

    Args:
        block_lambda_max: Per-block values ``[..., G]`` (e.g. ``SpectrumHistory.block_lambda_max [T, G]``).
        blocks: The ``G`` blocks: group names, or ``{label: [group names]}`` (each block's groups of one type).
        reduce: ``"mean"`` (as Wang et al. average) or ``"max"``.

    Returns:
        :class:`BlockTypeSharpness` with ``values [..., Ty]``.

    Raises:
        ValueError: For an unknown ``reduce``, a group name that has no type, a block mixing types, or values
            whose last axis is not ``G``.

    Example:
        >>> groups = ["block0.attn.q", "block0.attn.k", "block0.attn.v", "embed"]
        >>> s = block_type_sharpness([1.0, 3.0, 5.0, 0.1], groups)
        >>> s.types, s.values.tolist(), s.counts.tolist()
        (['embed', 'qk', 'vo'], [0.1, 2.0, 5.0], [1, 2, 1])
    """
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    spec = dict(blocks) if isinstance(blocks, Mapping) else {g: [g] for g in blocks}
    if isinstance(blocks, str) or not spec:
        raise ValueError("blocks must list the blocks' parameter group names (or map labels to them); got none")
    kinds = {}
    for label, groups in spec.items():
        found = {block_type(g) for g in ([groups] if isinstance(groups, str) else groups)}
        if not found:
            raise ValueError(f"block {label!r} has no parameter groups")
        if len(found) > 1:
            raise ValueError(
                f"block {label!r} mixes block types {sorted(found)}; the type view needs blocks of one type "
                "(e.g. one block per parameter group)"
            )
        kinds[label] = found.pop()
    if isinstance(block_lambda_max, Tensor):
        values = block_lambda_max.detach().to("cpu", torch.float64)
    else:
        values = torch.from_numpy(np.array(block_lambda_max, dtype=np.float64))
    if values.ndim == 0 or values.shape[-1] != len(spec):
        raise ValueError(
            f"block_lambda_max must be [..., {len(spec)}] (one value per block), got {tuple(values.shape)}"
        )
    types = [t for t in BLOCK_TYPES if t in kinds.values()]
    # membership [G, Ty]: block a is of type t
    member = torch.tensor([[kinds[label] == t for t in types] for label in spec], dtype=torch.bool)
    finite = torch.isfinite(values)[..., :, None] & member  # [..., G, Ty]
    x = values[..., :, None]
    if reduce == "mean":
        total = torch.where(finite, x, 0.0).sum(-2)
        count = finite.sum(-2)
        out = torch.where(count > 0, total / count.clamp(min=1), torch.nan)
    else:
        out = torch.where(finite, x, -torch.inf).amax(-2)
        out = torch.where(finite.any(-2), out, torch.nan)
    return BlockTypeSharpness(types, out, member.sum(0).to(torch.int64), reduce, kinds)
