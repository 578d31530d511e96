r"""Singular values and effective ranks of every head's weights and circuits.

For head ``h`` of a layer (row-vector convention of :mod:`tscope_widgets.models.heads`) with
``W_Q, W_K, W_V ∈ R^{D×d_h}`` and ``W_O ∈ R^{d_h×D}``, the circuits of Elhage et al. (2021), "A
Mathematical Framework for Transformer Circuits", are

.. math::

    W_{QK} = W_Q W_K^\top / \sqrt{d_h} \in R^{D×D}  \quad (\text{scores } x_i W_{QK} x_j^\top),
    \qquad W_{OV} = W_V W_O \in R^{D×D}            \quad (\text{what a head writes: } x_j W_{OV}).

Both have rank at most ``d_h``. Their nonzero singular values come from a ``d_h × d_h`` core: with thin
QR factorisations ``A = Q_A R_A`` and ``B = Q_B R_B`` of the ``D × d_h`` factors,
:math:`A B^\top = Q_A (R_A R_B^\top) Q_B^\top` and, ``Q_A, Q_B`` having orthonormal columns,
:math:`\sigma(A B^\top) = \sigma(R_A R_B^\top)`: ``O(D d_h^2)`` work instead of a ``D × D`` SVD.

Effective ranks of a spectrum :math:`\sigma_1 \ge \dots \ge \sigma_r \ge 0` (:func:`participation_ratio`,
:func:`entropy_rank`, :func:`stable_rank`, :func:`condition_number`):

- participation ratio :math:`(\sum_i \sigma_i)^2 / \sum_i \sigma_i^2 \in [1, r]`;
- entropy effective rank :math:`\exp H(p)`, :math:`p_i = \sigma_i / \sum_j \sigma_j`,
  :math:`H(p) = -\sum_i p_i \log p_i` (Roy & Vetterli, 2007, "The effective rank: a measure of
  effective dimensionality", EUSIPCO) ``∈ [1, r]``;
- stable rank :math:`\lVert W \rVert_F^2 / \lVert W \rVert_2^2 = \sum_i \sigma_i^2 / \sigma_1^2 \in [1, r]`;
- condition number :math:`\sigma_1 / \max(\sigma_r, \sigma_1 \cdot r_{\max} \cdot \epsilon)`, where
  :math:`r_{\max}` is the larger matrix dimension and :math:`\epsilon` the dtype's machine epsilon
  (the tolerance under which ``numpy.linalg.matrix_rank`` calls a singular value zero), so a singular
  matrix reads ``1 / (r_max ε)`` rather than infinity or a rounding-noise quotient. For ``W_QK`` and
  ``W_OV`` it is taken over the ``d_h`` singular values of the core (the circuit restricted to its row
  space; the ``D × D`` matrix itself is singular when ``d_h < D``).

All four are NaN for a zero matrix. Every head of every layer is computed with one batched
``torch.linalg.svdvals`` per matrix kind (``q, k, v, o, qk, ov``). Rotary position embeddings (Llama
family, GPT-NeoX) rotate queries and keys by position, so their ``W_QK`` is the position-free part.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...models.adapter import Layer, ModelAdapter
from .heads import stacked_heads

__all__ = [
    "KINDS",
    "HeadSpectra",
    "head_spectra",
    "circuit_singular_values",
    "participation_ratio",
    "entropy_rank",
    "stable_rank",
    "condition_number",
]

KINDS = ("q", "k", "v", "o", "qk", "ov")


# ----- effective ranks of spectra ----------------------------------------------------------------
def _check_spectrum(s: Tensor) -> None:
    if not isinstance(s, Tensor) or not s.dtype.is_floating_point or s.ndim < 1 or s.shape[-1] == 0:
        raise ValueError(
            f"singular values must be a floating tensor [..., r] with r >= 1, got "
            f"{getattr(s, 'dtype', type(s).__name__)} {list(getattr(s, 'shape', []))}"
        )


def _nan_where_zero(s: Tensor, value: Tensor) -> Tensor:
    return torch.where(s.amax(-1) > 0, value, torch.full_like(value, math.nan))


def participation_ratio(s: Tensor) -> Tensor:
    r"""Participation ratio :math:`(\sum_i \sigma_i)^2 / \sum_i \sigma_i^2` of singular values ``s [..., r]``.

    Returns ``[...]`` in ``[1, r]`` (``r`` equal values give ``r``), NaN for an all-zero spectrum.
    """
    _check_spectrum(s)
    return _nan_where_zero(s, s.sum(-1) ** 2 / (s * s).sum(-1))


def entropy_rank(s: Tensor) -> Tensor:
    r"""Entropy effective rank :math:`\exp(-\sum_i p_i \log p_i)`, :math:`p = \sigma / \sum_j \sigma_j`.

    Roy & Vetterli (2007), EUSIPCO. ``s``: singular values ``[..., r]``; ``0 \log 0 = 0``. Returns
    ``[...]`` in ``[1, r]``, NaN for an all-zero spectrum.
    """
    _check_spectrum(s)
    p = s / s.sum(-1, keepdim=True)
    return _nan_where_zero(s, torch.exp(-torch.special.xlogy(p, p).sum(-1)))


def stable_rank(s: Tensor) -> Tensor:
    r"""Stable rank :math:`\lVert W \rVert_F^2 / \lVert W \rVert_2^2 = \sum_i \sigma_i^2 / \max_i \sigma_i^2`.

    ``s``: singular values ``[..., r]``. Returns ``[...]`` in ``[1, r]``, NaN for an all-zero spectrum.
    """
    _check_spectrum(s)
    return _nan_where_zero(s, (s * s).sum(-1) / s.amax(-1) ** 2)


def condition_number(s: Tensor, max_dim: int | None = None) -> Tensor:
    r"""Condition number :math:`\sigma_{\max} / \max(\sigma_{\min}, \sigma_{\max} \cdot n \cdot \epsilon)`.

    Args:
        s: Singular values ``[..., r]`` (floating).
        max_dim: ``n``, the larger dimension of the matrices (default ``r``); with the dtype's machine
            epsilon ``ε`` it sets the floor ``σ_max·n·ε`` below which a singular value counts as zero
            (``numpy.linalg.matrix_rank``'s tolerance), so the result is at most ``1 / (n ε)``.

    Returns:
        ``[...]``, ``>= 1``; NaN for an all-zero spectrum.
    """
    _check_spectrum(s)
    n = s.shape[-1] if max_dim is None else max_dim
    hi, lo = s.amax(-1), s.amin(-1)
    floor = hi * n * torch.finfo(s.dtype).eps
    return _nan_where_zero(s, hi / torch.maximum(lo, floor))


# ----- circuits ----------------------------------------------------------------------------------
def circuit_singular_values(a: Tensor, b: Tensor) -> Tensor:
    r"""Nonzero-block singular values of :math:`A B^\top` for stacks ``a [..., D, r]``, ``b [..., D, r]``.

    By thin QR, :math:`A B^\top = Q_A (R_A R_B^\top) Q_B^\top` with orthonormal columns in ``Q_A, Q_B``,
    so :math:`\sigma(A B^\top)` are the singular values of the ``r × r`` core :math:`R_A R_B^\top`
    (padded by zeros to ``D``). One batched QR per factor and one batched ``svdvals``.

    Returns:
        ``[..., min(D, r)]``, descending: the possibly nonzero singular values of ``A Bᵀ``.
    """
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"factors must both be [..., D, r], got {list(a.shape)} and {list(b.shape)}")
    ra = torch.linalg.qr(a, mode="r").R  # [..., min(D, r), r]
    rb = torch.linalg.qr(b, mode="r").R  # [..., min(D, r), r]
    return torch.linalg.svdvals(ra @ rb.transpose(-1, -2))  # [..., min(D, r)]


# ----- per-head spectra ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HeadSpectra(Mapping):
    """Singular values and effective ranks of every head; a mapping ``(layer, head) -> {kind: σ}``.

    ``spectra[(layer, head)]`` is ``{"q", "k", "v", "o", "qk", "ov": singular values, descending}``;
    the ranks are reachable by name as ``[n_layers, n_heads]`` grids, e.g. ``spectra.stable_rank["qk"]``.

    Attributes:
        layers: Block indices, in the order of the grids' first axis.
        n_heads: Query heads per layer.
        d_head: Head dimension ``d_h``.
        d_model: Residual-stream width ``D``.
        singular_values: ``{kind: [n_layers, n_heads, r]}``, descending; ``r = min(D, d_h)`` for every kind
            (for ``qk`` and ``ov`` the remaining ``D - d_h`` singular values are zero).
        participation_ratio: ``{kind: [n_layers, n_heads]}``, :math:`(\\sum\\sigma)^2/\\sum\\sigma^2`.
        entropy_rank: ``{kind: [n_layers, n_heads]}``, :math:`\\exp H(\\sigma/\\sum\\sigma)`.
        stable_rank: ``{kind: [n_layers, n_heads]}``, :math:`\\lVert W\\rVert_F^2/\\lVert W\\rVert_2^2`.
        condition_number: ``{kind: [n_layers, n_heads]}``, floored (see :func:`condition_number`).
    """

    layers: list[int]
    n_heads: int
    d_head: int
    d_model: int
    singular_values: dict[str, Tensor]
    participation_ratio: dict[str, Tensor]
    entropy_rank: dict[str, Tensor]
    stable_rank: dict[str, Tensor]
    condition_number: dict[str, Tensor]

    def _index(self, key) -> tuple[int, int]:
        if not (isinstance(key, tuple) and len(key) == 2) or key[0] not in self.layers:
            raise KeyError(f"{key!r}: keys are (layer, head) with layer in {self.layers}")
        layer, head = key
        if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < self.n_heads:
            raise KeyError(f"{key!r}: head must be an int in [0, {self.n_heads})")
        return self.layers.index(layer), head

    def __getitem__(self, key) -> dict[str, Tensor]:
        i, h = self._index(key)
        return {kind: v[i, h] for kind, v in self.singular_values.items()}

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((lay, h) for lay in self.layers for h in range(self.n_heads))

    def __len__(self) -> int:
        return len(self.layers) * self.n_heads

    def ranks(self, layer: int, head: int) -> dict[str, dict[str, float]]:
        """``{measure: {kind: value}}`` of one head (``participation_ratio``, ``entropy_rank``, ...)."""
        i, h = self._index((layer, head))
        return {
            m: {kind: float(v[i, h]) for kind, v in getattr(self, m).items()}
            for m in ("participation_ratio", "entropy_rank", "stable_rank", "condition_number")
        }


def head_spectra(
    model: ModelAdapter | nn.Module,
    layers: Layer | Iterable[Layer] = "all",
    dtype: torch.dtype | None = None,
) -> HeadSpectra:
    r"""Singular values and effective ranks of ``W_Q, W_K, W_V, W_O, W_QK, W_OV`` of every head.

    ``W_QK = W_Q W_Kᵀ / √d_h`` and ``W_OV = W_V W_O`` (Elhage et al., 2021) through their ``d_h × d_h``
    QR cores (:func:`circuit_singular_values`); under grouped-query attention a query head's ``W_K``,
    ``W_V`` are its key/value head's. One batched ``svdvals`` per kind over all requested heads.

    Args:
        model: A supported model or its :class:`ModelAdapter` (its parameters are read, not changed).
        layers: Block indices or ``"all"``.
        dtype: Compute dtype; ``None`` = the weights' dtype, promoted to at least float32.

    Returns:
        :class:`HeadSpectra`.

    Raises:
        TypeError: For an unsupported model, one without attention modules, or a non-floating dtype.
        ValueError: For an unknown layer, or layers with different head counts.
    """
    stacks = stacked_heads(model, layers)
    first = next(iter(stacks.values()))
    if dtype is None:
        dtype = torch.promote_types(first.q.dtype, torch.float32)
    elif not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    shapes = {(s.n_heads, s.d_head, s.q.shape[1]) for s in stacks.values()}
    if len(shapes) > 1:
        raise ValueError(f"layers differ in (heads, d_head, D): {sorted(shapes)}; request them separately")
    n, dh, D = shapes.pop()

    def stack(part: str) -> Tensor:
        mats = []
        for s in stacks.values():
            m = getattr(s, part)
            if part in ("k", "v"):  # per query head: its key/value head
                m = m[torch.arange(n, device=m.device) // s.group]
            mats.append(m)
        return torch.stack(mats).detach().to(dtype).reshape(len(stacks) * n, *mats[0].shape[1:])

    W = {part: stack(part) for part in "qkvo"}  # q, k, v [N, D, dh]; o [N, dh, D]
    flat = {part: torch.linalg.svdvals(W[part]) for part in "qkvo"}  # [N, min(D, dh)]
    flat["qk"] = circuit_singular_values(W["q"], W["k"]) / math.sqrt(dh)
    flat["ov"] = circuit_singular_values(W["v"], W["o"].transpose(-1, -2))
    values = {kind: flat[kind].reshape(len(stacks), n, -1) for kind in KINDS}
    return HeadSpectra(
        layers=list(stacks),
        n_heads=n,
        d_head=dh,
        d_model=D,
        singular_values=values,
        participation_ratio={k: participation_ratio(v) for k, v in values.items()},
        entropy_rank={k: entropy_rank(v) for k, v in values.items()},
        stable_rank={k: stable_rank(v) for k, v in values.items()},
        condition_number={k: condition_number(v, max(D, dh)) for k, v in values.items()},
    )
