"""Sharding: which samples of a data set each rank processes (strided, without padding).

Rank ``r`` of ``W`` gets samples ``r, r + W, r + 2W, ...`` (:func:`shard_indices`); :func:`shard` cuts
that part out of an id tensor, a tuple or dict of tensors, or a list of samples.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .group import rank, world_size

__all__ = ["num_samples", "shard", "shard_indices"]


def _check_rank(rank_: int | None, world_size_: int | None) -> tuple[int, int]:
    r = rank() if rank_ is None else rank_
    w = world_size() if world_size_ is None else world_size_
    for name, value in (("rank", r), ("world_size", w)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={r}, world_size={w}")
    return r, w


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> Tensor:
    """Indices of the samples that ``rank`` processes: ``rank, rank + W, rank + 2W, ... < n``.

    A strided split, as in ``torch.utils.data.distributed.DistributedSampler`` but without its
    padding (which repeats samples to even out the shards, and would count them twice in a
    statistic). Every index in ``[0, n)`` goes to exactly one rank; shard sizes differ by at most
    one (the first ``n mod W`` ranks get one more). Strided rather than contiguous because data sets
    are often ordered (by length, source, difficulty): a stride spreads every part of the data, and so
    the work, over all ranks alike, and local sample ``k`` of rank ``r`` is global sample ``r + kW``.

    Args:
        n: Number of samples, ``>= 0``.
        rank: This process's rank; ``None`` = the current process group's (0 without one).
        world_size: ``W``, number of processes; ``None`` = the current process group's.

    Returns:
        int64 indices ``[ceil((n - rank) / W)]``, increasing.

    Raises:
        TypeError: non-integer arguments.
        ValueError: ``n < 0``, ``world_size < 1`` or a rank outside ``[0, world_size)``.

    Example:
        >>> shard_indices(7, 1, 3).tolist()
        [1, 4]
    """
    r, w = _check_rank(rank, world_size)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return torch.arange(r, max(r, n), w, dtype=torch.int64)


def num_samples(data) -> int:
    """Length of the sample axis of data :func:`shard` accepts; raises for anything else."""
    if isinstance(data, Tensor):
        if data.ndim == 0:
            raise ValueError("cannot shard a 0-d tensor: data needs a leading sample axis [N, ...]")
        return data.shape[0]
    if isinstance(data, tuple) and data and all(isinstance(t, Tensor) for t in data):
        parts = list(data)
    elif isinstance(data, Mapping):
        parts = list(data.values())
    elif isinstance(data, list):
        return len(data)
    else:
        raise TypeError(
            f"shard cannot split {type(data).__name__}: pass an id tensor [N, S], a tuple (input_ids, "
            "attention_mask), a dict of tensors or lists with a common first dimension, or a list of "
            "samples; shard an iterable of batches yourself (e.g. a DataLoader with a DistributedSampler)"
        )
    sizes = []
    for part in parts:
        if isinstance(part, Tensor) and part.ndim >= 1:
            sizes.append(part.shape[0])
        elif isinstance(part, list):
            sizes.append(len(part))
        else:
            raise TypeError(f"every entry of the data must be a tensor [N, ...] or a list of N samples, "
                            f"got {type(part).__name__}")
    if not sizes or len(set(sizes)) != 1:
        raise ValueError(f"the entries of the data must share their first dimension (samples), "
                         f"got sizes {sizes}")
    return sizes[0]


def shard(data, rank: int | None = None, world_size: int | None = None):
    """This rank's part of a data set, as selected by :func:`shard_indices`.

    Tensors are sliced with a step (``t[rank::W]``, a view, no copy), lists likewise.

    Args:
        data: An id tensor ``[N, S]`` (any tensor ``[N, ...]``), a tuple ``(input_ids, attention_mask)``
            of tensors, a dict whose values are tensors ``[N, ...]`` or lists of ``N`` samples (e.g.
            ``{"input_ids": ..., "attention_mask": ...}``), or a list of ``N`` samples (strings).
        rank: This process's rank; ``None`` = the current process group's.
        world_size: ``W``; ``None`` = the current process group's.

    Returns:
        The same kind of object holding samples ``rank, rank + W, ...`` (a dict keeps its type where it
        can be built from a plain dict, else becomes a plain dict).

    Raises:
        TypeError: unsupported data (e.g. a ``DataLoader``: shard it with a ``DistributedSampler``).
        ValueError: entries with different sample counts, or bad rank/world size.
    """
    r, w = _check_rank(rank, world_size)
    num_samples(data)
    step = slice(r, None, w)
    if isinstance(data, (Tensor, list)):
        return data[step]
    if isinstance(data, tuple):
        return tuple(t[step] for t in data)
    out = {key: value[step] for key, value in data.items()}
    try:
        return type(data)(out)
    except TypeError:
        return out
