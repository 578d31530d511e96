r"""Directions in parameter space: Gaussian, checkpoint differences, Hessian eigenvectors; one dispatcher.

A :data:`~.state.Direction` is a ``dict[str, Tensor]`` keyed by the names of ``model.named_parameters()``
(a tied weight appears once, under its first name), each tensor with its parameter's shape.

- :func:`random_direction`: Gaussian, with filter normalization (Li, Xu, Taylor, Studer & Goldstein,
  2018), so that slices of networks with different weight scales are comparable;
- :func:`eigen_directions`: extreme eigenvectors of the Hessian (unit norm);
- :func:`checkpoint_direction`: ``b - a`` between two checkpoints (Goodfellow, Vinyals & Saxe, 2015);
- :func:`~.trajectory.pca_directions`: the top principal directions of a training trajectory.

:func:`make_directions` builds one direction (a line) or two (a plane) of any of these kinds by name
(:data:`DIRECTION_KINDS`), the way the landscape widget and ``tscope run`` ask for them.

References:
    Li, H., Xu, Z., Taylor, G., Studer, C. & Goldstein, T. (2018). Visualizing the Loss Landscape of
    Neural Nets. NeurIPS 2018.
    Goodfellow, I. J., Vinyals, O. & Saxe, A. M. (2015). Qualitatively characterizing neural network
    optimization problems. ICLR 2015.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ...models.adapter import ModelAdapter
from ...models.head_groups import param_groups_with_heads
from ...models.registry import adapt
from ..curvature import HessianOperator
from ..lanczos import lanczos
from .state import Direction, ModelState, _as_module, _float_dtype, _resolve_keys, _StateReader, direction_norm
from .trajectory import pca_directions

__all__ = [
    "DIRECTION_KINDS",
    "DirectionSet",
    "make_directions",
    "random_direction",
    "eigen_directions",
    "checkpoint_direction",
]

NORMALIZATIONS = ("filter", "layer", "none")
# What make_directions builds by name.
DIRECTION_KINDS = ("random", "eigen", "pca", "checkpoints")


def random_direction(
    adapter: ModelAdapter | nn.Module,
    *,
    normalization: str = "filter",
    ignore: Sequence[str] = ("bias", "norm"),
    generator: torch.Generator | None = None,
) -> Direction:
    r"""A Gaussian direction in parameter space, filter-normalized as in Li et al. (2018).

    Every entry is drawn from :math:`\mathcal N(0, 1)`, then rescaled per parameter tensor:

    - ``"filter"``: each filter :math:`d_{i}` is scaled to the norm of the corresponding filter of the
      weight, :math:`d_{i} \leftarrow d_{i}\, \lVert \theta_{i} \rVert / \lVert d_{i} \rVert`. This removes the
      scale invariance of ReLU/normalized networks from the picture (Li et al., sec. 4).
    - ``"layer"``: the whole tensor is scaled to the tensor's norm.
    - ``"none"``: the raw Gaussian.

    Filters (output units): index ``i`` along dim 0 for ``nn.Linear`` weights ``[out, in]``, for every
    weight with more than two dimensions (flattening the rest, as a conv filter), and for embeddings
    ``[V, D]``, whose filters are the per-token vectors (a tied LM head ``[V, D]`` agrees: row ``v`` is the
    logit unit of token ``v``). GPT-2's ``Conv1D`` stores its weight as ``[in, out]`` (recognised as a
    module of class ``Conv1D`` with ``nf`` output features), so its filters are the columns, dim 1; the
    fused ``c_attn`` ``[D, 3D]`` then normalizes each query, key and value unit by itself. A one-dimensional
    parameter that is not ignored is one filter (scaled to its norm as a whole).

    A filter of the weight that is all zero gets a zero direction filter (no division by zero, where the
    ``loss-landscapes`` package raises ``ZeroDivisionError``).

    ``ignore`` sets the direction of some parameters to zero, as Li et al. do for biases and BatchNorm:
    ``"bias"`` matches one-dimensional parameters whose own name (after the last dot) contains ``bias``;
    ``"norm"`` matches one-dimensional parameters of normalization modules (class name containing ``Norm``:
    LayerNorm, RMSNorm, GroupNorm, BatchNorm gains and shifts); any other string matches parameters whose
    full name contains it (e.g. ``"wpe"`` holds learned positions fixed).

    Args:
        adapter: A model or :class:`ModelAdapter`; its parameters are read, never modified.
        normalization: ``"filter"``, ``"layer"`` or ``"none"``.
        ignore: Names of parameter kinds to hold fixed (zero direction), see above.
        generator: ``torch.Generator`` for the draws (drawn on its device, then moved to the
            parameter's); ``None`` uses torch's global RNG.

    Returns:
        :data:`Direction`: ``{name: Tensor}`` with each parameter's shape and device, in the
        parameter's dtype promoted to at least float32.

    Raises:
        ValueError: An unknown normalization.
        TypeError: Bad types of ``ignore`` or ``generator``.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}; expected one of {NORMALIZATIONS}")
    if isinstance(ignore, str):
        ignore = (ignore,)
    if not all(isinstance(s, str) for s in ignore):
        raise TypeError(f"ignore must be a sequence of strings such as ('bias', 'norm'), got {ignore!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    module = _as_module(adapter)
    owners = {}
    for _, mod in module.named_modules():
        for leaf, p in mod.named_parameters(recurse=False):
            owners.setdefault(id(p), (mod, leaf))
    out: Direction = {}
    for name, p in module.named_parameters():
        owner, leaf = owners[id(p)]
        dtype = _float_dtype(p.dtype)
        if _ignored(name, leaf, p, owner, ignore):
            out[name] = torch.zeros(p.shape, dtype=dtype, device=p.device)
            continue
        draw_device = generator.device if generator is not None else p.device
        d = torch.randn(p.shape, generator=generator, dtype=dtype, device=draw_device).to(p.device)
        w = p.detach().to(dtype)
        if normalization == "filter":
            d = _normalize_filters(d, w, _filter_axis(owner, leaf, p))
        elif normalization == "layer":
            d = _normalize_filters(d.reshape(1, -1), w.reshape(1, -1), 0).reshape(p.shape)
        out[name] = d
    return out


def _ignored(name: str, leaf: str, p: Tensor, owner: nn.Module, ignore: Sequence[str]) -> bool:
    for token in ignore:
        if token == "bias":
            if p.ndim <= 1 and "bias" in leaf:
                return True
        elif token == "norm":
            if p.ndim <= 1 and "norm" in type(owner).__name__.lower():
                return True
        elif token in name:
            return True
    return False


def _filter_axis(owner: nn.Module, leaf: str, p: Tensor) -> int:
    """The axis indexing output units: 1 for the ``[in, out]`` weight of a GPT-2 ``Conv1D``, else 0."""
    conv1d = type(owner).__name__ == "Conv1D" and getattr(owner, "nf", None) == p.shape[-1]
    return 1 if leaf == "weight" and p.ndim == 2 and conv1d else 0


def _normalize_filters(d: Tensor, w: Tensor, axis: int) -> Tensor:
    """Scale each filter of ``d`` (index along ``axis``) to the norm of the same filter of ``w``."""
    if d.ndim <= 1:
        d2, w2 = d.reshape(1, -1), w.reshape(1, -1)
    else:
        d2, w2 = d.movedim(axis, 0), w.movedim(axis, 0)
        moved_shape = d2.shape
        d2, w2 = d2.reshape(d2.shape[0], -1), w2.reshape(w2.shape[0], -1)  # [filters, fan]
    dn, wn = d2.norm(dim=1), w2.norm(dim=1)  # [filters]
    scale = torch.where(dn > 0, wn / torch.where(dn > 0, dn, 1), 0)  # zero weight filter -> zero direction
    out = d2 * scale[:, None]
    if d.ndim <= 1:
        return out.reshape(d.shape)
    return out.reshape(moved_shape).movedim(0, axis)


def checkpoint_direction(
    a: ModelState,
    b: ModelState,
    *,
    reference: ModelAdapter | nn.Module | None = None,
) -> Direction:
    r"""The direction :math:`d = \theta_b - \theta_a` from checkpoint ``a`` to checkpoint ``b``.

    A 1D slice from ``a`` along ``d`` with ``alphas`` in ``[0, 1]`` is the linear interpolation
    :math:`L((1 - \alpha)\theta_a + \alpha \theta_b)` of Goodfellow et al. (2015); ``alpha = 1`` is ``b``.

    Args:
        a: The start :math:`\theta_a`: a model, adapter or state dict (any ``Mapping[str, Tensor]``, e.g. a
            lazy ``tscope_widgets.export.open_state_dict(path)``).
        b: The end :math:`\theta_b`, of the same kinds.
        reference: Model or adapter whose ``named_parameters()`` give the direction's names (tied
            weights once; a checkpoint may hold a tied weight under any of its names). Defaults to
            ``a`` or ``b`` when one of them is a model or adapter; with two state dicts and no
            reference, every floating-point tensor of ``a`` is taken (buffers included, tied
            duplicates of a live state dict removed).

    Returns:
        :data:`Direction` on the device of ``b``'s tensors, in the checkpoints' dtype promoted to at
        least float32 (so a float32 difference is rounded to float32).

    Raises:
        ValueError: A parameter missing from ``b`` or with another shape, naming it.
        TypeError: A checkpoint that is not a model, adapter or state dict (a path, say).
    """
    if reference is None:
        reference = next((x for x in (a, b) if isinstance(x, (ModelAdapter, nn.Module))), None)
    ra, rb = _StateReader(a, "checkpoint a"), _StateReader(b, "checkpoint b")
    out: Direction = {}
    for name, (ka, kb) in _resolve_keys([ra, rb], None, reference):
        ta, tb = ra.get(ka), rb.get(kb)
        dtype = _float_dtype(torch.promote_types(ta.dtype, tb.dtype))
        out[name] = tb.to(dtype) - ta.to(device=tb.device, dtype=dtype)
    return out

def eigen_directions(
    adapter: ModelAdapter | nn.Module,
    data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]],
    k: int = 2,
    *,
    which: str = "largest",
    groups: str | Sequence[str] | None = None,
    tol: float = 1e-6,
    max_iter: int | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    process_group: Any = None,
) -> tuple[list[Direction], Tensor]:
    r"""Extreme Hessian eigenvectors of the LM loss over ``data`` as unit-norm directions.

    :math:`H v_i = \lambda_i v_i` for the Hessian of the token-weighted loss (restricted to ``groups``),
    by Lanczos (:func:`~..lanczos.lanczos`, partial reorthogonalization) on
    :class:`~.curvature.HessianOperator`. Each Ritz vector, a flat vector over the selected groups, is written
    back into parameter tensors through the groups'
    :class:`~tscope_widgets.models.adapter.ParamSlice` views (a fused tensor such as GPT-2's ``c_attn``
    receives the part of each of its groups); entries outside the groups are zero. So each direction has
    unit norm in the flat space of all parameters, as :func:`quadratic_model` assumes, and the slice
    :math:`L(\theta + \alpha v_i)` has second derivative :math:`\lambda_i` at :math:`\alpha = 0`.

    Order: ``"largest"`` gives :math:`\lambda_1 \ge \lambda_2 \ge \dots` (the top one first),
    ``"smallest"`` the most negative first, ``"both"`` the ``k`` smallest and ``k`` largest ascending.
    The sign of each eigenvector is fixed so that its entry of largest magnitude is positive.

    Args:
        adapter: A :class:`ModelAdapter` or supported model (never modified).
        data: One batch dict or an iterable of them.
        k: Eigenpairs (per end for ``"both"``).
        which: ``"largest"``, ``"smallest"`` or ``"both"``.
        groups: Parameter groups (names or glob patterns of ``param_groups()``); ``None`` = all.
        tol: Relative residual tolerance of Lanczos (see :func:`~.lanczos.iter_lanczos`).
        max_iter: Lanczos steps at most (``None``: its default).
        dtype: Analysis dtype (``None``: the model's, at least float32).
        generator: Seeded generator for the Lanczos start vector.
        process_group: Under ``torch.distributed``, the group whose ranks each pass a shard of ``data``
            (see ``HessianOperator``); with the same generator every rank gets the same directions.

    Returns:
        ``(directions, eigenvalues)``: :data:`Direction` list in the analysis dtype on the model's
        device, and the eigenvalues ``[m]`` float64 (CPU) in the same order. Warns (``UserWarning``)
        if Lanczos did not converge to ``tol``.
    """
    op = HessianOperator(adapter, data, groups=groups, dtype=dtype, process_group=process_group)
    result = lanczos(op, k, which, tol=tol, max_iter=max_iter, generator=generator)
    if not result.converged:
        warnings.warn(
            f"Lanczos stopped after {result.num_iterations} steps without reaching tol={tol:g}; "
            f"residual norms {result.residual_norms.tolist()}",
            stacklevel=2,
        )
    values, vectors = result.eigenvalues, result.eigenvectors  # [m] ascending, [N, m]
    order = torch.arange(values.shape[0])
    if which == "largest":
        order = order.flip(0)
    values, vectors = values[order], vectors[:, order.to(vectors.device)]
    biggest = vectors.abs().argmax(dim=0)  # [m]
    signs = torch.sign(vectors[biggest, torch.arange(vectors.shape[1], device=vectors.device)])
    vectors = vectors * torch.where(signs == 0, 1, signs)
    params = {n: p.detach() for n, p in op.adapter.model.named_parameters()}
    slices = param_groups_with_heads(op.adapter)
    directions = []
    for i in range(vectors.shape[1]):
        d = {n: torch.zeros_like(p) for n, p in params.items()}
        for group, piece in op.split(vectors[:, i]).items():
            pos = 0
            for s in slices[group]:
                view = s.view(d)  # a view into d[s.name]: copy_ writes the direction in place
                view.copy_(piece[pos : pos + view.numel()].view(view.shape))
                pos += view.numel()
            if pos != piece.numel():
                raise RuntimeError(f"group {group!r}: {piece.numel()} entries in the flat vector, {pos} in its slices")
        directions.append(d)
    return directions, values.to(torch.float64)

