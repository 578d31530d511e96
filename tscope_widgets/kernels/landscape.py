r"""Loss landscapes: directions in parameter space and 1D/2D slices of the loss along them.

A slice looks at the loss :math:`L(\theta)` of a trained model on a plane (or line) through its
parameters :math:`\theta`:

.. math:: f(\alpha, \beta) = L(\theta + \alpha\, d_1 + \beta\, d_2), \qquad g(\alpha) = L(\theta + \alpha\, d)

A :data:`Direction` is a ``dict[str, Tensor]`` keyed by the names of ``model.named_parameters()``
(a tied weight appears once, under its first name), each tensor with its parameter's shape. Directions:

- :func:`random_direction`: Gaussian, with filter normalization (Li, Xu, Taylor, Studer & Goldstein,
  2018), so that slices of networks with different weight scales are comparable;
- :func:`eigen_directions`: extreme eigenvectors of the Hessian (unit norm); along one,
  :math:`g(\alpha) \approx L(\theta) + \alpha\, \nabla L^\top d + \tfrac12 \lambda \alpha^2`
  (:func:`quadratic_model` draws the curvature term at a minimum);
- :func:`checkpoint_direction`: ``b - a`` between two checkpoints (``alphas`` in ``[0, 1]`` from ``a``
  interpolate linearly, Goodfellow, Vinyals & Saxe, 2015);
- :func:`pca_directions`: the top principal directions of a training trajectory (Li et al., 2018, sec. 7),
  with :func:`project_trajectory` to draw the path on the plane.

:func:`slice_1d` and :func:`slice_2d` are generators that evaluate the grid on a private analysis copy
of the model with ``torch.func.functional_call`` (several grid points per call through ``vmap`` on small
models, one point per call in reused parameter buffers on large ones) and yield a :class:`LandscapeSlice`
as rows complete, so a Job can stream it. The user's model is never modified. Under ``torch.distributed``
each rank passes a shard of the data and every rank gets the slice over all shards.

A checkpoint is a model, an adapter or a state dict: any ``Mapping[str, Tensor]``, read one tensor at a
time, so a lazy mapping over a file (``tscope_widgets.export.open_state_dict(path)``) lets
:func:`pca_directions` stream a trajectory too large for memory. Files are written and read in
``tscope_widgets.export`` (``save_directions``, ``load_directions``, ``open_state_dict``); nothing here
touches the disk.

References:
    Li, H., Xu, Z., Taylor, G., Studer, C. & Goldstein, T. (2018). Visualizing the Loss Landscape of
    Neural Nets. NeurIPS 2018.
    Goodfellow, I. J., Vinyals, O. & Saxe, A. M. (2015). Qualitatively characterizing neural network
    optimization problems. ICLR 2015.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..models.adapter import IGNORE_INDEX, ModelAdapter
from .collectives import all_reduce_, check_group
from .curvature import HessianOperator
from .lanczos import lanczos
from .sensitivity import analysis_adapter

__all__ = [
    "Direction",
    "ModelState",
    "TensorDescriptions",
    "LandscapeSlice",
    "random_direction",
    "eigen_directions",
    "checkpoint_direction",
    "pca_directions",
    "project_trajectory",
    "slice_1d",
    "slice_2d",
    "quadratic_model",
    "default_points_per_call",
    "POINTS_MEMORY_BUDGET",
]

Direction = dict[str, Tensor]

NORMALIZATIONS = ("filter", "layer", "none")
# Extra memory the automatic points_per_call aims at: P stacked copies of the parameters plus what
# P forward passes hold at once (an estimate, see `default_points_per_call`).
POINTS_MEMORY_BUDGET = 256 * 2**20
# vmap over more points stops paying off on a CPU (per-point time was flat from 4 to 16 points on a
# 2-layer d=64 model; a GPT-2-shaped d=8 model went from 2.3 ms to 0.5 ms per point at 16).
MAX_POINTS_PER_CALL = {"cpu": 16}
MAX_POINTS_PER_CALL_DEFAULT = 256
# On a CPU, vmap only pays off while the P parameter copies of a call stay small (it saves Python
# overhead, not arithmetic). GPT-2-shaped, 4 layers, batch 4 x 32, float32, one thread, ms per point at
# P = 1 / 4 / 8: 5 MB of parameters 22 / 17 / 17, 11 MB 35 / 27 / 25, 22 MB 42 / 43 / 54; 86 MB: 128 at
# P = 1, 183 at P = 2. So P copies are kept within this many bytes on a CPU (a larger model gets P = 1).
CPU_PARAMETER_COPIES_BUDGET = 64 * 2**20


# ======================================================================================
# parameters, checkpoints
# ======================================================================================
def _as_module(x: ModelAdapter | nn.Module) -> nn.Module:
    if isinstance(x, ModelAdapter):
        return x.model
    if isinstance(x, nn.Module):
        return x
    raise TypeError(f"expected a model (nn.Module) or a ModelAdapter, got {type(x).__name__}")


def _tied_aliases(module: nn.Module) -> dict[str, list[str]]:
    """``{name in named_parameters(): [that name, then every other name of the same (tied) tensor]}``."""
    first: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[first[id(p)]].append(name)
        else:
            first[id(p)] = name
            aliases[name] = [name]
    return aliases


@runtime_checkable
class TensorDescriptions(Protocol):
    """A state dict that can tell a tensor's shape and dtype without reading it (a lazy file reader).

    :func:`pca_directions` and its companions check names and shapes before they read values; a
    ``Mapping`` that also has this method (``tscope_widgets.export.LazyStateDict`` does) answers those
    checks from the file's header instead of loading every tensor an extra time.
    """

    def shape_and_dtype(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        """``(shape, dtype)`` of the tensor under ``key``."""
        ...


# Where parameters come from: a model, an adapter, or a state dict (eager or lazy).
ModelState = ModelAdapter | nn.Module | Mapping[str, Tensor]


class _StateReader:
    """Read-only access to the parameters of one checkpoint, one tensor at a time.

    A checkpoint is a model or adapter (its ``named_parameters()``) or a state dict: any
    ``Mapping[str, Tensor]``, possibly lazy (values read on access). Its values are read only through
    :meth:`get`, one key at a time, and never copied as a whole.
    """

    def __init__(self, item: Any, what: str):
        self.what = what
        if isinstance(item, (ModelAdapter, nn.Module)):
            self._tensors: Mapping[str, Tensor] = {n: p.detach() for n, p in _as_module(item).named_parameters()}
            self._described = False
        elif isinstance(item, Mapping):
            bad = [k for k in item if not isinstance(k, str)]
            if bad:
                raise TypeError(f"{what}: a state dict must map parameter names (str) to tensors; bad keys {bad[:5]}")
            self._tensors = item
            self._described = isinstance(item, TensorDescriptions)
        else:
            hint = (
                "; to read a safetensors file use tscope_widgets.export.open_state_dict(path)"
                if isinstance(item, (str, bytes)) or hasattr(item, "__fspath__")
                else ""
            )
            raise TypeError(
                f"{what}: expected a model, an adapter or a state dict (a Mapping {{name: Tensor}}), "
                f"got {type(item).__name__}{hint}"
            )

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def _tensor(self, key: str) -> Tensor:
        t = self._tensors[key]
        if not isinstance(t, Tensor):
            raise TypeError(f"{self.what}: entry {key!r} must be a tensor, got {type(t).__name__}")
        return t

    def shape_and_dtype(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        if self._described:
            shape, dtype = self._tensors.shape_and_dtype(key)
            return tuple(shape), dtype
        t = self._tensor(key)
        return tuple(t.shape), t.dtype

    def shape(self, key: str) -> tuple[int, ...]:
        return self.shape_and_dtype(key)[0]

    def get(self, key: str) -> Tensor:
        return self._tensor(key).detach()

    def untied_float_keys(self) -> list[str]:
        """Floating-point keys, without a second name of a tied tensor (same storage, shape and strides)."""
        seen, out = set(), []
        for key in self.keys():
            if not self.shape_and_dtype(key)[1].is_floating_point:
                continue
            if not self._described:  # a lazy mapping reads fresh copies: no shared storage to compare
                t = self._tensor(key)
                ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
                if t.numel() and ident in seen:
                    continue
                seen.add(ident)
            out.append(key)
        return out


def _resolve_keys(
    readers: Sequence[_StateReader], names: Sequence[str] | None, reference: ModelAdapter | nn.Module | None
) -> list[tuple[str, list[str]]]:
    """``[(parameter name, [its key in each reader])]``, checking that every reader has it with one shape.

    Names come from ``names``, else from ``reference.named_parameters()``, else from the first reader's
    floating-point tensors (tied duplicates removed). With a ``reference``, a reader may hold a tied
    parameter under any of its names (``save_model`` of safetensors keeps only one of them).
    """
    aliases: dict[str, list[str]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    if reference is not None:
        module = _as_module(reference)
        aliases = _tied_aliases(module)
        shapes = {n: tuple(p.shape) for n, p in module.named_parameters()}
        if names is None:
            names = list(aliases)
    elif names is None:
        names = readers[0].untied_float_keys()
        if not names:
            raise ValueError(f"{readers[0].what} holds no floating-point tensors")
    out = []
    for name in names:
        keys = []
        for r in readers:
            key = next((a for a in aliases.get(name, [name]) if a in r), None)
            if key is None:
                hint = "" if reference is not None else " (pass reference=model to match tied or renamed weights)"
                raise ValueError(f"{r.what} has no parameter {name!r}{hint}")
            shape = r.shape(key)
            want = shapes.setdefault(name, shape)
            if shape != want:
                raise ValueError(f"{r.what}: parameter {name!r} has shape {list(shape)}, expected {list(want)}")
            keys.append(key)
        out.append((name, keys))
    return out


def _flat64(t: Tensor) -> Tensor:
    """``t`` flattened, as float64 on the CPU (for dot products)."""
    return t.detach().reshape(-1).to(device="cpu", dtype=torch.float64)


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` promoted to at least float32 (directions of bf16/fp16 models are kept in float32)."""
    return torch.promote_types(dtype, torch.float32)


