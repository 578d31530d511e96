r"""Directions from a training trajectory: its principal directions, and its path drawn on a plane.

:func:`pca_directions` finds the top principal directions of a trajectory of checkpoints (Li et al., 2018,
sec. 7) and :func:`project_trajectory` gives each checkpoint's coordinates on the plane of two directions,
so a slice can draw the path of training over its loss surface. Checkpoints are read one tensor at a time
(:mod:`.state`), so lazy state dicts stream a trajectory that does not fit in memory.

References:
    Li, H., Xu, Z., Taylor, G., Studer, C. & Goldstein, T. (2018). Visualizing the Loss Landscape of
    Neural Nets. NeurIPS 2018.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ...models.adapter import ModelAdapter
from .state import Direction, ModelState, _check_plain_direction, _flat64, _resolve_keys, _StateReader

__all__ = ["pca_directions", "project_trajectory"]


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
        d1: First direction (coordinate ``c_1``).
        d2: Second direction (coordinate ``c_2``), with the same parameter names and shapes as ``d1``.
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
