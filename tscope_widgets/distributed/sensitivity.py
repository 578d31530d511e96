"""Position-to-position sensitivity over shards: each rank runs its part, then one exact merge.

:func:`iter_sensitivity_distributed` runs :func:`~tscope_widgets.kernels.sensitivity.iter_sensitivity`
on this rank's shard (:func:`~tscope_widgets.distributed.shard.shard`), yields local snapshots without
communicating, and ends with one merged snapshot, equal on every rank (:func:`all_merge_welford`);
:func:`sensitivity_statistics` returns that snapshot. A rank that fails makes every rank raise at the
merge instead of waiting.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..kernels.reservoir import SampleReservoir
from ..kernels.sensitivity import SensitivitySnapshot, iter_sensitivity
from ..models.adapter import LayerDict
from .group import RankFailure, all_gather_json, comm_device, failure_text, is_distributed, rank, rank_seed, world_size
from .merge import all_merge_welford
from .shard import num_samples, shard

__all__ = ["DistributedSensitivitySnapshot", "iter_sensitivity_distributed", "sensitivity_statistics"]


@dataclass
class DistributedSensitivitySnapshot(SensitivitySnapshot):
    """A :class:`SensitivitySnapshot` that knows which rank made it and whether it is merged.

    Local snapshots (``merged=False``) hold the statistics of this rank's shard: ``done``/``total``
    count this shard's samples and ``seed`` is the rank's :func:`rank_seed`. The final, merged
    snapshot (``merged=True``) holds the statistics of all ranks (identical on every rank), ``done``,
    ``total`` and ``batches`` summed over ranks, the run's base ``seed``, and rank 0's reservoir and
    probe generator state on every rank.

    Attributes:
        rank: The rank that yielded it.
        world_size: Number of processes of the run.
        merged: Whether ``stats`` covers every rank's shard.
    """

    rank: int = 0
    world_size: int = 1
    merged: bool = False

    def meta(self) -> dict[str, Any]:
        """:meth:`SensitivitySnapshot.meta` plus ``rank``, ``world_size`` and ``merged``."""
        out = super().meta()
        out.update(rank=self.rank, world_size=self.world_size, merged=self.merged)
        return out


def iter_sensitivity_distributed(
    adapter,
    data,
    *,
    seed: int = 0,
    resume=None,
    sharded: bool = False,
    **kwargs,
) -> Iterator[DistributedSensitivitySnapshot]:
    """:func:`~tscope_widgets.kernels.sensitivity.iter_sensitivity` over this rank's shard, merged at the end.

    Yields this rank's local snapshot after every batch (``merged=False``, for a progress bar; no
    communication happens meanwhile), then, once the shard is done, one merged snapshot
    (``merged=True``) equal on every rank: statistics of all ranks merged with
    :func:`all_merge_welford`, so its ``stats`` equal a single-process run's (counts, minima and
    maxima exactly, means and variances to rounding; for ``method="exact"`` and ``"full"``, whose
    maps do not depend on the seed). Ranks whose longest sample is shorter than another rank's (text
    data, iterables of batches) have their cell grid extended with empty cells (count 0) first.

    The reservoir of the merged snapshot is rank 0's, sent to every rank: a uniform sample of rank
    0's shard rather than of the whole data set (gathering every rank's reservoir and re-sampling
    would cost ``W`` times the memory for a drill-down view). With ``sharded=False`` its
    ``sample_index`` is remapped to positions in the whole data set (local ``k`` -> ``k·W``).

    Every rank must run the generator to its end: the merge is a collective operation. If a rank
    fails while processing its shard, every rank raises at the merge instead of waiting forever: the
    failed rank its own error, the others :class:`RankFailure` with its message. An exception thrown
    into the generator (``gen.throw(exc)``, e.g. a checkpoint that could not be written) counts as a
    failure of this rank's shard in the same way.

    Args:
        adapter: Model or adapter, as for ``iter_sensitivity``; the same on every rank.
        data: The whole data set (the same on every rank), split with :func:`shard`; with
            ``sharded=True``, this rank's part already (e.g. a ``DataLoader`` over a
            ``DistributedSampler``; keep ``drop_last`` semantics in mind: padded samples count twice).
        seed: Base seed; rank ``r`` runs with :func:`rank_seed` ``(seed, r)``.
        resume: A checkpoint of a local snapshot of this rank from an earlier run with the same world
            size; merged snapshots cannot be resumed from.
        sharded: Whether ``data`` is already this rank's part.
        **kwargs: Passed to ``iter_sensitivity`` (``layers``, ``method``, ``batch_size``, ``max_seq_len``,
            ``tokenizer``, ``source``, ``probes``, ``chunk_size``, ``dtype``, ``mode``, ``reservoir_size``).

    Returns:
        A generator of :class:`DistributedSensitivitySnapshot`.

    Raises:
        ValueError: fewer samples than processes, a checkpoint of another rank, world size or a merged
            snapshot, plus everything ``iter_sensitivity`` raises; at the merge, :class:`RankFailure` on
            ranks whose peers failed.
        TypeError: data :func:`shard` cannot split (pass ``sharded=True`` with your own split).
    """
    r, w = rank(), world_size()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if resume is not None:
        _check_resume(resume, r, w)
    if not sharded:
        n = num_samples(data)
        if n < w:
            raise ValueError(f"data has {n} sample(s) for {w} processes: every rank needs at least one "
                             "sample")
        data = shard(data, r, w)
    local = iter_sensitivity(adapter, data, seed=rank_seed(seed, r), resume=resume, **kwargs)
    return _run_and_merge(local, seed, r, w, remap_reservoir=not sharded)


def sensitivity_statistics(adapter, data, **kwargs) -> DistributedSensitivitySnapshot:
    """Run :func:`iter_sensitivity_distributed` to the end and return the merged snapshot.

    Takes the same arguments; call it on every rank.
    """
    last = deque(iter_sensitivity_distributed(adapter, data, **kwargs), maxlen=1)  # keeps one snapshot
    return last[0]


def _check_resume(resume, r: int, w: int) -> None:
    meta = getattr(resume, "meta", None)
    if not isinstance(meta, Mapping):
        raise TypeError(f"resume must be a Checkpoint with .tensors and .meta, got {type(resume).__name__}")
    if meta.get("merged"):
        raise ValueError("the resume checkpoint holds merged statistics of all ranks; resume each rank "
                         "from a checkpoint of its own local snapshots (merged=False)")
    if meta.get("rank", 0) != r or meta.get("world_size", 1) != w:
        raise ValueError(f"the resume checkpoint is from rank {meta.get('rank', 0)} of "
                         f"{meta.get('world_size', 1)} process(es); this is rank {r} of {w}")


def _with_rank(snap: SensitivitySnapshot, r: int, w: int, merged: bool = False,
               **changes) -> DistributedSensitivitySnapshot:
    values = {f.name: getattr(snap, f.name) for f in dataclasses.fields(SensitivitySnapshot)}
    values.update(changes)
    return DistributedSensitivitySnapshot(**values, rank=r, world_size=w, merged=merged)


def _run_and_merge(local: Iterator[SensitivitySnapshot], seed: int, r: int, w: int,
                   remap_reservoir: bool) -> Iterator[DistributedSensitivitySnapshot]:
    last, error = None, None
    try:
        for snap in local:
            last = snap
            yield _with_rank(snap, r, w)
    except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
        if not is_distributed():
            raise
        error = exc
    if not is_distributed():
        yield _with_rank(last, r, w, merged=True, seed=seed)
        return

    device = comm_device()
    ok = error is None
    row = torch.tensor([int(not ok), last.done if ok else 0, last.batches if ok else 0,
                        -1 if not ok or last.total is None else last.total, last.seq_len if ok else 0],
                       dtype=torch.int64, device=device)
    rows = [torch.empty_like(row) for _ in range(w)]
    dist.all_gather(rows, row)
    table = torch.stack(rows).cpu()  # [W, 5]: failed, done, batches, total (-1: unknown), seq_len
    if bool(table[:, 0].any()):  # every rank sees the same table, so all of them gather the messages
        reports = all_gather_json(failure_text(error), device)
        if error is not None:
            raise error
        raise RankFailure("while processing their shard",
                          {r: report for r, report in enumerate(reports) if report is not None})

    seq_len = int(table[:, 4].max())
    grown = {lay: st.grown(seq_len) for lay, st in last.stats.items()}
    stats = LayerDict(all_merge_welford(grown), num_layers=last.stats.num_layers)
    reservoir = last.reservoir.grown(seq_len)
    if remap_reservoir and r == 0:
        idx = reservoir.sample_index
        reservoir.sample_index = torch.where(idx >= 0, idx * w, idx)
    probe_rng = last.probe_rng.clone()
    _broadcast_from_rank0(reservoir, probe_rng, device)
    totals = table[:, 3]
    yield _with_rank(
        last, r, w, merged=True, seed=seed, stats=stats, reservoir=reservoir, probe_rng=probe_rng,
        seq_len=seq_len, done=int(table[:, 1].sum()), batches=int(table[:, 2].sum()),
        total=None if bool((totals < 0).any()) else int(totals.sum()),
    )


def _broadcast_from_rank0(reservoir: SampleReservoir, probe_rng: Tensor, device: torch.device) -> None:
    """Overwrite ``reservoir`` and ``probe_rng`` in place with rank 0's (same shapes on every rank)."""
    sd = reservoir.state_dict()
    sd["probe_rng"] = probe_rng
    received = {}
    for key in sorted(sd):
        t = sd[key]
        wire = (t.to(torch.uint8) if t.dtype == torch.bool else t).to(device).contiguous()  # gloo has no bool
        dist.broadcast(wire, src=0)
        received[key] = wire.cpu().to(t.dtype)
    probe_rng.copy_(received.pop("probe_rng"))
    reservoir.load_state_dict(received)