# ======================================================================================
# directions
# ======================================================================================
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
        a, b: Models, adapters or state dicts (any ``Mapping[str, Tensor]``, e.g. a lazy
            ``tscope_widgets.export.open_state_dict(path)``).
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


def pca_directions(
    trajectory: Sequence[ModelState],
    k: int = 2,
    *,
    origin: ModelState | None = None,
    center: bool = False,
    reference: ModelAdapter | nn.Module | None = None,
) -> tuple[list[Direction], Tensor]:
    r"""The top-``k`` principal directions of a training trajectory (Li et al., 2018, sec. 7).

    With the rows :math:`m_t = \operatorname{flat}(\theta_t - \theta_o)` of :math:`M \in R^{T \times P}`,
    :math:`M = U \Sigma V^\top`; the directions are the first ``k`` right singular vectors
    :math:`v_i = M^\top u_i / \sigma_i` (unit norm, orthonormal in the flat parameter space), found
    without forming a :math:`P \times P` matrix: the :math:`T \times T` Gram matrix :math:`M M^\top` is
    accumulated one parameter at a time in float64 and eigendecomposed (``T`` is small), then
    :math:`v_i` is assembled per parameter. Checkpoints are read one tensor at a time, so lazy state dicts
    (``tscope_widgets.export.open_state_dict``) stream a trajectory that does not fit in memory: at most
    ``T + 1`` tensors of one parameter are held at once, and each is read twice.

    By default the rows are not centered, so :math:`\mathrm{span}(v_1, v_2)` is the plane through the
    origin that best fits the trajectory, which is the plane a slice around :math:`\theta_o` draws.
    ``center=True`` subtracts the mean row first, as the ``sklearn`` PCA in Li et al.'s released code
    does (the directions then do not depend on the origin).

    The sign of :math:`v_i` is chosen so that the first checkpoint has a coordinate
    :math:`\ge 0` along it.

    Args:
        trajectory: ``T >= 2`` checkpoints: models, adapters or state dicts (any ``Mapping[str, Tensor]``,
            lazy ones included).
        k: Number of directions, ``1 <= k <= T``.
        origin: The origin :math:`\theta_o` (a checkpoint of the same kinds); ``None`` = the last
            checkpoint, as in Li et al.
        center: Subtract the mean of the rows before the decomposition.
        reference: Model or adapter giving the parameter names (see :func:`checkpoint_direction`);
            defaults to the first checkpoint that is a model or adapter.

    Returns:
        ``(directions, explained_variance_ratio)``: ``k`` float64 :data:`Direction` on the CPU, and
        :math:`\sigma_i^2 / \sum_j \sigma_j^2` as a float64 tensor ``[k]``.

    Raises:
        ValueError: Fewer than two checkpoints, ``k`` out of range, checkpoints that disagree on
            parameters or shapes, or a trajectory spanning fewer than ``k`` dimensions (a direction
            with :math:`\sigma_k / \sigma_1 \le 10^{-6}` is rounding noise of the Gram matrix).
    """
    items = list(trajectory)
    T = len(items)
    if T < 2:
        raise ValueError(f"a trajectory needs at least 2 checkpoints, got {T}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= T:
        raise ValueError(f"k must be an int in [1, {T}] (the number of checkpoints), got {k!r}")
    if reference is None:
        reference = next((x for x in [*items, origin] if isinstance(x, (ModelAdapter, nn.Module))), None)
    readers = [_StateReader(x, f"trajectory[{t}]") for t, x in enumerate(items)]
    o_reader = readers[-1] if origin is None else _StateReader(origin, "origin")
    keys = _resolve_keys([*readers, o_reader], None, reference)

    def rows(ks: list[str]) -> Tensor:
        o = _flat64(o_reader.get(ks[-1]))
        flat = [o if r is o_reader else _flat64(r.get(key)) for r, key in zip(readers, ks[:-1], strict=True)]
        M = torch.stack(flat) - o  # [T, n]
        return M - M.mean(0) if center else M

    gram = torch.zeros(T, T, dtype=torch.float64)
    for _, ks in keys:
        M = rows(ks)
        gram += M @ M.T
    evals, U = torch.linalg.eigh(gram)  # ascending
    evals, U = evals.flip(0).clamp_min(0), U.flip(1)
    total = float(evals.sum())
    # sigma_i / sigma_1 below 1e-6 is rounding in the Gram matrix (its errors are ~eps * sigma_1^2)
    cutoff = 1e-12 * float(evals[0])
    if total == 0 or evals[k - 1] <= cutoff:
        rank = int((evals > cutoff).sum()) if total > 0 else 0
        raise ValueError(
            f"the trajectory spans {rank} dimension(s) around the origin; cannot find k={k} directions"
        )
    sigma = evals[:k].sqrt()  # [k]
    U = U[:, :k] * torch.where(U[0, :k] < 0, -1.0, 1.0)  # first checkpoint on the positive side
    directions: list[Direction] = [{} for _ in range(k)]
    for name, ks in keys:
        M = rows(ks)
        V = (U.T @ M) / sigma[:, None]  # [k, n]
        shape = o_reader.shape(ks[-1])
        for i in range(k):
            directions[i][name] = V[i].reshape(shape)
    return directions, evals[:k] / total


def project_trajectory(
    trajectory: Sequence[ModelState],
    d1: Mapping[str, Tensor],
    d2: Mapping[str, Tensor],
    *,
    origin: ModelState,
    reference: ModelAdapter | nn.Module | None = None,
) -> Tensor:
    r"""Coordinates of each checkpoint in the plane :math:`\theta_o + \mathrm{span}(d_1, d_2)`.

    Least squares: :math:`c_t = \arg\min_c \lVert \theta_t - \theta_o - c_1 d_1 - c_2 d_2 \rVert`, from the
    2x2 Gram system :math:`G c_t = [d_1^\top m_t,\ d_2^\top m_t]` with :math:`G_{ij} = d_i^\top d_j`, so
    directions need not be orthogonal or unit norm (filter-normalized random directions are neither).
    Dot products run over the direction's parameters, in float64.

    Args:
        trajectory: ``T`` checkpoints: models, adapters or state dicts (any ``Mapping[str, Tensor]``,
            lazy ones included; read one tensor at a time).
        d1, d2: Directions with the same parameter names and shapes.
        origin: The origin :math:`\theta_o` (checkpoint of the same kinds).
        reference: Model or adapter whose tied-weight names let a checkpoint hold a parameter under
            another name; defaults to the origin or a checkpoint that is a model or adapter.

    Returns:
        ``[T, 2]`` float64 coordinates (CPU).

    Raises:
        ValueError: Directions that disagree on names or shapes, hold non-finite values or are
            (nearly) parallel; checkpoints missing a parameter.
    """
    items = list(trajectory)
    if not items:
        raise ValueError("the trajectory is empty")
    d1 = _check_plain_direction(d1, "d1")
    d2 = _check_plain_direction(d2, "d2")
    if set(d1) != set(d2):
        raise ValueError(f"d1 and d2 name different parameters: {sorted(set(d1) ^ set(d2))[:5]}")
    for name in d1:
        if d1[name].shape != d2[name].shape:
            raise ValueError(f"parameter {name!r}: d1 has shape {list(d1[name].shape)}, d2 {list(d2[name].shape)}")
    if reference is None:
        reference = next((x for x in [origin, *items] if isinstance(x, (ModelAdapter, nn.Module))), None)
    T = len(items)
    gram = torch.zeros(2, 2, dtype=torch.float64)
    rhs = torch.zeros(T, 2, dtype=torch.float64)
    readers = [_StateReader(x, f"trajectory[{t}]") for t, x in enumerate(items)]
    o_reader = _StateReader(origin, "origin")
    for name, ks in _resolve_keys([*readers, o_reader], list(d1), reference):
        if o_reader.shape(ks[-1]) != tuple(d1[name].shape):
            raise ValueError(
                f"parameter {name!r}: directions have shape {list(d1[name].shape)}, "
                f"checkpoints {list(o_reader.shape(ks[-1]))}"
            )
        D = torch.stack([_flat64(d1[name]), _flat64(d2[name])])  # [2, n]
        o = _flat64(o_reader.get(ks[-1]))
        M = torch.stack([_flat64(r.get(key)) for r, key in zip(readers, ks[:-1], strict=True)]) - o  # [T, n]
        gram += D @ D.T
        rhs += M @ D.T
    det = gram[0, 0] * gram[1, 1] - gram[0, 1] ** 2
    if not det > 1e-12 * gram[0, 0] * gram[1, 1]:
        raise ValueError("d1 and d2 are (nearly) parallel or zero; they do not span a plane")
    return torch.linalg.solve(gram, rhs.T).T


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
    by Lanczos with full reorthogonalization on :class:`~.curvature.HessianOperator`. Each Ritz vector, a
    flat vector over the selected groups, is written back into parameter tensors through the groups'
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
    slices = op.adapter.param_groups()
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


def quadratic_model(
    alphas: Tensor | Sequence[float], eigenvalue: float | Tensor, origin_loss: float | Tensor
) -> Tensor:
    r"""The quadratic prediction :math:`L_0 + \tfrac12 \lambda \alpha^2` along a Hessian eigenvector.

    Along a unit-norm eigenvector :math:`v` (:math:`\lVert v \rVert = 1` in the flat parameter space, as
    :func:`eigen_directions` returns them), :math:`L(\theta + \alpha v) = L_0 + \alpha\, \nabla L^\top v
    + \tfrac12 \lambda \alpha^2 + O(\alpha^3)`; at a minimum the gradient term vanishes and this is the
    second-order Taylor model. For a direction of norm :math:`c` the curvature term is
    :math:`\tfrac12 \lambda c^2 \alpha^2` instead, so rescale ``alphas`` by ``c`` first.

    Args:
        alphas: ``[A]`` step sizes.
        eigenvalue: :math:`\lambda`.
        origin_loss: :math:`L_0 = L(\theta)`.

    Returns:
        ``[A]`` float64.
    """
    a = torch.as_tensor(alphas, dtype=torch.float64).cpu()
    lam = float(eigenvalue)
    return float(origin_loss) + 0.5 * lam * a * a


# ======================================================================================
# slices
# ======================================================================================
@dataclass
class LandscapeSlice:
    """A 1D or 2D loss slice, filled in row by row (a snapshot of :func:`slice_1d` / :func:`slice_2d`).

    Attributes:
        alphas: ``[A]`` float64 coordinates along the first direction (rows).
        betas: ``[B]`` float64 coordinates along the second direction (columns), ``None`` for 1D.
        loss: ``[A, B]`` (2D) or ``[A]`` (1D) float64 token-weighted mean LM loss
            :math:`L(\\theta + \\alpha_i d_1 + \\beta_j d_2)`; NaN where not computed yet. Non-finite
            losses of the model are stored as they are.
        accuracy: Same shape, float64: the fraction of target tokens whose argmax prediction is right.
        rows_done: Rows (alphas) complete.
        origin_loss: :math:`L(\\theta)`, the unperturbed loss.
        origin_accuracy: Token accuracy at :math:`\\theta`.
    """

    alphas: Tensor
    betas: Tensor | None
    loss: Tensor
    accuracy: Tensor
    rows_done: int
    origin_loss: float
    origin_accuracy: float = math.nan

    @property
    def done(self) -> int:
        """Rows complete (Job progress)."""
        return self.rows_done

    @property
    def total(self) -> int:
        """Rows in all (Job progress)."""
        return int(self.alphas.shape[0])

    @property
    def ndim(self) -> int:
        """1 or 2."""
        return 1 if self.betas is None else 2

    def clone(self) -> LandscapeSlice:
        """A copy that does not share tensors with this slice."""
        return replace(
            self,
            alphas=self.alphas.clone(),
            betas=None if self.betas is None else self.betas.clone(),
            loss=self.loss.clone(),
            accuracy=self.accuracy.clone(),
        )

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors of the slice: ``alphas``, ``betas`` (2D), ``loss``, ``accuracy``, ``origin`` ``[2]``."""
        out = {
            "alphas": self.alphas,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "origin": torch.tensor([self.origin_loss, self.origin_accuracy], dtype=torch.float64),
        }
        if self.betas is not None:
            out["betas"] = self.betas
        return out

    def meta(self) -> dict[str, Any]:
        """JSON-serialisable description: kind, dimension, progress and the origin (``None`` if not finite)."""

        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "kind": "landscape_slice",
            "ndim": self.ndim,
            "rows_done": self.rows_done,
            "done": self.done,
            "total": self.total,
            "origin_loss": finite(self.origin_loss),
            "origin_accuracy": finite(self.origin_accuracy),
        }

    @classmethod
    def from_state(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> LandscapeSlice:
        """Rebuild a slice from :meth:`state_dict` and :meth:`meta` (e.g. a Job checkpoint).

        Raises:
            ValueError: If the parts are not those of a landscape slice or disagree on shapes.
        """
        if meta.get("kind") != "landscape_slice" or meta.get("ndim") not in (1, 2):
            raise ValueError(f"not a landscape slice checkpoint (meta kind={meta.get('kind')!r})")
        missing = {"alphas", "loss", "accuracy", "origin"} - set(tensors)
        if meta["ndim"] == 2 and "betas" not in tensors:
            missing.add("betas")
        if missing:
            raise ValueError(f"landscape slice checkpoint lacks tensors {sorted(missing)}")
        alphas = tensors["alphas"].to(torch.float64)
        betas = tensors["betas"].to(torch.float64) if meta["ndim"] == 2 else None
        shape = (alphas.shape[0],) if betas is None else (alphas.shape[0], betas.shape[0])
        loss, acc = tensors["loss"].to(torch.float64), tensors["accuracy"].to(torch.float64)
        rows = meta.get("rows_done")
        if tuple(loss.shape) != shape or tuple(acc.shape) != shape or not isinstance(rows, int):
            raise ValueError(f"landscape slice checkpoint: loss/accuracy shape or rows_done do not match {shape}")
        if not 0 <= rows <= shape[0]:
            raise ValueError(f"landscape slice checkpoint: rows_done={rows} outside [0, {shape[0]}]")
        origin = tensors["origin"].to(torch.float64)
        return cls(alphas, betas, loss.clone(), acc.clone(), rows, float(origin[0]), float(origin[1]))


class _BatchObjective(nn.Module):
    """Summed token loss and number of correct argmax predictions of one batch, ``[2]``.

    A module around the analysis model (registered as ``net``) so that ``functional_call`` can swap
    the model's parameters (keys ``"net.<name>"``) while the adapter runs its own forward.
    """

    def __init__(self, adapter: ModelAdapter):
        super().__init__()
        self.net = adapter.model
        self._adapter = adapter  # not a module; shares `net`

    def forward(self, input_ids: Tensor, mask: Tensor | None, labels: Tensor) -> Tensor:
        logits = self._adapter.logits(input_ids, mask)  # [B, S, V]
        flat = logits.reshape(-1, logits.shape[-1])  # [N, V]
        y = labels.reshape(-1)
        loss_sum = F.cross_entropy(flat, y, ignore_index=IGNORE_INDEX, reduction="sum")
        correct = ((flat.argmax(-1) == y) & (y != IGNORE_INDEX)).sum().to(loss_sum.dtype)
        return torch.stack([loss_sum, correct])


@dataclass(frozen=True)
class _Targets:
    """One validated batch: ``input_ids [B, S]``, ``mask [B, S]`` or None, ``labels [B, S]`` aligned with the
    logits (``IGNORE_INDEX`` where a position is not scored), ``count`` labelled positions."""

    input_ids: Tensor
    mask: Tensor | None
    labels: Tensor
    count: int


def _targets(adapter: ModelAdapter, batch: Mapping[str, Tensor], what: str) -> _Targets:
    """The validated batch and its targets by the label rule of :meth:`ModelAdapter.loss` (``adapter.targets``)."""
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        raise TypeError(f"{what} must be a dict with 'input_ids' (and optional 'attention_mask', 'labels')")
    try:
        input_ids, mask, labels = adapter.targets(batch)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from e
    count = int((labels != IGNORE_INDEX).sum())
    if count == 0:
        raise ValueError(f"{what}: no position has a label; nothing to average")
    return _Targets(input_ids, mask, labels, count)


def _batches(
    adapter: ModelAdapter, data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]], allow_empty: bool = False
) -> list[_Targets]:
    """All batches of ``data`` (one dict, or an iterable of dicts read once), validated; an empty iterable
    only with ``allow_empty`` (a rank's shard under torch.distributed)."""
    items = [data] if isinstance(data, Mapping) else list(data)
    if not items and not allow_empty:
        raise ValueError("data holds no batches")
    return [_targets(adapter, b, f"batch {i}") for i, b in enumerate(items)]


def _coordinates(x: Tensor | Sequence[float], what: str) -> Tensor:
    try:
        # lists become float64 directly (torch's default float32 would round them, or overflow to inf)
        t = x.detach() if isinstance(x, Tensor) else torch.as_tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{what} must be a 1-D tensor or sequence of real numbers ({e})") from e
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{what} must be real numbers, got dtype {t.dtype}")
    t = t.to("cpu", torch.float64)
    if t.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{what} is empty; give at least one grid coordinate")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} holds non-finite values")
    return t


def _check_plain_direction(direction: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
    """``direction`` as a dict, after checking that it holds finite floating-point tensors."""
    _moved_names(direction, what)
    return dict(direction)


def _moved_names(direction: Mapping[str, Tensor], what: str) -> set[str]:
    """Check that ``direction`` is a non-empty dict of finite floating-point tensors; return the names of those
    that are not all zero. One min/max pass per tensor (NaN propagates into both), no temporaries."""
    if not isinstance(direction, Mapping) or not direction:
        raise TypeError(f"{what} must be a non-empty dict {{parameter name: Tensor}}, got {type(direction).__name__}")
    moved = set()
    for name, t in direction.items():
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise ValueError(f"{what}[{name!r}] must be a floating-point tensor, got {getattr(t, 'dtype', type(t))}")
        if t.numel() == 0:
            continue
        lo, hi = (float(x) for x in torch.aminmax(t.detach()))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{what}[{name!r}] holds non-finite values")
        if lo != 0 or hi != 0:
            moved.add(name)
    return moved


def _check_direction(
    direction: Mapping[str, Tensor], params: Mapping[str, Tensor], what: str
) -> tuple[dict[str, Tensor], set[str]]:
    """``direction`` in the order, dtype and device of ``params``, after checking names, shapes and values;
    and the names of its tensors that are not all zero."""
    moved = _moved_names(direction, what)
    missing = [n for n in params if n not in direction]
    extra = [n for n in direction if n not in params]
    if missing:
        raise ValueError(f"{what} lacks parameter(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                         "a direction needs every name of model.named_parameters()")
    if extra:
        raise ValueError(
            f"{what} has parameter(s) {extra[:5]} that the model does not have (a buffer or a tied duplicate? "
            "pass reference=model to checkpoint_direction / pca_directions)"
        )
    out = {}
    for name, p in params.items():
        d = direction[name]
        if d.shape != p.shape:
            raise ValueError(f"{what}[{name!r}] has shape {list(d.shape)}, but the parameter has {list(p.shape)}")
        out[name] = d.detach().to(device=p.device, dtype=p.dtype)
    return out, moved


def default_points_per_call(adapter: ModelAdapter, batches: Sequence[_Targets]) -> int:
    """Grid points per call so that the extra memory stays near :data:`POINTS_MEMORY_BUDGET`.

    Per point: a copy of the parameters plus the activations of one forward pass over the largest
    batch, estimated as ``tokens * (4 V + 24 D + 4 S)`` values (logits and their softmax, the residual
    stream and MLP of a layer at a time, attention scores). Capped at 256 points, and on a CPU at 16 points
    and at :data:`CPU_PARAMETER_COPIES_BUDGET` bytes of parameter copies, beyond which vmap over points was
    slower than one point per call: a model of more than 16M float32 parameters gets 1 point per call there.
    """
    itemsize = adapter.dtype.itemsize
    param_bytes = itemsize * sum(p.numel() for p in adapter.model.parameters())
    tokens = max((t.input_ids.numel() for t in batches), default=0)
    S = max((t.input_ids.shape[1] for t in batches), default=0)
    per_point = param_bytes + itemsize * tokens * (4 * adapter.vocab_size + 24 * adapter.d_model + 4 * S)
    cap = MAX_POINTS_PER_CALL.get(adapter.device.type, MAX_POINTS_PER_CALL_DEFAULT)
    P = min(cap, POINTS_MEMORY_BUDGET // per_point)
    if adapter.device.type == "cpu":
        P = min(P, CPU_PARAMETER_COPIES_BUDGET // param_bytes)
    return int(max(1, P))


class _GridEvaluator:
    r"""Loss and accuracy at :math:`\theta + \sum_j c_j d_j` for up to ``P`` rows of coordinates ``c [n, m]``.

    The parameters of a call's points are written in place (under ``no_grad``) into buffers allocated
    once and reused by every call: ``[P, *shape]`` for each parameter that some direction moves (is
    nonzero somewhere); every other parameter, and all of them at the origin ``c = 0``, is θ itself.
    With ``P > 1`` one ``addmm`` per parameter writes all points of a call from the stacked directions
    ``[m, numel]`` and ``functional_call`` is vmapped over the points. With ``P = 1`` the buffer is
    written as ``θ + c_j d_j`` for the first nonzero coefficient (``torch.add(out=)``), then ``+= c_k d_k``
    for the others, with no stacked copy of the directions, and the call is plain: a point on an axis of
    the grid costs one pass over the parameters, another point two (memory-bound, the cost that remains
    beyond the forward passes at GPT-2-small size). Memory beyond the model: ``P`` copies of the moved
    parameters, plus ``m`` stacked copies of the directions when ``P > 1``.

    Each batch gives its summed token loss and number of correct argmax predictions. Under a process
    group the per-point sums ``[n, 3]`` (loss, correct, targets; float64) are added over the ranks by
    one ``all_reduce`` per call, so every rank gets the token-weighted loss and accuracy of all shards.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        batches: list[_Targets],
        directions: list[dict[str, Tensor]],
        moved: set[str],
        points_per_call: int,
        process_group: Any = None,
    ):
        self.objective = _BatchObjective(adapter)
        self.batches = batches
        self.group = process_group
        self.P = points_per_call
        self.device, self.dtype = adapter.device, adapter.dtype
        self.base = {n: p.detach() for n, p in adapter.model.named_parameters()}
        self.directions = {n: [d[n] for d in directions] for n in self.base if n in moved}
        self.buffers = {n: self.base[n].new_empty((self.P, *self.base[n].shape)) for n in self.directions}
        self.stacked = (
            {n: torch.stack([d.reshape(-1) for d in ds]) for n, ds in self.directions.items()} if self.P > 1 else {}
        )

    @torch.no_grad()
    def _parameters_at(self, coords: Tensor) -> dict[str, Tensor]:
        """``{"net.<name>": [n, *shape]}``: the moved parameters at the points ``coords [n, m]``, in the buffers."""
        n = coords.shape[0]
        if self.P > 1:
            c = coords.to(self.device, self.dtype)
            for name, buf in self.buffers.items():
                torch.addmm(self.base[name].reshape(1, -1), c, self.stacked[name], out=buf[:n].view(n, -1))
        else:  # skip zero coefficients: a point on an axis of the grid costs one pass, not two
            terms = [(c, j) for j, c in enumerate(coords[0].tolist()) if c != 0]
            for name, buf in self.buffers.items():
                ds = self.directions[name]
                (c, j), *rest = terms
                torch.add(self.base[name], ds[j], alpha=c, out=buf[0])
                for c, j in rest:
                    buf[0].add_(ds[j], alpha=c)
        return {f"net.{name}": buf[:n] for name, buf in self.buffers.items()}

    @torch.no_grad()
    def __call__(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        """``coords [n, m]`` float64, ``n <= P`` -> ``(loss [n], accuracy [n])`` float64 (CPU), over all ranks."""
        n = coords.shape[0]
        moved = self._parameters_at(coords) if coords.any() else {}
        static = {f"net.{k}": v for k, v in self.base.items() if f"net.{k}" not in moved}
        totals = torch.zeros(n, 3, dtype=torch.float64)  # summed token loss, correct predictions, targets
        for b in self.batches:
            args = (b.input_ids, b.mask, b.labels)
            if n == 1 or not moved:  # a plain call (also the route for models vmap cannot trace)
                out = functional_call(self.objective, {**static, **{k: v[0] for k, v in moved.items()}}, args)
                out = out.expand(n, 2)
            else:
                out = vmap(lambda mv, args=args: functional_call(self.objective, {**static, **mv}, args))(moved)
            totals[:, :2] += out.to("cpu", torch.float64)
            totals[:, 2] += b.count
        if self.group is not None:
            all_reduce_(totals, self.group)
        if not totals[:, 2].all():
            raise ValueError("no rank holds a labelled position; nothing to average")
        return totals[:, 0] / totals[:, 2], totals[:, 1] / totals[:, 2]


def _check_points_per_call(points_per_call: int | None) -> None:
    if points_per_call is None:
        return
    if isinstance(points_per_call, bool) or not isinstance(points_per_call, int):
        raise TypeError(f"points_per_call must be an int >= 1 or None, got {points_per_call!r}")
    if points_per_call < 1:
        raise ValueError(f"points_per_call must be >= 1, got {points_per_call}")


# ======================================================================================
# torch.distributed
# ======================================================================================
def _on_all_ranks(prepare: Any, group: Any) -> tuple:
    """``prepare()`` (a tuple ending with the points per call), agreed by the ranks of ``group``.

    Each rank checks its own arguments and shard. One ``all_reduce(MAX)`` then tells every rank whether
    any of them failed, so that all raise (the failing rank its own error) instead of the others waiting
    in the next collective, and gives all ranks the smallest points per call (they must make the same
    calls: the default depends on the rank's batches).
    """
    if group is None:
        return prepare()
    try:
        out, error = prepare(), None
    except Exception as e:  # re-raised below, after the other ranks have heard of it
        out, error = None, e
    flags = torch.tensor([float(error is not None), -float(out[-1] if error is None else 0)], dtype=torch.float64)
    all_reduce_(flags, group, "max")
    if error is not None:
        raise error
    if flags[0] > 0:
        raise RuntimeError("the landscape slice failed on another rank (bad arguments or data there; see its error)")
    return (*out[:-1], int(-flags[1]))


# ======================================================================================
# slices
# ======================================================================================
def slice_1d(
    adapter: ModelAdapter | nn.Module,
    data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]],
    direction: Mapping[str, Tensor],
    alphas: Tensor | Sequence[float],
    *,
    points_per_call: int | None = None,
    dtype: torch.dtype | None = None,
    resume: Any = None,
    process_group: Any = None,
) -> Iterator[LandscapeSlice]:
    r"""Stream the 1D slice :math:`g(\alpha_i) = L(\theta + \alpha_i d)`, point by point.

    Each point is one "row". See :func:`slice_2d` for the loss, evaluation and arguments (including
    ``process_group``); ``direction`` takes the place of ``d1``.

    Returns:
        An iterator of :class:`LandscapeSlice` (``betas=None``, ``loss [A]``), one snapshot after every
        completed point (once per call when a call completes several), the last one complete. Arguments
        are checked when this function is called, before the first value is computed.

    Raises:
        ValueError / TypeError: As :func:`slice_2d`.

    Example:
        >>> from tscope_widgets.models.tiny import TinyConfig, TinyTransformer
        >>> _ = torch.manual_seed(0)
        >>> model = TinyTransformer(TinyConfig(vocab_size=11, d_model=8, n_head=2, n_layer=1, max_seq_len=8)).double()
        >>> batch = {"input_ids": torch.randint(0, 11, (2, 6))}
        >>> d = random_direction(model, generator=torch.Generator().manual_seed(0))
        >>> final = list(slice_1d(model, batch, d, [-1.0, 0.0, 1.0]))[-1]
        >>> final.loss.shape, final.done, final.total, abs(final.loss[1].item() - final.origin_loss) < 1e-12
        (torch.Size([3]), 3, 3, True)
    """
    return _stream(adapter, data, {"direction": direction}, alphas, None, dtype, points_per_call, resume,
                   process_group)


def slice_2d(
    adapter: ModelAdapter | nn.Module,
    data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]],
    d1: Mapping[str, Tensor],
    d2: Mapping[str, Tensor],
    alphas: Tensor | Sequence[float],
    betas: Tensor | Sequence[float],
    *,
    points_per_call: int | None = None,
    dtype: torch.dtype | None = None,
    resume: Any = None,
    process_group: Any = None,
) -> Iterator[LandscapeSlice]:
    r"""Stream the 2D slice :math:`f(\alpha_i, \beta_j) = L(\theta + \alpha_i d_1 + \beta_j d_2)`, row by row.

    The loss is the token-weighted mean LM cross-entropy over all batches of ``data``,
    :math:`\sum_b N_b \bar\ell_b / \sum_b N_b`, with the label rule of :meth:`ModelAdapter.loss`
    (``N_b`` target tokens in batch ``b``), in float64; the accuracy is the fraction of those targets
    predicted by the argmax. Everything runs on the private analysis copy ``adapter.analysis(dtype)``
    through ``torch.func.functional_call``; the user's model is never modified.

    Grid points are visited row-major (all betas of ``alphas[0]``, then ``alphas[1]``, ...). Each call
    evaluates up to ``P = points_per_call`` points. Their parameters :math:`\theta + \alpha d_1 + \beta d_2`
    are written in place into buffers allocated once, ``[P, *shape]`` per parameter (parameters that both
    directions leave at zero, e.g. ignored biases, are not copied). With ``P > 1`` they are built by one
    ``addmm`` from the stacked directions and ``functional_call`` is vmapped over them; ``P = 1`` is a plain
    call (no vmap, no stacked directions: one extra copy of the parameters in all), the route for large
    models and for models whose forward vmap cannot trace. The default (:func:`default_points_per_call`)
    keeps ``P`` copies plus ``P`` forward passes' activations near :data:`POINTS_MEMORY_BUDGET`, so a
    large model (a GPT-2-small at 124M parameters already) gets ``P = 1``. On a CPU, batching points
    only saves Python overhead on small models; on a GPU it fills the device. A grid point at the origin
    (all coordinates exactly 0) takes the origin's values, evaluated once.

    Under ``torch.distributed`` (``process_group=``), each rank passes its own shard of the data (its own
    batches; a rank may hold none) and the same model, directions, grid and arguments as every other rank
    (they are not compared). Per call, each rank's summed token losses, correct counts and target
    counts of the call's points are added over the ranks by one ``all_reduce`` (float64; on the CPU
    for gloo), so every rank yields exactly the single-process token-weighted loss and accuracy over
    all shards (up to the order of the additions). Argument errors on one rank are raised on every rank.

    Args:
        adapter: A :class:`ModelAdapter` or a supported model.
        data: One batch dict (``input_ids [B, S]``, optional ``attention_mask``, ``labels``) or an
            iterable of them; it is read once and held (token ids only) for the whole grid.
        d1, d2: :data:`Direction` with exactly the model's parameter names and shapes, finite values.
        alphas: ``[A]`` finite coordinates along ``d1`` (rows).
        betas: ``[B]`` finite coordinates along ``d2`` (columns).
        points_per_call: Grid points per call (``>= 1``), ``None`` = automatic. Under a process group
            the ranks use the smallest of their values.
        dtype: Compute dtype; ``None`` = the model's, at least float32.
        resume: A Job checkpoint (``.tensors``, ``.meta`` from :meth:`LandscapeSlice.state_dict` /
            :meth:`LandscapeSlice.meta`) to continue from; its grid must be this grid (under a process
            group: the same checkpoint on every rank).
        process_group: ``None`` (one process), or a ``torch.distributed.ProcessGroup`` whose ranks each
            hold a shard of the data, usually ``torch.distributed.group.WORLD``; collective calls are
            made on every rank in the same order, so every rank must iterate the slice to the end.

    Returns:
        An iterator of :class:`LandscapeSlice` (``loss [A, B]``), one snapshot (a copy) after every
        completed row (once per call when a call completes several), the last one complete. Arguments
        are checked when this function is called.

    Raises:
        ValueError: Empty or non-finite ``alphas``/``betas``; a direction with missing, extra or
            mis-shaped parameters or non-finite values (naming the parameter); batches without
            targets; a ``resume`` checkpoint of another grid or model.
        TypeError: Bad argument types, including a ``process_group`` that is not a ``ProcessGroup``.
        RuntimeError: ``process_group`` given without an initialised ``torch.distributed``; the
            arguments or data of another rank were rejected.
    """
    return _stream(adapter, data, {"d1": d1, "d2": d2}, alphas, betas, dtype, points_per_call, resume,
                   process_group)


def _stream(
    adapter: ModelAdapter | nn.Module,
    data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]],
    directions: Mapping[str, Mapping[str, Tensor]],
    alphas: Tensor | Sequence[float],
    betas: Tensor | Sequence[float] | None,
    dtype: torch.dtype | None,
    points_per_call: int | None,
    resume: Any,
    process_group: Any,
) -> Iterator[LandscapeSlice]:
    """Check the arguments (on every rank), evaluate the origin, and return the generator of rows."""
    check_group(process_group)

    def prepare() -> tuple:
        _check_points_per_call(points_per_call)
        a = _coordinates(alphas, "alphas")
        b = None if betas is None else _coordinates(betas, "betas")
        model = analysis_adapter(adapter, dtype)
        batches = _batches(model, data, allow_empty=process_group is not None)
        params = dict(model.model.named_parameters())
        checked = [_check_direction(d, params, what) for what, d in directions.items()]
        dirs, moved = [d for d, _ in checked], set().union(*(m for _, m in checked))
        return model, batches, dirs, moved, a, b, points_per_call or default_points_per_call(model, batches)

    model, batches, dirs, moved, alphas, betas, P = _on_all_ranks(prepare, process_group)
    evaluate = _GridEvaluator(model, batches, dirs, moved, P, process_group)
    loss0, acc0 = evaluate(torch.zeros(1, len(dirs), dtype=torch.float64))
    origin = (float(loss0[0]), float(acc0[0]))
    shape = (alphas.shape[0],) if betas is None else (alphas.shape[0], betas.shape[0])
    if resume is None:
        state = LandscapeSlice(
            alphas.clone(),
            None if betas is None else betas.clone(),
            torch.full(shape, math.nan, dtype=torch.float64),
            torch.full(shape, math.nan, dtype=torch.float64),
            0,
            *origin,
        )
    else:
        state = _resumed(resume, alphas, betas, origin[0])
    if betas is None:
        coords = alphas[:, None]  # [A, 1]
    else:
        coords = torch.cartesian_prod(alphas, betas).reshape(-1, 2)  # [A*B, 2], row-major
    per_row = 1 if betas is None else betas.shape[0]
    return _rows(evaluate, coords, per_row, P, state, origin)


def _rows(
    evaluate: _GridEvaluator,
    coords: Tensor,
    per_row: int,
    P: int,
    state: LandscapeSlice,
    origin: tuple[float, float],
) -> Iterator[LandscapeSlice]:
    """Evaluate ``coords [N, m]`` from the first point of row ``state.rows_done`` on, ``P`` points per call,
    yielding a snapshot whenever rows complete; points at the origin take its ``(loss, accuracy)``."""
    flat_loss, flat_acc = state.loss.view(-1), state.accuracy.view(-1)
    at_origin = (coords == 0).all(dim=1)  # [N]
    N = coords.shape[0]
    start = state.rows_done * per_row
    if start >= N:
        yield state.clone()
        return
    for s in range(start, N, P):
        e = min(s + P, N)
        todo = ~at_origin[s:e]
        flat_loss[s:e], flat_acc[s:e] = origin
        if todo.any():
            loss, acc = evaluate(coords[s:e][todo])
            flat_loss[s:e][todo], flat_acc[s:e][todo] = loss, acc
        rows = e // per_row
        if rows > state.rows_done:
            state.rows_done = rows
            yield state.clone()


def _resumed(resume: Any, alphas: Tensor, betas: Tensor | None, origin_loss: float) -> LandscapeSlice:
    tensors, meta = getattr(resume, "tensors", None), getattr(resume, "meta", None)
    if not isinstance(tensors, Mapping) or not isinstance(meta, Mapping):
        raise TypeError("resume must be a checkpoint with .tensors (dict) and .meta (dict)")
    state = LandscapeSlice.from_state(tensors, meta)
    same_grid = torch.equal(state.alphas, alphas) and (
        (betas is None and state.betas is None)
        or (betas is not None and state.betas is not None and torch.equal(state.betas, betas))
    )
    if not same_grid:
        raise ValueError("the checkpoint was taken on another grid (alphas/betas differ); start a new slice")
    saved = state.origin_loss
    if math.isfinite(saved) and abs(saved - origin_loss) > 1e-5 * max(1.0, abs(origin_loss)):
        raise ValueError(
            f"the checkpoint's origin loss {saved:.8g} differs from this model's {origin_loss:.8g}: "
            "it comes from another model or data"
        )
    return state
