r"""Exact merges of :class:`~tscope_widgets.kernels.welford.WelfordState` over ranks (one all-gather).

The pairwise merge of Welford states (Chan, Golub & LeVeque 1983) is exact and associative in exact
arithmetic, so each rank accumulates its shard alone and :func:`all_merge_welford` gathers every rank's
states (packed by :meth:`WelfordState.to_flat`) and merges them in rank order on every rank.

References:
    Chan, T. F., Golub, G. H. & LeVeque, R. J. (1983). Algorithms for computing the sample variance:
    analysis and recommendations. The American Statistician 37(3), 242-247.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import torch
import torch.distributed as dist

from ..kernels.welford import WelfordState
from .group import all_gather_json, comm_device, is_distributed, world_size

__all__ = ["all_merge_welford"]

K = TypeVar("K")


def all_merge_welford(states: Mapping[K, WelfordState]) -> dict[K, WelfordState]:
    """Merge every rank's Welford states; every rank gets the same merged states.

    All ranks must call it with the same keys, in the same order, with the same shapes and dtypes
    (checked: a mismatch raises the same ValueError on every rank instead of hanging). Each rank's
    states are packed into one float64 buffer (casts to and from float64 are exact for float32 and
    float64 statistics and for counts below 2^53), one ``all_gather`` collects all buffers, and every
    rank merges them in rank order 0, 1, ..., W-1 with :meth:`WelfordState.merge` (Chan, Golub &
    LeVeque 1983). The same operations in the same order on every rank give bit-identical results.

    Exactness: ``count``, ``min``, ``max`` and ``total_count`` equal a single pass over all the
    data exactly; ``mean`` and ``var`` equal it up to rounding (the merge is exact in exact
    arithmetic; only the order of floating-point operations differs): in float64 about 1e-15 relative,
    times ``|mean| / std`` for the variance.

    Without an initialised multi-process group this returns copies of ``states``.

    Args:
        states: ``{key: WelfordState}`` of this rank, on any device (buffers travel on the CPU with
            gloo and on the current GPU with nccl).

    Returns:
        ``{key: WelfordState}``, new states on the devices of the inputs, in the order of ``states``.

    Raises:
        TypeError: when ``states`` is not a mapping of :class:`WelfordState`.
        ValueError: when the ranks' keys, shapes or dtypes differ (on every rank).

    References:
        Chan, Golub & LeVeque (1983), The American Statistician 37(3).
    """
    if not isinstance(states, Mapping):
        raise TypeError(f"states must be a mapping of WelfordState, got {type(states).__name__}")
    bad = [key for key, st in states.items() if not isinstance(st, WelfordState)]
    if bad:
        raise TypeError(f"states must hold WelfordState values; keys {bad!r} hold something else")
    if not is_distributed():
        return {key: st.clone() for key, st in states.items()}
    device = comm_device()
    signature = [[repr(key), list(st.shape), str(st.dtype)] for key, st in states.items()]
    signatures = all_gather_json(signature, device)
    for r, other in enumerate(signatures):
        if other != signatures[0]:
            raise ValueError(
                "all_merge_welford needs the same keys, shapes and dtypes, in the same order, on every rank; "
                f"rank 0 has {signatures[0]} (key, shape, dtype) but rank {r} has {other}"
            )
    if not states:
        return {}
    packed = [st.to_flat() for st in states.values()]
    local = torch.cat(packed).to(device)
    gathered = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(gathered, local)
    per_rank = torch.stack(gathered).cpu()  # [W, P]
    out: dict[K, WelfordState] = {}
    offset = 0
    for (key, st), flat in zip(states.items(), packed, strict=True):
        width = flat.numel()
        merged = WelfordState.from_flat(per_rank[0, offset:offset + width], st.shape, st.dtype, st.device)
        for r in range(1, per_rank.shape[0]):
            merged.merge(WelfordState.from_flat(per_rank[r, offset:offset + width], st.shape, st.dtype, st.device))
        out[key] = merged
        offset += width
    return out
