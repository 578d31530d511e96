r"""Loss slices: 1D and 2D grids of the loss along directions, streamed row by row and resumable.

.. math:: f(\alpha, \beta) = L(\theta + \alpha\, d_1 + \beta\, d_2), \qquad g(\alpha) = L(\theta + \alpha\, d)

:func:`landscape_grid` builds the grid coordinates; :func:`slice_1d` and :func:`slice_2d` are generators
that check their arguments (on every rank under ``torch.distributed``), evaluate the origin, then the grid
through :mod:`.evaluator`, and yield a :class:`LandscapeSlice` as rows complete, so a Job can stream it;
``resume=`` continues from a checkpoint of one. :func:`quadratic_model` is the curvature overlay
:math:`L_0 + \tfrac12 \lambda \alpha^2` along a Hessian eigenvector. The user's model is never modified.

References:
    Li, H., Xu, Z., Taylor, G., Studer, C. & Goldstein, T. (2018). Visualizing the Loss Landscape of
    Neural Nets. NeurIPS 2018.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor, nn

from ...models.adapter import ModelAdapter
from ..collectives import all_reduce_, check_group
from ..cost import check_memory
from ..sensitivity import analysis_adapter
from .evaluator import _batches, _check_points_per_call, _GridEvaluator, default_points_per_call
from .state import _check_direction

__all__ = ["LandscapeSlice", "landscape_grid", "slice_1d", "slice_2d", "quadratic_model"]


# float64 values held per grid point: loss and accuracy of the state, of the snapshot copy a consumer holds,
# and the two coordinates of the row-major point list.
GRID_VALUES_PER_POINT = 6


def grid_memory(rows: int, cols: int | None = None) -> int:
    """Bytes a slice of ``rows`` x ``cols`` points (``cols=None``: a 1D slice) holds besides the model.

    :data:`GRID_VALUES_PER_POINT` float64 values per point: loss and accuracy ``[A, B]`` of the streamed state
    and of the snapshot a consumer keeps, and the ``[A*B, 2]`` coordinates visited.
    """
    return 8 * GRID_VALUES_PER_POINT * int(rows) * (1 if cols is None else int(cols))


def check_grid_memory(rows: int, cols: int | None, what: str) -> None:
    """Refuse, before anything is allocated, a grid whose arrays (:func:`grid_memory`) do not fit in memory.

    Raises:
        MemoryError: Naming ``what`` (the parameters that set the grid), the estimate, the memory available
            and what to do instead.
    """
    shape = f"{rows}" if cols is None else f"{rows} x {cols}"
    check_memory(
        grid_memory(rows, cols),
        "cpu",
        f"a landscape grid of {shape} points ({what})",
        ["use fewer grid points (a resolution of 51 to 201 per direction resolves a basin)",
         "or slice a smaller window with a smaller span and fewer points"],
    )


def landscape_grid(span: float, resolution: int, *, center: float = 0.0) -> Tensor:
    r"""``resolution`` evenly spaced float64 coordinates from ``center - span`` to ``center + span``.

    Point ``i`` is ``center + span * (i - c) / c`` with ``c = (resolution - 1) / 2``, computed in float64
    with one rounding per operation, so that

    - the endpoints are ``center - span`` and ``center + span`` exactly;
    - the offsets from ``center`` are symmetric bit for bit: point ``resolution - 1 - i`` is minus point
      ``i`` (``torch.linspace`` is not symmetric, and does not give an exact 0);
    - an odd ``resolution`` puts a point exactly on ``center`` (by default the origin, the model itself,
      whose loss a slice then reports unchanged); an even one straddles it.

    Args:
        span: Half-width ``> 0`` of the grid.
        resolution: Number of points, an int ``>= 2``.
        center: Middle of the grid (e.g. 0.5 to frame the points 0 and 1 of a checkpoint plane).

    Returns:
        ``[resolution]`` float64 tensor on the CPU, increasing.

    Raises:
        ValueError: A ``resolution`` that is not an int ``>= 2``, a ``span`` that is not a finite positive
            number, or a ``center`` that is not finite.

    Example:
        >>> landscape_grid(1.0, 5).tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    if isinstance(resolution, bool) or not isinstance(resolution, Integral) or resolution < 2:
        raise ValueError(f"resolution must be an int >= 2, got {resolution!r}")
    if isinstance(span, bool) or not isinstance(span, Real) or not math.isfinite(span) or span <= 0:
        raise ValueError(f"span must be a finite positive number, got {span!r}")
    if isinstance(center, bool) or not isinstance(center, Real) or not math.isfinite(center):
        raise ValueError(f"center must be a finite number, got {center!r}")
    resolution, span, center = int(resolution), float(span), float(center)
    c = (resolution - 1) / 2  # exact: an integer or a half-integer
    # Python floats: one IEEE rounding per operation, the same for i and its mirror resolution - 1 - i
    return torch.tensor([center + span * ((i - c) / c) for i in range(resolution)], dtype=torch.float64)


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
        >>> from tscope_widgets.kernels.landscape import random_direction
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
    through ``torch.func.functional_call``; the user's model is never modified, and hooks registered on
    its modules are not run (the copy has none).

    Grid points are visited row by row (the betas of ``alphas[0]``, then ``alphas[1]``, ...; with one point
    per call every other row backwards). Each call
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
        d1: :data:`Direction` of the rows (``alphas``), with exactly the model's parameter names and shapes,
            finite values.
        d2: :data:`Direction` of the columns (``betas``), likewise.
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
        MemoryError: A grid whose arrays (:func:`grid_memory`) would not fit in memory, before anything
            is allocated.
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
        check_grid_memory(a.shape[0], None if b is None else b.shape[0], "alphas, betas")
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
    yielding a snapshot whenever rows complete; points at the origin take its ``(loss, accuracy)``.

    With one point per call every other row is walked backwards (a serpentine), so that each step to the
    next point changes one coordinate and costs the evaluator one pass over the parameters, also from the
    end of one row to the start of the next."""
    flat_loss, flat_acc = state.loss.view(-1), state.accuracy.view(-1)
    at_origin = (coords == 0).all(dim=1)  # [N]
    N = coords.shape[0]
    order = torch.arange(N)  # [N], the visiting order of the flat grid
    if P == 1 and per_row > 1:
        rows = order.view(-1, per_row)
        rows[1::2] = rows[1::2].flip(1)
    start = state.rows_done * per_row
    if start >= N:
        yield state.clone()
        return
    for s in range(start, N, P):
        e = min(s + P, N)
        idx = order[s:e]
        todo = idx[~at_origin[idx]]
        flat_loss[idx], flat_acc[idx] = origin
        if todo.numel():
            flat_loss[todo], flat_acc[todo] = evaluate(coords[todo])
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
