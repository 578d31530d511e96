"""What the streamed statistics kernels share: a run over batches that counts, hashes and resumes.

:func:`~.sensitivity.iter_sensitivity` and :func:`~.attention.iter_attention` read a data set batch by batch,
update Welford statistics and yield a snapshot after each batch. :class:`BatchRun` holds what they do alike:
the checks of a batch (ids ``[B, S]``; the statistics' size fixed by the first batch or by ``max_seq_len``,
longer batches truncated only then), the sample and batch counters, the running sha256 of the data
(:class:`~.fingerprint.DataHasher`), and on resume the replay of the checkpoint's batches that refuses other data.
The checks of a resumed state (:func:`check_counters`, :func:`check_welford`) name the checkpoint and the field.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from .fingerprint import DataHasher, LazyFingerprint, model_fingerprint
from .welford import WelfordState

__all__ = ["BatchRun", "checkpoint_where", "check_counters", "check_welford"]


class BatchRun(abc.ABC):
    """One streamed run over ``stream`` (:func:`~tscope_widgets.data.batch_stream`) for ``model`` (an adapter).

    Subclasses write ``_allocate(seq_len)`` (the statistics of that size), ``_update(ids, mask)`` (add one
    checked batch) and ``_snapshot()``; :meth:`snapshots` drives them and keeps the counters and the hash.
    """

    def __init__(self, model: Any, stream: Any):
        self.model, self.stream = model, stream
        self.seq_len: int | None = stream.seq_len
        self.done = self.batches = 0
        self.resumed = False
        self.hasher = DataHasher()
        self.batch_iter: Iterator | None = None
        self.model_fp = LazyFingerprint(lambda: model_fingerprint(model.model))

    @abc.abstractmethod
    def _allocate(self, seq_len: int) -> None:
        ...

    @abc.abstractmethod
    def _update(self, ids: Tensor, mask: Tensor | None) -> None:
        ...

    @abc.abstractmethod
    def _snapshot(self) -> Any:
        ...

    def snapshots(self) -> Iterator[Any]:
        """One snapshot after each batch (after the resumed ones); one at once when a resumed run has none left.

        Raises:
            ValueError: When the data yield no batch (and nothing was resumed), or a batch is malformed.
        """
        started = False
        batches = self.batch_iter if self.batch_iter is not None else self.stream.batches(0, 0)
        for ids, mask in batches:
            started = True
            self._step(ids, mask)
            yield self._snapshot()
        if not started:
            if not self.resumed:
                raise ValueError("data is empty: it yielded no batches")
            yield self._snapshot()

    def _step(self, ids: Tensor, mask: Tensor | None) -> None:
        if not isinstance(ids, Tensor) or ids.ndim != 2:
            raise ValueError(
                f"a batch's input_ids must be a tensor [B, S], got {getattr(ids, 'shape', type(ids).__name__)}"
            )
        if self.seq_len is None:
            self._allocate(ids.shape[1])
        if ids.shape[1] > self.seq_len:
            if self.stream.seq_len is None:
                raise ValueError(
                    f"batch {self.batches} has length {ids.shape[1]} > {self.seq_len} (the first batch's); "
                    "pass max_seq_len to fix the statistics' size (longer batches are then truncated)"
                )
            ids, mask = ids[:, : self.seq_len], None if mask is None else mask[:, : self.seq_len]
        self._update(ids, mask)
        self.hasher.add(ids, mask)
        self.done += ids.shape[0]
        self.batches += 1

    def _skip_resumed(self, fingerprint: Mapping) -> None:
        """Read and hash the first ``batches`` batches; refuse data other than the checkpoint's."""
        total = self.stream.total
        if total is not None and self.done > total:
            raise ValueError(
                f"the checkpoint was made with other data: it has done={self.done} samples, this data "
                f"set only {total}"
            )
        self.batch_iter = iter(self.stream.batches(0, 0))
        for _ in range(self.batches):
            try:
                ids, mask = next(self.batch_iter)
            except StopIteration:
                raise ValueError(
                    f"the checkpoint was made with other data: it has done={self.done} samples in "
                    f"{self.batches} batches, this data set ends after {self.hasher.samples} samples"
                ) from None
            self.hasher.add(ids, mask)
        saved, now = fingerprint.get("data_sha256"), self.hasher.hexdigest()
        if self.hasher.samples != self.done or saved != now:
            raise ValueError(
                f"the checkpoint was made with other data: its first {self.done} samples have sha256 "
                f"{str(saved)[:12]}…, the first {self.batches} batches ({self.hasher.samples} samples) "
                f"of this data {now[:12]}…"
            )


# ---------------------------------------------------------------------------- checks of a resumed state
def checkpoint_where(checkpoint: Any) -> str:
    """How a message names ``checkpoint``: its path when it has one."""
    path = getattr(checkpoint, "path", None)
    return f"checkpoint {path}" if path else "the resume checkpoint"


def check_counters(meta: Mapping, where: str) -> tuple[int, int, int]:
    """``done``, ``batches`` and ``seq_len`` of a checkpoint's meta, checked (ints >= 1, batches <= done,
    ``total`` absent or >= done)."""
    out = []
    for key in ("done", "batches", "seq_len"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: field meta.{key} must be an int >= 1, got {value!r}")
        out.append(value)
    done, batches, seq_len = out
    if batches > done:
        raise ValueError(f"{where}: field meta.batches={batches} exceeds meta.done={done}")
    total = meta.get("total")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < done):
        raise ValueError(f"{where}: field meta.total={total!r} is not an int >= done={done}")
    return done, batches, seq_len


def check_welford(state: WelfordState, done: int, where: str) -> None:
    """Counts at most ``done`` and rows equal to it; finite moments; ``min <= mean <= max`` where counted."""
    if state.total_count != done:
        raise ValueError(f"{where}.rows: {state.total_count} samples, but meta.done is {done}")
    count = state.count
    if bool((count > done).any()):
        raise ValueError(f"{where}.count: a count of {count.max().item():g} exceeds meta.done={done}")
    seen = count > 0
    sd = state.state_dict()
    for key in ("mean", "m2", "min", "max"):
        if not bool(torch.isfinite(sd[key][seen]).all()):
            raise ValueError(f"{where}.{key}: not finite in a cell with count > 0")
    mean, lo, hi = sd["mean"][seen], sd["min"][seen], sd["max"][seen]
    tol = 1e-9 * torch.maximum(lo.abs(), hi.abs())
    if bool((lo > hi).any()) or bool((mean < lo - tol).any()) or bool((mean > hi + tol).any()):
        raise ValueError(f"{where}.min/mean/max: min <= mean <= max fails in a cell with count > 0")
