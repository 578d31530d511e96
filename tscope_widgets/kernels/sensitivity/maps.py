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

from collections.abc import Sequence

import torch
from torch import Tensor

from ...models.adapter import LayerDict, ModelAdapter
from ...models.registry import adapt
from .passes import _chunked_sensitivity, _full_sensitivity, _Problem

Layer = int | str

__all__ = ["position_sensitivity", "analysis_adapter", "choose_mode", "Layer", "METHODS", "MODES"]

METHODS = ("exact", "hutchinson", "full")
MODES = ("auto", "reverse", "forward")


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
    is never modified, and hooks registered on its modules are not run (the copy has none: a hook that
    calls ``.numpy()`` would fail inside the transforms, one that edits outputs would change the maps).
    One forward pass serves all requested layers.

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
        method: ``"exact"`` or ``"hutchinson"`` (``"full"`` has no mode).
        mode: ``"auto"``, ``"reverse"`` or ``"forward"``.
        depths: Blocks between the source and each target layer (``>= 1`` each).
        d_source: Width ``D`` of the source (the vectors per position of an exact forward pass).
        d_hidden: Width ``H`` of the target layers (the vectors per position of an exact reverse pass).
        probes: Hutchinson probes ``K`` per position.
        causal: Whether the model is causal (reverse passes then run on prefixes).
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


