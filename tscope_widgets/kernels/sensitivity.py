r"""Position-to-position sensitivity: how much hidden state ``h_i`` moves with source activation ``e_j``.

For one sample, ``e ∈ R^{S×D}`` are the source activations (the token embeddings the model takes as
``inputs_embeds``, or the residual stream entering block ``source``) and ``h ∈ R^{S×H}`` the hidden
states of a target layer. With the Jacobian block :math:`J_{ij} = \partial h_i / \partial e_j \in R^{H×D}`
the per-sample statistic is

.. math::

    s_{ij} = \lVert J_{ij} \rVert_F^2 = \sum_{c=1}^{H} \sum_{d=1}^{D} (\partial h_{ic} / \partial e_{jd})^2

Samples do not interact, so one backward (or forward) pass with the same one-hot vector on every
sample of a batch yields that vector's Jacobian row (column) for all ``B`` samples at once:

- ``exact``, reverse mode: one VJP per output coordinate ``(layer, i, c)`` — ``L·S·H`` of them —
  each giving row ``J_{ic,·}`` and thus :math:`s_{ij} \mathrel{+}= \sum_d (J_{ic,jd})^2` for every ``j``.
- ``exact``, forward mode: one JVP per input coordinate ``(j, d)`` — ``S·D`` of them — each giving
  column ``J_{·,jd}`` of every requested layer at once.
- ``hutchinson``: ``K`` Rademacher probes per output (reverse) or input (forward) position instead
  of the ``H`` (``D``) one-hot vectors; unbiased, with a standard error.
- ``full``: the whole Jacobian at once (``jacrev``/``jacfwd``), for small inputs only.

Vectors are vmapped in chunks (``chunk_size``) so extra memory stays bounded. :func:`iter_sensitivity`
streams per-cell population statistics (:class:`~tscope_widgets.kernels.welford.WelfordState`) over a
data set, with a :class:`~tscope_widgets.kernels.reservoir.SampleReservoir` of per-sample maps.

Not offered: the seed document's single VJP with cotangent :math:`1/\sqrt{H}` on all ``H``
coordinates of position ``i``; it measures :math:`\lVert \mathbf{1}^\top J_{ij} \rVert^2 / H`, the norm
of the mean output direction, which is not :math:`\lVert J_{ij} \rVert_F^2` (they differ by the
off-diagonal terms of :math:`J_{ij} J_{ij}^\top`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import jacfwd, jacrev, jvp, vjp, vmap
from torch.utils.data import DataLoader

from ..models.adapter import LayerDict, ModelAdapter
from ..models.registry import adapt
from .reservoir import SampleReservoir
from .welford import WelfordState

Layer = int | str

__all__ = [
    "position_sensitivity",
    "iter_sensitivity",
    "SensitivitySnapshot",
    "CHUNK_MEMORY_BUDGET",
    "FULL_JACOBIAN_MAX_BYTES",
]

METHODS = ("exact", "hutchinson", "full")
MODES = ("auto", "reverse", "forward")
# Extra memory the automatic chunk size aims at (vmapped cotangents/tangents and what the
# batched backward/forward holds for them); an estimate, see `_vector_bytes`.
CHUNK_MEMORY_BUDGET = 256 * 2**20
# method="full" refuses when the Jacobian plus its basis vectors would need more than this.
FULL_JACOBIAN_MAX_BYTES = 256 * 2**20


# ======================================================================================
# position_sensitivity
# ======================================================================================
def position_sensitivity(
    adapter: ModelAdapter | torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    layers: Layer | Sequence[Layer] = (-1,),
    source: Layer = "embeddings",
    method: str = "exact",
    probes: int = 8,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    mode: str = "auto",
    squared: bool = True,
    return_stderr: bool = False,
) -> LayerDict | tuple[LayerDict, LayerDict]:
    r"""Per-sample sensitivity maps :math:`s_{ij} = \lVert \partial h_i / \partial e_j \rVert_F^2`.

    Runs on a private eval-mode copy of the model (``adapter.analysis(dtype)``); the user's model
    is never modified. One forward pass serves all requested layers.

    **exact** (reverse mode): per target layer, VJPs with one-hot cotangents at ``(i, c)``, the same
    for every sample (built once, expanded over the batch), vmapped in passes of at most
    ``chunk_size``; ``s[b, i, j] += Σ_d g[b, j, d]²``. ``S·H`` cotangents per layer and batch. On a
    causal model (``adapter.causal``) the hidden states of positions ``< p`` do not depend on later
    positions, so a pass whose last row is ``i`` differentiates the model run on the prefix
    ``e[:, :i+1]`` only; the rows of a layer are cut into ``G`` prefix groups (``info["prefix_groups"]``),
    which leaves about ``(G+1)/(2G)`` of the work.
    **exact** (forward mode): a JVP with one-hot tangents at ``(j, d)``;
    ``s[b, i, j] += Σ_c t[b, i, c]²`` for every layer at once. ``S·D`` tangents per batch.
    ``mode="auto"`` takes the mode with the lower estimated cost (:func:`choose_mode`): reverse
    unless many layers are requested.

    **hutchinson**: for Rademacher :math:`v \in \{\pm 1\}^H` (reverse, at output position ``i``)
    :math:`\mathbb{E}\lVert v^\top J_{ij} \rVert^2 = \mathrm{tr}(J_{ij}^\top \mathbb{E}[v v^\top] J_{ij})
    = \lVert J_{ij} \rVert_F^2`; likewise :math:`\lVert J_{ij} u \rVert^2` for :math:`u \in \{\pm 1\}^D`
    at input position ``j`` (forward), which serves every ``i`` at once. ``K`` probes per position
    (independent per sample): ``L·S·K`` VJPs or ``S·K`` JVPs. The estimate is the mean over probes.
    The variance of one probe is :math:`2(\lVert M \rVert_F^2 - \sum_k M_{kk}^2)` with
    :math:`M = J_{ij} J_{ij}^\top` (reverse) or :math:`J_{ij}^\top J_{ij}` (forward) — Hutchinson (1989);
    Avron & Toledo (2011) — so it vanishes when ``M`` is diagonal and grows with the off-diagonal mass.

    **full**: the whole Jacobian ``[B, L·S·H, S·D]`` via ``jacrev`` (reverse) or ``jacfwd`` (forward);
    refused above :data:`FULL_JACOBIAN_MAX_BYTES`. For tests and tiny inputs.

    Causal adapters (``adapter.causal``) get exact zeros for ``j > i`` (set, not computed; the
    model's causal mask makes them zero anyway). Cells where position ``i`` or ``j`` is padding
    (mask 0) are NaN.

    Args:
        adapter: A :class:`ModelAdapter` or a supported model (passed through ``adapt``).
        input_ids: ``[B, S]`` integer token ids.
        attention_mask: ``[B, S]`` 0/1 (1 = token), or ``None`` (no padding).
        layers: Target layer(s): ints (negative count from the end), ``"final"`` or ``"all"``;
            every one at or after the source block.
        source: ``"embeddings"`` (token embeddings) or a block index ``l`` (the residual stream
            entering block ``l``).
        method: ``"exact"``, ``"hutchinson"`` or ``"full"``.
        probes: ``K >= 1`` Hutchinson probes per position.
        chunk_size: Vectors per vmapped pass (``>= 1``); ``None`` picks the largest chunk whose
            estimated extra memory stays within :data:`CHUNK_MEMORY_BUDGET`. Peak memory grows
            linearly with it. Ignored by ``"full"``.
        dtype: Compute dtype; ``None`` = the model's dtype, promoted to at least float32.
        generator: ``torch.Generator`` for the Hutchinson probes (drawn on its device, then moved);
            ``None`` uses torch's global RNG.
        mode: ``"auto"``, ``"reverse"`` or ``"forward"``.
        squared: ``True`` for :math:`\lVert J_{ij} \rVert_F^2`, ``False`` for :math:`\lVert J_{ij} \rVert_F`
            (for Hutchinson, the square root of the estimate, which is biased low by Jensen).
        return_stderr: Hutchinson only (needs ``probes >= 2``): also return the standard error of the
            mean over probes (sample std / sqrt(K)); with ``squared=False`` propagated to the square
            root to first order (delta method).

    Returns:
        ``LayerDict {layer: Tensor[B, S, S]}`` (row ``i`` = target position, column ``j`` = source
        position) in the compute dtype on the model's device, keyed by canonical layer labels
        (negative ints also answer). Its ``.info`` dict records ``method``, ``mode``, ``num_passes``
        (vectors pushed through the model), ``chunk_size``, ``num_chunks`` (vmapped passes),
        ``largest_pass`` (vectors in the largest pass, ``<= chunk_size``),
        ``prefix_groups`` (causal prefix groups per layer in reverse mode, 1 = whole sequences),
        ``dtype`` and ``source``.
        With ``return_stderr=True``: ``(values, stderr)``, both such dicts.

    Raises:
        ValueError: unknown method/mode, ``probes < 1``, ``chunk_size < 1``, layers before the source,
            non-finite hidden states or sensitivities at non-padded positions, a ``"full"`` Jacobian
            over the memory limit, ``return_stderr`` without Hutchinson or with one probe.
        TypeError: bad argument types (ids, mask, dtype, generator).

    Example:
        >>> from tscope_widgets.models import TinyConfig, TinyTransformer
        >>> _ = torch.manual_seed(0)
        >>> model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=2)).double()
        >>> s = position_sensitivity(model, torch.tensor([[1, 2, 3]]), layers=[0, -1])
        >>> s[-1].shape, list(s), s.info["mode"], bool(s[0][0, 0, 1] == 0)
        (torch.Size([1, 3, 3]), [0, 1], 'reverse', True)

    References:
        Hutchinson, M. F. (1989). A stochastic estimator of the trace of the influence matrix for
        Laplacian smoothing splines. Commun. Stat. Simul. Comput. 18(3), 1059-1076.
        Avron, H. & Toledo, S. (2011). Randomized algorithms for estimating the trace of an implicit
        symmetric positive semi-definite matrix. J. ACM 58(2), 8.
    """
    _check_method_options(method, mode, probes, chunk_size)
    if not isinstance(return_stderr, bool) or not isinstance(squared, bool):
        raise TypeError("squared and return_stderr must be bools")
    if return_stderr and method != "hutchinson":
        raise ValueError(f"return_stderr applies to method='hutchinson' only; method={method!r} is exact")
    if return_stderr and probes < 2:
        raise ValueError(f"return_stderr needs probes >= 2 to estimate a spread, got probes={probes}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    model = analysis_adapter(adapter, dtype)
    input_ids, mask = model.check_inputs(input_ids, attention_mask)
    targets, src = _resolve_targets(model, layers, source)
    e = model.source_activations(input_ids, mask, src)  # [B, S, D]
    mode = choose_mode(
        method, mode, _depths(model, targets, src), e.shape[-1], model.d_model, probes, model.causal
    )
    problem = _Problem(model, e, mask, targets, src)

    if method == "full":
        values, stderr = _full_sensitivity(problem, mode), None
        n = problem.num_vectors(mode, None)
        info = {"num_passes": n, "chunk_size": n, "num_chunks": 1, "largest_pass": n, "prefix_groups": 1}
    else:
        K = probes if method == "hutchinson" else None
        values, stderr, info = _chunked_sensitivity(problem, mode, K, chunk_size, generator)

    values, stderr = _finish(problem, values, stderr, squared)
    info.update(method=method, mode=mode, dtype=str(e.dtype).removeprefix("torch."), source=src)
    out = _layer_dict(model, targets, values, info)
    if return_stderr:
        return out, _layer_dict(model, targets, stderr, info)
    return out


def analysis_adapter(adapter: ModelAdapter | torch.nn.Module, dtype: torch.dtype | None) -> ModelAdapter:
    """The private analysis copy of ``adapter`` in ``dtype`` (``None``: the model's, at least float32)."""
    adapter = adapt(adapter)
    if dtype is None:
        dtype = adapter.dtype if adapter.dtype.itemsize >= 4 else torch.float32
    elif not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float64, got {dtype!r}")
    return adapter.analysis(dtype)


# Cost of one JVP per block relative to one VJP per block on the full sequence (vmapped over many
# vectors, one CPU thread, GPT-2-shaped blocks: 1.8-2.2), and the share of that VJP work left on a causal
# model by prefix groups (about (G+1)/(2G)). See BENCHMARKS.md.
FORWARD_COST_RATIO = 2.0
CAUSAL_PREFIX_SHARE = 0.5


def choose_mode(
    method: str,
    mode: str,
    depths: Sequence[int],
    d_source: int,
    d_hidden: int,
    probes: int,
    causal: bool,
) -> str:
    """``"reverse"`` or ``"forward"``: ``mode`` itself, or for ``"auto"`` the cheaper one by estimate.

    Reverse mode runs each target layer separately: ``H`` (exact) or ``K`` (Hutchinson) VJPs per
    position through the ``depth`` blocks between the source and that layer, on causal prefixes
    (about half the sequence on average). Forward mode runs ``D`` or ``K`` JVPs per position
    through the deepest layer's blocks once for all layers, each
    :data:`FORWARD_COST_RATIO` times a VJP. So forward pays off for many layers (on a causal model,
    all layers of a model with more than about 7 blocks). Ties go to reverse.

    Args:
        depths: Blocks between the source and each target layer (``>= 1`` each).
    """
    if mode != "auto":
        return mode
    per_reverse, per_forward = (probes, probes) if method == "hutchinson" else (d_hidden, d_source)
    share = CAUSAL_PREFIX_SHARE if causal else 1.0
    reverse = sum(depths) * per_reverse * share
    forward = max(depths) * per_forward * FORWARD_COST_RATIO
    return "forward" if forward < reverse else "reverse"


def _depths(model: ModelAdapter, targets: Sequence[Layer], source: str | int) -> list[int]:
    """Blocks from the source to each target layer (``"final"`` counts as the last block)."""
    first = 0 if source == "embeddings" else source
    return [(model.num_layers - 1 if lay == "final" else lay) - first + 1 for lay in targets]


def _check_method_options(method: str, mode: str, probes: int, chunk_size: int | None) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    if isinstance(probes, bool) or not isinstance(probes, int):
        raise TypeError(f"probes must be an int, got {type(probes).__name__}")
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError(f"chunk_size must be an int or None, got {type(chunk_size).__name__}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 (or None for automatic), got {chunk_size}")


def _resolve_targets(model: ModelAdapter, layers, source) -> tuple[list[Layer], str | int]:
    targets = model.resolve_layers(layers)
    src = model.resolve_source(source)
    if src != "embeddings":
        early = [lay for lay in targets if lay != "final" and lay < src]
        if early:
            raise ValueError(
                f"target layers {early} come before source block {src}: a layer's output does not depend "
                f"on later blocks' inputs; use layers >= {src} or 'final'"
            )
    return targets, src


# ----- the function being differentiated ---------------------------------------------------------
@dataclass
class _Problem:
    """``target(e)``: the stacked hidden states ``[B, L·S, H]`` of all target layers, and the batched
    VJPs (one layer, a prefix of the sequence) and JVPs (all layers) that the chunked methods push."""

    model: ModelAdapter
    e: Tensor  # [B, S, D] source activations
    mask: Tensor | None  # [B, S] 0/1 or None
    layers: list[Layer]
    source: str | int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        B, S, D = self.e.shape
        return B, len(self.layers), S, D

    @property
    def hidden_size(self) -> int:
        return self.model.d_model

    def target(self, x: Tensor) -> Tensor:
        hs = self.model.forward_from_embeddings(x, self.mask, self.layers, self.source)
        if len(self.layers) == 1:
            return hs[self.layers[0]]  # [B, S, H]
        return torch.stack([hs[lay] for lay in self.layers], 1).flatten(1, 2)  # [B, L*S, H]

    def vjp_squared(self, layer: Layer, length: int, cot: Tensor) -> Tensor:
        """``Σ_d (g_{jd})²`` for ``g = cotᵀ ∂h/∂e`` of each cotangent, where ``h [B, P, H]`` is ``layer``'s
        output on the prefix ``e[:, :P]`` (``P = length``): ``cot [n, B, P, H] -> [n, B, P]``."""
        mask = None if self.mask is None else self.mask[:, :length]

        def hidden(x: Tensor) -> Tensor:
            return self.model.forward_from_embeddings(x, mask, [layer], self.source)[layer]

        _, vjp_fn = vjp(hidden, self.e[:, :length])
        (g,) = vmap(vjp_fn)(cot)  # [n, B, P, D]
        return g.square().sum(-1)

    def jvp_squared(self, tan: Tensor) -> Tensor:
        """``Σ_c (t_{lic})²`` for ``t = ∂h/∂e · tan`` of each tangent: ``tan [n, B, S, D] -> [n, B, L·S]``."""

        def tangent_out(t: Tensor) -> Tensor:
            return jvp(self.target, (self.e,), (t,))[1]

        return vmap(tangent_out)(tan).square().sum(-1)

    def num_vectors(self, mode: str, per_position: int | None) -> int:
        """Vectors per batch: per output row (reverse) or input position (forward) times the width."""
        B, L, S, D = self.shape
        if mode == "reverse":
            return L * S * (per_position or self.model.d_model)
        return S * (per_position or D)

    def check_hidden(self, h: Tensor) -> None:
        """Raise if hidden states ``h [B, L·S, H]`` are not finite at a non-padded position."""
        B, L, S, _ = self.shape
        bad = ~torch.isfinite(h).view(B, L, S, -1).all(-1)  # [B, L, S]
        if self.mask is not None:
            bad &= self.mask.bool()[:, None, :]
        if bad.any():
            layer = self.layers[int(bad.any(2).any(0).nonzero()[0])]
            raise ValueError(
                f"hidden states of layer {layer!r} are not finite at {int(bad.sum())} non-padded position(s) "
                f"in {self.e.dtype}; compute in float64 (dtype=torch.float64) or check the model's weights "
                "and inputs"
            )


# ----- chunked exact / Hutchinson ------------------------------------------------------------------
def _chunked_sensitivity(
    problem: _Problem, mode: str, K: int | None, chunk_size: int | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor | None, dict]:
    """``s [L, B, S, S]`` (and Hutchinson stderr) from passes of vmapped VJPs or JVPs.

    Work is organised in *lines*: output rows ``i`` of one target layer in reverse mode (``S`` lines
    of width ``H`` per layer), input positions ``j`` in forward mode (``S`` lines of width ``D``,
    serving all layers at once). A vector lives on one line; pushing it through the model gives, per
    sample, a squared norm for every cell of the line's counterpart (all ``j`` for a reverse line,
    all ``(l, i)`` for a forward line).
    """
    B, L, S, D = problem.shape
    with torch.no_grad():
        h = problem.target(problem.e)  # [B, L*S, H]
    problem.check_hidden(h)
    H = h.shape[-1]
    del h
    width = K if K is not None else (H if mode == "reverse" else D)
    chunk = min(chunk_size or _auto_chunk(problem.e, L, H, problem.model), S * width * L)
    if mode == "reverse":
        groups = _prefix_groups(problem, width) if problem.model.causal else 1
        plan = _PassPlan(S * width, chunk, groups)
        values, stderr = _reverse_sensitivity(problem, plan, width, K, generator)
        num_chunks = L * len(plan.bounds)
    else:
        groups, plan = 1, _PassPlan(S * width, chunk, 1)
        values, stderr = _forward_sensitivity(problem, plan, width, K, generator)
        num_chunks = len(plan.bounds)
    info = {
        "num_passes": L * S * width if mode == "reverse" else S * width,
        "chunk_size": chunk,
        "num_chunks": num_chunks,
        "largest_pass": max(b - a for a, b in plan.bounds),
        "prefix_groups": groups,
    }
    return values, stderr, info


@dataclass
class _PassPlan:
    """Cuts ``num_vectors`` vectors, in line order, into passes ``[a, b)`` of at most ``chunk``.

    At least ``min(groups, num_vectors)`` passes, of (nearly) equal size: with causal prefixes, more
    passes means shorter average prefixes (``(G+1)/(2G)`` of the full length for ``G`` passes) but
    more per-pass overhead.
    """

    num_vectors: int
    chunk: int
    groups: int = 1
    bounds: list[tuple[int, int]] = field(init=False)

    def __post_init__(self):
        n = self.num_vectors
        passes = max(-(-n // self.chunk), min(self.groups, n))
        edges = [n * k // passes for k in range(passes + 1)]
        self.bounds = list(itertools.pairwise(edges))


# Causal prefix groups. A pass costs a fixed overhead (a forward pass, graph set-up, some hundred
# vmapped kernel calls) plus work of about n·P·B·D² multiply-adds per block (n vectors, prefix length
# P, B samples, width D); more groups shorten the average prefix to (G+1)/(2G) of the sequence.
# Measured on one CPU thread (GPT-2-shaped blocks, D=64, S=16, B=1..32, see BENCHMARKS.md): the best G
# leaves about 2^25 of that work per pass; beyond 16 groups the saving is under 3%.
MIN_PASS_WORK = 2**25
MAX_PREFIX_GROUPS = 16


def _prefix_groups(problem: _Problem, width: int) -> int:
    """Prefix groups per layer ``G``: about :data:`MIN_PASS_WORK` of work per pass, ``1 <= G <=
    min(S, MAX_PREFIX_GROUPS)``."""
    B, _, S, D = problem.shape
    work = S * width * S * B * D * D  # one layer, all S·width vectors on the full sequence
    return max(1, min(MAX_PREFIX_GROUPS, S, work // MIN_PASS_WORK))


def _reverse_sensitivity(
    problem: _Problem, plan: _PassPlan, width: int, K: int | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor | None]:
    """Reverse mode: per target layer, cotangents on output rows ``i``, ``width`` per row.

    Vector ``v`` of a layer sits on row ``i = v // width``: coordinate ``c = v % width`` (exact,
    one-hot, the same for every sample, so built once and expanded over the batch) or probe
    ``k = v % width`` (Hutchinson, Rademacher signs per sample). On a causal model, ``h_i`` depends
    only on ``e_{≤i}`` and the hidden states of positions ``< p`` do not depend on later positions, so
    a pass whose last row is ``i`` runs the VJP through the prefix ``[:, :i+1]`` only. (Positions are
    ``0..p-1`` in the prefix as in the full sequence for learned and rotary positions, with left or
    right padding; tests compare every causal adapter against the dense full-sequence Jacobian.)
    """
    B, L, S, D = problem.shape
    e = problem.e
    dev, dtype = e.device, e.dtype
    acc = e.new_zeros(L, S, B, S) if K is None else e.new_zeros(L, S * K, B, S)  # rows or (row, probe)
    for k, layer in enumerate(problem.layers):
        signs = None if K is None else _rademacher_bits((S * K, B, problem.hidden_size), generator)
        for a, b in plan.bounds:
            n = b - a
            v = torch.arange(a, b, device=dev)
            rows = v // width
            p = (b - 1) // width + 1 if problem.model.causal else S  # last row + 1
            if K is None:
                cot = torch.zeros(n, 1, p, width, dtype=dtype, device=dev)
                cot[torch.arange(n, device=dev), 0, rows, v % width] = 1
                cot = cot.expand(n, B, p, width)
            else:
                cot = torch.zeros(n, B, p, problem.hidden_size, dtype=dtype, device=dev)
                cot[torch.arange(n, device=dev), :, rows, :] = (2 * signs[a:b] - 1).to(dev, dtype)
            out = problem.vjp_squared(layer, p, cot)  # [n, B, p]
            if K is None:
                acc[k, :, :, :p].index_add_(0, rows, out)
            else:
                acc[k, a:b, :, :p] = out
    if K is None:
        return acc.permute(0, 2, 1, 3), None  # [L, B, S_i, S_j]
    var, mean = torch.var_mean(acc.view(L, S, K, B, S), dim=2, correction=1 if K > 1 else 0)
    stderr = (var / K).sqrt() if K > 1 else torch.full_like(mean, float("nan"))
    return mean.permute(0, 2, 1, 3), stderr.permute(0, 2, 1, 3)


def _forward_sensitivity(
    problem: _Problem, plan: _PassPlan, width: int, K: int | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor | None]:
    """Forward mode: tangents on input positions ``j``, ``width`` per position, all layers at once.

    Vector ``v`` sits on position ``j = v // width``: coordinate ``d = v % width`` (exact, one-hot,
    expanded over the batch) or probe ``k`` (Hutchinson). ``s[b, l, i, j] += Σ_c t[b, l, i, c]²``.
    """
    B, L, S, D = problem.shape
    e = problem.e
    dev, dtype = e.device, e.dtype
    acc = e.new_zeros(S, B, L * S) if K is None else e.new_zeros(S * K, B, L * S)
    signs = None if K is None else _rademacher_bits((S * K, B, D), generator)
    for a, b in plan.bounds:
        n = b - a
        v = torch.arange(a, b, device=dev)
        cols = v // width
        if K is None:
            tan = torch.zeros(n, 1, S, D, dtype=dtype, device=dev)
            tan[torch.arange(n, device=dev), 0, cols, v % width] = 1
            tan = tan.expand(n, B, S, D)
        else:
            tan = torch.zeros(n, B, S, D, dtype=dtype, device=dev)
            tan[torch.arange(n, device=dev), :, cols, :] = (2 * signs[a:b] - 1).to(dev, dtype)
        out = problem.jvp_squared(tan)  # [n, B, L*S]
        if K is None:
            acc.index_add_(0, cols, out)
        else:
            acc[a:b] = out
    if K is None:
        return acc.view(S, B, L, S).permute(2, 1, 3, 0), None  # [L, B, S_i, S_j]
    var, mean = torch.var_mean(acc.view(S, K, B, L * S), dim=1, correction=1 if K > 1 else 0)
    stderr = (var / K).sqrt() if K > 1 else torch.full_like(mean, float("nan"))

    def layout(x: Tensor) -> Tensor:
        return x.view(S, B, L, S).permute(2, 1, 3, 0)

    return layout(mean), layout(stderr)


def _rademacher_bits(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Uniform ``{0, 1}`` int8 bits of ``shape``, drawn on the generator's device (CPU by default);
    the signs are ``2·bits − 1``."""
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, 2, shape, generator=generator, device=dev, dtype=torch.int8)


def _line_layout(acc: Tensor, L: int, B: int, S: int) -> Tensor:
    """Per-row results ``[L·S_i, B, S_j]`` -> ``[L, B, S_i, S_j]``."""
    return acc.view(L, S, B, S).permute(0, 2, 1, 3)


def _auto_chunk(e: Tensor, L: int, H: int, model: ModelAdapter) -> int:
    return max(1, CHUNK_MEMORY_BUDGET // _vector_bytes(e, L, H, model))


def _vector_bytes(e: Tensor, L: int, H: int, model: ModelAdapter) -> int:
    """Estimated memory per vmapped vector: its cotangent/tangent outputs ``B·S·L·H``, the gradient
    ``B·S·D``, a few ``B·S·4·max(D, H)`` MLP-sized intermediates and ``B·heads·S²`` attention maps."""
    B, S, D = e.shape
    heads = _num_heads(model)
    elements = B * S * (L * H + D + 8 * max(D, H) + 2 * heads * S)
    return elements * e.element_size()


def _num_heads(model: ModelAdapter) -> int:
    config = getattr(model.model, "config", None)
    for name in ("n_head", "num_attention_heads"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1


# ----- full Jacobian ------------------------------------------------------------------------------
def _full_sensitivity(problem: _Problem, mode: str) -> Tensor:
    """``s [L, B, S, S]`` from the materialised per-sample Jacobian (samples do not interact).

    Reverse: ``jacrev`` of the batch-summed outputs gives ``[L·S, H, B, S, D]``. Forward: ``jacfwd``
    of a perturbation ``δ [S, D]`` shared by all samples gives ``[B, L·S, H, S, D]``.
    """
    B, L, S, D = problem.shape
    e = problem.e
    H = problem.model.d_model
    n_vec = problem.num_vectors(mode, None)
    needed = e.element_size() * n_vec * B * S * (L * H + D)
    if needed > FULL_JACOBIAN_MAX_BYTES:
        raise ValueError(
            f"method='full' would materialise a Jacobian of about {needed / 2**20:.0f} MiB "
            f"(B={B}, S={S}, D={D}, H={H}, {L} layer(s), {e.dtype}), over the "
            f"{FULL_JACOBIAN_MAX_BYTES / 2**20:.0f} MiB limit; use method='exact', which computes the same "
            "numbers in bounded-memory chunks"
        )
    with torch.no_grad():
        problem.check_hidden(problem.target(e))
    if mode == "reverse":
        jac = jacrev(lambda x: problem.target(x).sum(0))(e)  # [L*S, H, B, S, D]
        s = jac.square().sum((1, 4))  # [L*S, B, S_j]
    else:
        jac = jacfwd(lambda d: problem.target(e + d))(torch.zeros_like(e[0]))  # [B, L*S, H, S, D]
        s = jac.square().sum((2, 4)).transpose(0, 1)  # [L*S, B, S_j]
    return _line_layout(s, L, B, S)


# ----- result ------------------------------------------------------------------------------------
def _finish(
    problem: _Problem, values: Tensor, stderr: Tensor | None, squared: bool
) -> tuple[Tensor, Tensor | None]:
    """Causal zeros, NaN at padding, finiteness check and the optional square root; ``[L, B, S, S]``."""
    B, L, S, _ = problem.shape
    values = values.contiguous()
    if problem.model.causal:
        future = torch.ones(S, S, dtype=torch.bool, device=values.device).triu(1)  # j > i
        values = values.masked_fill(future, 0.0)
        stderr = None if stderr is None else stderr.masked_fill(future, 0.0)
    if problem.mask is not None:
        real = problem.mask.bool()
        padded = ~(real[:, :, None] & real[:, None, :])  # [B, S, S]
    else:
        padded = torch.zeros(B, S, S, dtype=torch.bool, device=values.device)
    bad = ~torch.isfinite(values) & ~padded
    if bad.any():
        layer = problem.layers[int(bad.flatten(1).any(1).nonzero()[0])]
        raise ValueError(
            f"sensitivity of layer {layer!r} is not finite in {int(bad.sum())} non-padded cell(s) "
            f"({values.dtype}); compute in float64 (dtype=torch.float64) or check the model"
        )
    values = values.masked_fill(padded, float("nan"))
    if stderr is not None:
        stderr = stderr.masked_fill(padded, float("nan"))
    if not squared:
        root = values.sqrt()
        if stderr is not None:  # delta method: se(sqrt(x)) ≈ se(x) / (2 sqrt(x))
            stderr = torch.where(stderr == 0, stderr, stderr / (2 * root))
        values = root
    return values, stderr


def _layer_dict(model: ModelAdapter, layers: list[Layer], values: Tensor, info: dict) -> LayerDict:
    out = LayerDict({lay: values[k].clone() for k, lay in enumerate(layers)}, num_layers=model.num_layers)
    out.info = dict(info)
    return out


# ======================================================================================
# iter_sensitivity
# ======================================================================================
@dataclass
class SensitivitySnapshot:
    """Population statistics of sensitivity maps after some batches; one per batch.

    A snapshot owns copies of its statistics and reservoir, so later batches do not change it.

    Attributes:
        stats: ``LayerDict {layer: WelfordState}`` over samples, cell grid ``[S_max, S_max]``,
            float64 on the CPU; padded cells are excluded, so counts differ per cell.
        done: Samples processed so far (whole data set positions, including resumed ones).
        total: Samples in the data set when known, else ``None``.
        batches: Batches processed so far.
        layers: Canonical target layer labels.
        method: ``"exact"``, ``"hutchinson"`` or ``"full"``.
        mode: ``"reverse"`` or ``"forward"`` (resolved).
        seq_len: ``S_max``, the size of the cell grid.
        reservoir: :class:`SampleReservoir` of per-sample maps, including the last batch's samples
            while it is filling.
        source: ``"embeddings"`` or the source block index.
        probes: Hutchinson probes per position (recorded for every method).
        batch_size: Samples per batch requested (resuming with another value changes rounding).
        seed: Seed of the probe and reservoir generators.
        probe_rng: ``uint8`` state of the probe generator after this batch.
    """

    stats: LayerDict
    done: int
    total: int | None
    batches: int
    layers: list[Layer]
    method: str
    mode: str
    seq_len: int
    reservoir: SampleReservoir
    source: str | int = "embeddings"
    probes: int = 8
    batch_size: int = 8
    seed: int = 0
    probe_rng: Tensor = field(default_factory=lambda: torch.Generator().get_state())

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors for a checkpoint: ``stats.<layer>.<key>``, ``reservoir.<key>`` and ``probe_rng``."""
        out: dict[str, Tensor] = {}
        for layer, state in self.stats.items():
            out.update({f"stats.{layer}.{k}": v for k, v in state.state_dict().items()})
        out.update({f"reservoir.{k}": v for k, v in self.reservoir.state_dict().items()})
        out["probe_rng"] = self.probe_rng.clone()
        return out

    def meta(self) -> dict[str, Any]:
        """JSON-serialisable description: counters and the settings a resume must match."""
        return {
            "kernel": "sensitivity",
            "done": self.done,
            "total": self.total,
            "batches": self.batches,
            "layers": list(self.layers),
            "method": self.method,
            "mode": self.mode,
            "seq_len": self.seq_len,
            "source": self.source,
            "probes": self.probes,
            "batch_size": self.batch_size,
            "reservoir_size": self.reservoir.capacity,
            "seed": self.seed,
        }


def iter_sensitivity(
    adapter: ModelAdapter | torch.nn.Module,
    data,
    *,
    layers: Layer | Sequence[Layer] = (-1,),
    method: str = "exact",
    batch_size: int = 8,
    max_seq_len: int | None = None,
    tokenizer=None,
    source: Layer = "embeddings",
    probes: int = 8,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    mode: str = "auto",
    reservoir_size: int = 32,
    seed: int = 0,
    resume=None,
) -> Iterator[SensitivitySnapshot]:
    """Stream per-cell statistics of :func:`position_sensitivity` maps over a data set.

    Each batch's maps ``[B, S_b, S_b]`` are padded with NaN to ``[B, S_max, S_max]`` and folded into
    one :class:`WelfordState` per layer (NaN cells masked out), and offered to a
    :class:`SampleReservoir`. One :class:`SensitivitySnapshot` is yielded per batch.

    Data:
        - an id tensor ``[N, S]``, a tuple ``(ids, mask)`` or a dict with ``input_ids`` and optional
          ``attention_mask``: cut into batches of ``batch_size``; ``S_max = min(S, max_seq_len)``.
        - a list of strings with ``tokenizer`` (a Hugging Face tokenizer with a pad token): each
          batch is padded on the right to its longest text and truncated to ``max_seq_len``;
          ``S_max`` = the longest tokenized text (capped at ``max_seq_len``).
        - any other iterable of batches (e.g. a ``DataLoader``): dicts with ``input_ids`` and
          optional ``attention_mask``, or id tensors; ``S_max = max_seq_len``, or the first batch's
          length without it (a longer later batch is then an error). Longer batches are truncated.

    Resume: pass the ``Checkpoint`` (``.tensors``: :meth:`SensitivitySnapshot.state_dict`, ``.meta``:
    :meth:`SensitivitySnapshot.meta`) of an earlier run over the same data. Statistics, reservoir,
    probe generator and counters are restored and the first ``done`` samples (an iterable of
    batches: the first ``batches`` batches) are skipped; with the same ``batch_size`` the result is
    bit-identical to an uninterrupted run. A checkpoint of a finished run yields its snapshot again.

    Args:
        adapter: Model or :class:`ModelAdapter`; analysed on a private copy.
        data: See above.
        layers, source, method, probes, chunk_size, dtype, mode: As in :func:`position_sensitivity`
            (the mode is resolved once for the whole run).
        batch_size: Samples per batch (``>= 1``) for tensors and strings.
        max_seq_len: Truncation length (``>= 1``) and, for iterables of batches, ``S_max``.
        tokenizer: Hugging Face tokenizer, required for strings.
        reservoir_size: Capacity of the reservoir (``>= 0``).
        seed: Seeds the Hutchinson probes (``seed``) and the reservoir (``seed + 1``).
        resume: A ``Checkpoint`` or ``None``.

    Returns:
        A generator of :class:`SensitivitySnapshot`; ``total`` is the number of samples when known.

    Raises:
        ValueError: empty data, bad sizes, a checkpoint from different settings, plus everything
            :func:`position_sensitivity` raises (when the generator runs).
        TypeError: unsupported data, strings without a tokenizer.
    """
    _check_method_options(method, mode, probes, chunk_size)
    for name, value, low in (("batch_size", batch_size, 1), ("reservoir_size", reservoir_size, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if max_seq_len is not None and (
        isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 1
    ):
        raise ValueError(f"max_seq_len must be an int >= 1 or None, got {max_seq_len!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    model = analysis_adapter(adapter, dtype)
    targets, src = _resolve_targets(model, layers, source)
    mode = choose_mode(
        method, mode, _depths(model, targets, src), model.d_model, model.d_model, probes, model.causal
    )
    stream = _batch_stream(data, batch_size, max_seq_len, tokenizer)
    run = _Run(
        model, stream, targets, src, method, mode, probes, chunk_size, batch_size, reservoir_size, seed
    )
    if resume is not None:
        run.restore(resume)
    return run.snapshots()


@dataclass
class _BatchStream:
    """Batches ``(ids [B, S_b], mask [B, S_b] | None)`` of a data set, resumable at a sample or batch."""

    batches: Callable[[int, int], Iterator[tuple[Tensor, Tensor | None]]]  # (skip_samples, skip_batches)
    total: int | None
    seq_len: int | None  # None: the first batch's length


def _batch_stream(data, batch_size: int, max_seq_len: int | None, tokenizer) -> _BatchStream:
    if isinstance(data, Mapping) and "input_ids" not in data:
        raise ValueError(
            f"a dict of data needs 'input_ids' (and optionally 'attention_mask'), got keys {list(data)}"
        )
    if (
        isinstance(data, Tensor)
        or (isinstance(data, tuple) and data and isinstance(data[0], Tensor))
        or (isinstance(data, Mapping) and "input_ids" in data)
    ):
        ids, mask = _id_tensors(data)
        N, S = ids.shape
        if N == 0 or S == 0:
            raise ValueError(f"data is empty: input_ids has shape {tuple(ids.shape)}")

        def tensor_batches(skip: int, _: int):
            for a in range(skip, N, batch_size):
                yield ids[a : a + batch_size], None if mask is None else mask[a : a + batch_size]

        return _BatchStream(tensor_batches, N, S if max_seq_len is None else min(S, max_seq_len))
    if isinstance(data, str):
        raise TypeError("data is a single string; pass a list of strings (with tokenizer=...)")
    if isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data):
        return _string_stream(list(data), batch_size, max_seq_len, tokenizer)
    if isinstance(data, (list, tuple)) and not data:
        raise ValueError("data is empty")
    if not isinstance(data, Iterable):
        raise TypeError(
            f"unsupported data of type {type(data).__name__}: pass an id tensor [N, S], (ids, mask), a dict "
            "with input_ids, a list of strings with a tokenizer, or an iterable of batches"
        )

    def iterable_batches(_: int, skip: int):
        for batch in itertools.islice(iter(data), skip, None):
            yield _batch_tensors(batch)

    return _BatchStream(iterable_batches, _known_samples(data), max_seq_len)


def _id_tensors(data) -> tuple[Tensor, Tensor | None]:
    if isinstance(data, Tensor):
        ids, mask = data, None
    elif isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(f"a tuple of data must be (input_ids, attention_mask), got {len(data)} items")
        ids, mask = data
    else:
        ids, mask = data["input_ids"], data.get("attention_mask")
    if not isinstance(ids, Tensor) or ids.ndim != 2:
        raise ValueError(
            f"input_ids must be a tensor [N, S], got {getattr(ids, 'shape', type(ids).__name__)}"
        )
    if mask is not None and (not isinstance(mask, Tensor) or mask.shape != ids.shape):
        raise ValueError(f"attention_mask must be a tensor of input_ids' shape {tuple(ids.shape)}")
    return ids, mask


def _batch_tensors(batch) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping) and "input_ids" in batch:
        return batch["input_ids"], batch.get("attention_mask")
    raise TypeError(
        f"each batch must be an id tensor [B, S] or a dict with 'input_ids' (and 'attention_mask'), "
        f"got {type(batch).__name__}"
    )


def _known_samples(data) -> int | None:
    """Samples in a ``DataLoader`` with a sized dataset and a fixed batch size; else ``None``."""
    dataset, bs = getattr(data, "dataset", None), getattr(data, "batch_size", None)
    if isinstance(data, DataLoader) and bs and hasattr(dataset, "__len__"):
        n = len(dataset)
        return n - n % bs if data.drop_last else n
    return None


def _string_stream(texts: list[str], batch_size: int, max_seq_len: int | None, tokenizer) -> _BatchStream:
    if tokenizer is None:
        raise TypeError(
            "data is a list of strings: pass tokenizer=<a Hugging Face tokenizer> to turn it into ids"
        )
    if getattr(tokenizer, "pad_token", None) is None:
        raise ValueError(
            "the tokenizer has no pad token; set one, e.g. tokenizer.pad_token = tokenizer.eos_token"
        )
    trunc = {"truncation": True, "max_length": max_seq_len} if max_seq_len else {}
    longest = max(len(ids) for ids in tokenizer(texts, **trunc)["input_ids"])
    if longest == 0:
        raise ValueError("every text tokenizes to zero tokens")

    def string_batches(skip: int, _: int):
        for a in range(skip, len(texts), batch_size):
            enc = tokenizer(
                texts[a : a + batch_size],
                padding="longest",
                padding_side="right",
                return_tensors="pt",
                **trunc,
            )
            yield enc["input_ids"], enc.get("attention_mask")

    return _BatchStream(string_batches, len(texts), longest)


class _Run:
    """The state of one :func:`iter_sensitivity` run: statistics, reservoir, generator, counters."""

    def __init__(
        self,
        model,
        stream,
        layers,
        source,
        method,
        mode,
        probes,
        chunk_size,
        batch_size,
        reservoir_size,
        seed,
    ):
        self.model, self.stream, self.layers, self.source = model, stream, layers, source
        self.method, self.mode, self.probes, self.chunk_size = method, mode, probes, chunk_size
        self.batch_size, self.reservoir_size, self.seed = batch_size, reservoir_size, seed
        self.seq_len = stream.seq_len
        self.generator = torch.Generator().manual_seed(seed)
        self.stats: LayerDict | None = None
        self.reservoir: SampleReservoir | None = None
        self.done = self.batches = 0
        self.resumed = False
        if self.seq_len is not None:
            self._allocate(self.seq_len)

    def _allocate(self, seq_len: int) -> None:
        self.seq_len = seq_len
        self.stats = LayerDict(
            {lay: WelfordState((seq_len, seq_len)) for lay in self.layers}, num_layers=self.model.num_layers
        )
        self.reservoir = SampleReservoir(self.reservoir_size, seq_len, self.layers, seed=self.seed + 1)

    def restore(self, checkpoint) -> None:
        tensors, meta = getattr(checkpoint, "tensors", None), getattr(checkpoint, "meta", None)
        if not isinstance(tensors, Mapping) or not isinstance(meta, Mapping):
            raise TypeError(
                f"resume must be a Checkpoint with .tensors and .meta, got {type(checkpoint).__name__}"
            )
        if meta.get("kernel") != "sensitivity":
            raise ValueError(f"resume checkpoint is from kernel {meta.get('kernel')!r}, not 'sensitivity'")
        want = {
            "layers": self.layers,
            "method": self.method,
            "mode": self.mode,
            "source": self.source,
            "reservoir_size": self.reservoir_size,
            "seed": self.seed,
        }
        if self.method == "hutchinson":
            want["probes"] = self.probes
        if self.seq_len is not None:
            want["seq_len"] = self.seq_len
        for key, value in want.items():
            if meta.get(key) != value:
                raise ValueError(
                    f"resume checkpoint was made with {key}={meta.get(key)!r}; this run has {value!r}"
                )
        self._allocate(int(meta["seq_len"]))
        for lay in self.layers:
            prefix = f"stats.{lay}."
            self.stats[lay] = WelfordState.from_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, device="cpu"
            )
        self.reservoir.load_state_dict(
            {k[len("reservoir.") :]: v for k, v in tensors.items() if k.startswith("reservoir.")}
        )
        self.generator.set_state(tensors["probe_rng"].to("cpu", torch.uint8))
        self.done, self.batches = int(meta["done"]), int(meta["batches"])
        self.resumed = True

    def snapshots(self) -> Iterator[SensitivitySnapshot]:
        started = False
        for ids, mask in self.stream.batches(self.done, self.batches):
            started = True
            self._step(ids, mask)
            yield self._snapshot()
        if not started:
            if not self.resumed:
                raise ValueError("data is empty: it yielded no batches")
            yield self._snapshot()

    def _step(self, ids: Tensor, mask: Tensor | None) -> None:
        if not isinstance(ids, Tensor) or ids.ndim != 2:
            raise ValueError(
                f"a batch's input_ids must be a tensor [B, S], got "
                f"{getattr(ids, 'shape', type(ids).__name__)}"
            )
        if self.seq_len is None:
            self._allocate(ids.shape[1])
        if ids.shape[1] > self.seq_len:
            if self.stream.seq_len is None:
                raise ValueError(
                    f"batch {self.batches} has length {ids.shape[1]} > {self.seq_len} (the first batch's); "
                    "pass max_seq_len to fix the statistics' size (longer batches are then truncated)"
                )
            ids, mask = ids[:, : self.seq_len], None if mask is None else mask[:, : self.seq_len]
        maps = position_sensitivity(
            self.model,
            ids,
            mask,
            layers=self.layers,
            source=self.source,
            method=self.method,
            probes=self.probes,
            chunk_size=self.chunk_size,
            mode=self.mode,
            generator=self.generator,
        )
        B, S_b = ids.shape
        pad = self.seq_len - S_b
        for lay in self.layers:
            x = torch.nn.functional.pad(
                maps[lay].detach().to("cpu", torch.float64), (0, pad, 0, pad), value=float("nan")
            )  # [B, S_max, S_max]
            valid = torch.isfinite(x)
            self.stats[lay].update(torch.where(valid, x, 0.0), mask=valid)
        self.reservoir.add(ids, None if mask is None else mask.bool(), maps)
        self.done += B
        self.batches += 1

    def _snapshot(self) -> SensitivitySnapshot:
        stats = LayerDict(
            {lay: st.clone() for lay, st in self.stats.items()}, num_layers=self.model.num_layers
        )
        return SensitivitySnapshot(
            stats=stats,
            done=self.done,
            total=self.stream.total,
            batches=self.batches,
            layers=list(self.layers),
            method=self.method,
            mode=self.mode,
            seq_len=self.seq_len,
            reservoir=self.reservoir.copy(),
            source=self.source,
            probes=self.probes,
            batch_size=self.batch_size,
            seed=self.seed,
            probe_rng=self.generator.get_state(),
        )
