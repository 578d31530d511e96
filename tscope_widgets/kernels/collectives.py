"""Reductions over the ranks of a ``torch.distributed`` process group, for kernels that take ``process_group=``.

Each rank of such a kernel holds a shard of the data; sums of losses, counts, gradients and products are
added over the ranks so that every rank holds the single-process result.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["all_reduce_", "check_group"]


def check_group(process_group: Any) -> None:
    """Raise unless ``process_group`` is ``None`` or a ``ProcessGroup`` of an initialised ``torch.distributed``."""
    if process_group is None:
        return
    import torch.distributed as dist

    if not dist.is_available() or not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            "process_group must be a torch.distributed.ProcessGroup (usually torch.distributed.group.WORLD) "
            f"or None, got {type(process_group).__name__}"
        )
    if not dist.is_initialized():
        raise RuntimeError(
            "process_group was given but torch.distributed is not initialised; call "
            "torch.distributed.init_process_group first (torchrun sets up the environment), or pass process_group=None"
        )


def all_reduce_(t: Tensor, group: Any, op: str = "sum") -> Tensor:
    """Reduce ``t`` over the ranks of ``group`` in place (``"sum"`` or ``"max"``) and return it.

    The collective runs where the backend needs it: on the CPU for gloo and mpi, on the current CUDA device
    for NCCL (``t`` is copied there and back when it lives elsewhere).
    """
    import torch.distributed as dist

    nccl = dist.get_backend(group) == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    buf = t if t.device == device and t.is_contiguous() else t.to(device).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=group)
    if buf is not t:
        t.copy_(buf)
    return t