# ======================================================================================
# one dispatcher by kind
# ======================================================================================
@dataclass
class DirectionSet:
    """The directions :func:`make_directions` built, and how.

    Attributes:
        kind: One of :data:`DIRECTION_KINDS`.
        directions: ``count`` :data:`~.state.Direction` (one for a line, two for a plane).
        eigenvalues: For ``"eigen"``: the Hessian eigenvalues ``[count]`` float64 (CPU), in the order of
            ``directions`` (the largest first); else ``None``.
        explained_variance_ratio: For ``"pca"``: each direction's share of the trajectory's variance
            ``[count]`` float64; else ``None``.
        how: A JSON-serialisable description for a results file: ``kind`` and, per kind, ``seed``,
            ``normalization`` and ``ignore`` (random), ``which``, ``eigenvalues`` and ``seed`` (eigen),
            ``explained_variance_ratio`` (pca).
    """

    kind: str
    directions: list[Direction]
    eigenvalues: Tensor | None = None
    explained_variance_ratio: Tensor | None = None
    how: dict[str, Any] = field(default_factory=dict)


def make_directions(
    kind: str,
    adapter: ModelAdapter | nn.Module,
    *,
    count: int = 2,
    data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]] | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    normalization: str = "filter",
    ignore: Sequence[str] = ("bias", "norm"),
    tol: float = 1e-6,
    max_iter: int | None = None,
    process_group: Any = None,
    trajectory: Sequence[ModelState] | None = None,
    checkpoints: Sequence[ModelState] | None = None,
) -> DirectionSet:
    r"""``count`` directions (1: a line, 2: a plane) of one kind around the model ``adapter``.

    Kinds (:data:`DIRECTION_KINDS`):

    - ``"random"``: :func:`random_direction` ``count`` times from one generator seeded with ``seed``,
      with ``normalization`` and ``ignore``; drawn in ``dtype`` on an analysis copy when ``dtype`` is
      given (so the draws depend on the analysis dtype, not on the model's), else in the model's dtype
      promoted to at least float32.
    - ``"eigen"``: :func:`eigen_directions` of the loss Hessian over ``data``, the ``count`` largest
      eigenvalues first, Lanczos to ``tol`` (at most ``max_iter`` steps) in ``dtype``, started from a
      generator seeded with ``seed``; under ``process_group`` each rank passes its shard of ``data``.
    - ``"pca"``: :func:`~.trajectory.pca_directions` of ``trajectory`` (at least 2 checkpoints) around
      the model, the model giving the parameter names.
    - ``"checkpoints"``: :func:`checkpoint_direction` from the model to each of ``checkpoints`` (``count``
      of them), so that a checkpoint lies at coordinate 1 along its direction.

    Args:
        kind: One of :data:`DIRECTION_KINDS`.
        adapter: The model (or :class:`ModelAdapter`) at the origin; never modified.
        count: 1 or 2.
        data: Batches for ``"eigen"``.
        seed: Seed of the random draws (``"random"``) or of the Lanczos start vector (``"eigen"``).
        dtype: Analysis dtype for ``"random"`` and ``"eigen"`` (``None``: the model's, at least float32).
        normalization: ``"filter"``, ``"layer"`` or ``"none"`` (``"random"``; see :func:`random_direction`).
        ignore: Names of parameter kinds held fixed (zero direction) for ``"random"``.
        tol: Relative residual tolerance of Lanczos (``"eigen"``).
        max_iter: Lanczos steps at most (``"eigen"``; ``None``: its default).
        process_group: Under ``torch.distributed`` (``"eigen"``), the group whose ranks each pass a shard
            of ``data``.
        trajectory: Checkpoints for ``"pca"``.
        checkpoints: ``count`` checkpoints for ``"checkpoints"``.

    Returns:
        :class:`DirectionSet`.

    Raises:
        ValueError: An unknown ``kind`` (naming the allowed kinds), a ``count`` other than 1 or 2, the
            argument a kind needs missing, a checkpoint equal to the model's parameters, plus what the
            kind's own function raises.
        TypeError: A ``seed`` that is not an int.

    Example:
        >>> from tscope_widgets.models.tiny import TinyConfig, TinyTransformer
        >>> model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=1, max_seq_len=8))
        >>> made = make_directions("random", model, seed=3)
        >>> made.kind, len(made.directions), made.how["seed"]
        ('random', 2, 3)
    """
    if not isinstance(kind, str) or kind not in DIRECTION_KINDS:
        raise ValueError(f"unknown kind of directions {kind!r}; allowed kinds: {', '.join(DIRECTION_KINDS)}")
    if isinstance(count, bool) or not isinstance(count, int) or count not in (1, 2):
        raise ValueError(f"count must be 1 (a line) or 2 (a plane), got {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if kind == "random":
        source = adapter if dtype is None else adapt(adapter).analysis(dtype)
        generator = torch.Generator().manual_seed(seed)
        dirs = [
            random_direction(source, normalization=normalization, ignore=ignore, generator=generator)
            for _ in range(count)
        ]
        kinds = [ignore] if isinstance(ignore, str) else list(ignore)
        how = {"kind": kind, "normalization": normalization, "ignore": kinds, "seed": seed}
        return DirectionSet(kind, dirs, how=how)
    if kind == "eigen":
        if data is None:
            raise ValueError("kind='eigen' needs data=: the batches whose loss Hessian gives the eigenvectors")
        generator = torch.Generator().manual_seed(seed)
        dirs, values = eigen_directions(
            adapter,
            data,
            count,
            which="largest",
            tol=tol,
            max_iter=max_iter,
            dtype=dtype,
            generator=generator,
            process_group=process_group,
        )
        values = torch.as_tensor(values, dtype=torch.float64).reshape(-1).cpu()
        how = {"kind": kind, "which": "largest", "eigenvalues": values.tolist(), "seed": seed}
        return DirectionSet(kind, list(dirs), eigenvalues=values, how=how)
    model = _as_module(adapter)
    if kind == "pca":
        if trajectory is None or len(trajectory) < 2:
            raise ValueError("kind='pca' needs trajectory=[checkpoints ...] with at least 2 of them")
        dirs, ratio = pca_directions(trajectory, k=count, origin=model, reference=model)
        how = {"kind": kind, "explained_variance_ratio": ratio.tolist()}
        return DirectionSet(kind, dirs, explained_variance_ratio=ratio, how=how)
    names = "ab"[:count]
    if not isinstance(checkpoints, (tuple, list)) or len(checkpoints) != count:
        raise ValueError(
            f"kind='checkpoints' needs checkpoints=({', '.join(names)}{',' if count == 1 else ''}): "
            f"{count} state dict(s), models or adapters, one per direction"
        )
    dirs = [checkpoint_direction(model, c, reference=model) for c in checkpoints]
    for name, d in zip(names, dirs, strict=True):
        if direction_norm(d) == 0:
            needs = "the plane needs two other points" if count == 2 else "the line needs another point"
            raise ValueError(f"checkpoint {name} equals the model's parameters; {needs}")
    return DirectionSet(kind, dirs, how={"kind": kind})
