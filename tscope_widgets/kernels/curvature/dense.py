"""The dense curvature matrix of a small model, behind a memory guard (tests and teaching)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ...models.adapter import ModelAdapter
from ...models.head_groups import param_groups_with_heads
from ...models.registry import adapt
from .groups import GroupSpec, ParamLayout, resolve_groups
from .hessian import HessianOperator
from .losses import LogitLoss
from .problem import LossFn

__all__ = ["dense_hessian", "DENSE_HESSIAN_MAX_BYTES", "DENSE_CHUNK_COLUMNS"]

DENSE_HESSIAN_MAX_BYTES = 256 * 2**20
DENSE_CHUNK_COLUMNS = 64  # identity columns per vmapped product in dense_hessian


def dense_hessian(
    adapter: ModelAdapter | nn.Module,
    data: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]],
    *,
    groups: GroupSpec = None,
    col_groups: GroupSpec = None,
    kind: str = "hessian",
    loss: LossFn | LogitLoss | str | None = None,
    dtype: torch.dtype = torch.float64,
    max_bytes: int = DENSE_HESSIAN_MAX_BYTES,
) -> Tensor:
    """The dense curvature matrix ``[P_rows, P_cols]`` in ``dtype``: :class:`HessianOperator` times the identity.

    Identity columns go through the operator in vmapped chunks of ``DENSE_CHUNK_COLUMNS``. For small
    models and tests; sizes are checked before any model copy is made.

    Args:
        adapter: A :class:`ModelAdapter` or supported model; never modified (the operator works on a copy).
        data: One batch dict (``input_ids [B, S]``, optional ``attention_mask``, ``labels``) or an iterable
            of them.
        groups: Row groups: ``None`` (all of ``param_groups()``), a name, a glob pattern, or a list.
        col_groups: Column groups (``None``: the row groups, a symmetric matrix).
        kind: ``"hessian"``, ``"ggn"`` or ``"functional"`` (Hessian minus GGN).
        loss: ``None`` for the adapter's LM loss; ``"ce"``, ``"mse"`` or a ``LogitLoss`` (any ``kind``); or
            ``loss(adapter, batch) -> scalar`` (``"hessian"`` only).
        dtype: Analysis and result dtype (float64 by default).
        max_bytes: Refuse when the matrix ``P_rows * P_cols * itemsize`` would exceed this many bytes.

    Returns:
        ``H [P_rows, P_cols]`` in the flat order of :class:`HessianOperator` (``offsets`` locate groups).

    Raises:
        MemoryError: when the matrix is over ``max_bytes``; the message gives the sizes and alternatives.
    """
    user = adapt(adapter)
    available = param_groups_with_heads(user)
    rows = resolve_groups(available, groups)
    cols = rows if col_groups is None else resolve_groups(available, col_groups)
    params = dict(user.model.named_parameters())
    P, Q = (ParamLayout(params, available, names).numel for names in (rows, cols))
    need = P * Q * torch.empty((), dtype=dtype).element_size()
    if need > max_bytes:
        raise MemoryError(
            f"a dense {kind} of {P} x {Q} parameters in {dtype} needs {need:,} bytes ({need / 2**20:.3g} MiB), "
            f"over max_bytes={max_bytes:,} ({max_bytes / 2**20:.3g} MiB); restrict groups= (and col_groups=) to "
            "fewer parameter groups, raise max_bytes, or use HessianOperator with lanczos / hutchpp_trace / "
            "slq_density, which need only products"
        )
    op = HessianOperator(user, data, groups=rows, col_groups=None if col_groups is None else cols, kind=kind,
                         loss=loss, dtype=dtype)
    out = torch.empty(P, Q, dtype=dtype, device=op.device)
    for start in range(0, Q, DENSE_CHUNK_COLUMNS):
        stop = min(start + DENSE_CHUNK_COLUMNS, Q)
        eye = torch.zeros(Q, stop - start, dtype=dtype, device=op.device)
        eye[torch.arange(start, stop), torch.arange(stop - start)] = 1
        out[:, start:stop] = op.matmat(eye)
    return out
