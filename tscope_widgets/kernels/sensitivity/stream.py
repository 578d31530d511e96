"""Sensitivity over a data set: per-cell population statistics, streamed batch by batch and resumable.

:func:`iter_sensitivity` reads any data :mod:`tscope_widgets.data` accepts, computes
:func:`~.maps.position_sensitivity` maps batch by batch, folds them into one
:class:`~tscope_widgets.kernels.welford.WelfordState` per layer and a
:class:`~tscope_widgets.kernels.reservoir.SampleReservoir` of per-sample maps, and yields a
:class:`SensitivitySnapshot` after each batch, so a Job can stream it and checkpoint it; ``resume=``
continues a run from such a checkpoint, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ...data import batch_stream
from ...models.adapter import LayerDict, ModelAdapter
from ..reservoir import SampleReservoir
from ..welford import WelfordState
from .maps import (
    Layer,
    _check_method_options,
    _depths,
    _resolve_targets,
    analysis_adapter,
    choose_mode,
    position_sensitivity,
)

__all__ = ["SensitivitySnapshot", "iter_sensitivity"]


@dataclass
class SensitivitySnapshot:
    """Population statistics of sensitivity maps after some batches; one per batch.

    A snapshot owns copies of its statistics and reservoir, so later batches do not change it.

    Attributes:
        stats: ``LayerDict {layer: WelfordState}`` over samples, cell grid ``[S_max, S_max]``,
            float64 on the CPU; padded cells are excluded, so counts differ per cell.
        done: Samples processed so far (whole data set positions, including resumed ones).
        total: Samples in the data set when known, else ``None``.
        batches: Batches processed so far.
        layers: Canonical target layer labels.
        method: ``"exact"``, ``"hutchinson"`` or ``"full"``.
        mode: ``"reverse"`` or ``"forward"`` (resolved).
        seq_len: ``S_max``, the size of the cell grid.
        reservoir: :class:`SampleReservoir` of per-sample maps, including the last batch's samples
            while it is filling.
        source: ``"embeddings"`` or the source block index.
        probes: Hutchinson probes per position (recorded for every method).
        batch_size: Samples per batch requested (resuming with another value changes rounding).
        seed: Seed of the probe and reservoir generators.
        probe_rng: ``uint8`` state of the probe generator after this batch.
    """

    stats: LayerDict
    done: int
    total: int | None
    batches: int
    layers: list[Layer]
    method: str
    mode: str
    seq_len: int
    reservoir: SampleReservoir
    source: str | int = "embeddings"
    probes: int = 8
    batch_size: int = 8
    seed: int = 0
    probe_rng: Tensor = field(default_factory=lambda: torch.Generator().get_state())

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors for a checkpoint: ``stats.<layer>.<key>``, ``reservoir.<key>`` and ``probe_rng``."""
        out: dict[str, Tensor] = {}
        for layer, state in self.stats.items():
            out.update({f"stats.{layer}.{k}": v for k, v in state.state_dict().items()})
        out.update({f"reservoir.{k}": v for k, v in self.reservoir.state_dict().items()})
        out["probe_rng"] = self.probe_rng.clone()
        return out

    def meta(self) -> dict[str, Any]:
        """JSON-serialisable description: counters and the settings a resume must match."""
        return {
            "kernel": "sensitivity",
            "done": self.done,
            "total": self.total,
            "batches": self.batches,
            "layers": list(self.layers),
            "method": self.method,
            "mode": self.mode,
            "seq_len": self.seq_len,
            "source": self.source,
            "probes": self.probes,
            "batch_size": self.batch_size,
            "reservoir_size": self.reservoir.capacity,
            "seed": self.seed,
        }


def iter_sensitivity(
    adapter: ModelAdapter | torch.nn.Module,
    data,
    *,
    layers: Layer | Sequence[Layer] = (-1,),
    method: str = "exact",
    batch_size: int = 8,
    max_seq_len: int | None = None,
    tokenizer=None,
    source: Layer = "embeddings",
    probes: int = 8,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    mode: str = "auto",
    reservoir_size: int = 32,
    seed: int = 0,
    resume=None,
) -> Iterator[SensitivitySnapshot]:
    """Stream per-cell statistics of :func:`position_sensitivity` maps over a data set.

    Each batch's maps ``[B, S_b, S_b]`` are padded with NaN to ``[B, S_max, S_max]`` and folded into
    one :class:`WelfordState` per layer (NaN cells masked out), and offered to a
    :class:`SampleReservoir`. One :class:`SensitivitySnapshot` is yielded per batch.

    Data:
        - an id tensor ``[N, S]``, a tuple ``(ids, mask)`` or a dict with ``input_ids`` and optional
          ``attention_mask``: cut into batches of ``batch_size``; ``S_max = min(S, max_seq_len)``.
        - a list of strings with ``tokenizer`` (a Hugging Face tokenizer with a pad token): each
          batch is padded on the right to its longest text and truncated to ``max_seq_len``;
          ``S_max`` = the longest tokenized text (capped at ``max_seq_len``).
        - any other iterable of batches (e.g. a ``DataLoader``): dicts with ``input_ids`` and
          optional ``attention_mask``, or id tensors; ``S_max = max_seq_len``, or the first batch's
          length without it (a longer later batch is then an error). Longer batches are truncated.

    Resume: pass the ``Checkpoint`` (``.tensors``: :meth:`SensitivitySnapshot.state_dict`, ``.meta``:
    :meth:`SensitivitySnapshot.meta`) of an earlier run over the same data. Statistics, reservoir,
    probe generator and counters are restored and the first ``done`` samples (an iterable of
    batches: the first ``batches`` batches) are skipped; with the same ``batch_size`` the result is
    bit-identical to an uninterrupted run. A checkpoint of a finished run yields its snapshot again.

    Args:
        adapter: Model or :class:`ModelAdapter`; analysed on a private copy.
        data: See above.
        layers: Target layer(s): ints (negative count from the end), ``"final"`` or ``"all"``.
        method: ``"exact"``, ``"hutchinson"`` or ``"full"``.
        batch_size: Samples per batch (``>= 1``) for tensors and strings.
        max_seq_len: Truncation length (``>= 1``) and, for iterables of batches, ``S_max``.
        tokenizer: Hugging Face tokenizer, required for strings.
        source: ``"embeddings"`` or a block index ``l`` (the residual stream entering block ``l``).
        probes: ``K >= 1`` Hutchinson probes per position.
        chunk_size: Vectors per vmapped pass; ``None`` = automatic (see :func:`position_sensitivity`).
        dtype: Compute dtype; ``None`` = the model's, promoted to at least float32.
        mode: ``"auto"``, ``"reverse"`` or ``"forward"``, resolved once for the whole run.
        reservoir_size: Capacity of the reservoir (``>= 0``).
        seed: Seeds the Hutchinson probes (``seed``) and the reservoir (``seed + 1``).
        resume: A ``Checkpoint`` or ``None``.

    Returns:
        A generator of :class:`SensitivitySnapshot`; ``total`` is the number of samples when known.

    Raises:
        ValueError: empty data, bad sizes, a checkpoint from different settings, plus everything
            :func:`position_sensitivity` raises (when the generator runs).
        TypeError: unsupported data, strings without a tokenizer.
    """
    _check_method_options(method, mode, probes, chunk_size)
    for name, value, low in (("batch_size", batch_size, 1), ("reservoir_size", reservoir_size, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if max_seq_len is not None and (
        isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 1
    ):
        raise ValueError(f"max_seq_len must be an int >= 1 or None, got {max_seq_len!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    model = analysis_adapter(adapter, dtype)
    targets, src = _resolve_targets(model, layers, source)
    mode = choose_mode(
        method, mode, _depths(model, targets, src), model.d_model, model.d_model, probes, model.causal
    )
    stream = batch_stream(data, batch_size, max_seq_len, tokenizer)
    run = _Run(
        model, stream, targets, src, method, mode, probes, chunk_size, batch_size, reservoir_size, seed
    )
    if resume is not None:
        run.restore(resume)
    return run.snapshots()


class _Run:
    """The state of one :func:`iter_sensitivity` run: statistics, reservoir, generator, counters."""

    def __init__(
        self,
        model,
        stream,
        layers,
        source,
        method,
        mode,
        probes,
        chunk_size,
        batch_size,
        reservoir_size,
        seed,
    ):
        self.model, self.stream, self.layers, self.source = model, stream, layers, source
        self.method, self.mode, self.probes, self.chunk_size = method, mode, probes, chunk_size
        self.batch_size, self.reservoir_size, self.seed = batch_size, reservoir_size, seed
        self.seq_len = stream.seq_len
        self.generator = torch.Generator().manual_seed(seed)
        self.stats: LayerDict | None = None
        self.reservoir: SampleReservoir | None = None
        self.done = self.batches = 0
        self.resumed = False
        if self.seq_len is not None:
            self._allocate(self.seq_len)

    def _allocate(self, seq_len: int) -> None:
        self.seq_len = seq_len
        self.stats = LayerDict(
            {lay: WelfordState((seq_len, seq_len)) for lay in self.layers}, num_layers=self.model.num_layers
        )
        self.reservoir = SampleReservoir(self.reservoir_size, seq_len, self.layers, seed=self.seed + 1)

    def restore(self, checkpoint) -> None:
        tensors, meta = getattr(checkpoint, "tensors", None), getattr(checkpoint, "meta", None)
        if not isinstance(tensors, Mapping) or not isinstance(meta, Mapping):
            raise TypeError(
                f"resume must be a Checkpoint with .tensors and .meta, got {type(checkpoint).__name__}"
            )
        if meta.get("kernel") != "sensitivity":
            raise ValueError(f"resume checkpoint is from kernel {meta.get('kernel')!r}, not 'sensitivity'")
        want = {
            "layers": self.layers,
            "method": self.method,
            "mode": self.mode,
            "source": self.source,
            "reservoir_size": self.reservoir_size,
            "seed": self.seed,
        }
        if self.method == "hutchinson":
            want["probes"] = self.probes
        if self.seq_len is not None:
            want["seq_len"] = self.seq_len
        for key, value in want.items():
            if meta.get(key) != value:
                raise ValueError(
                    f"resume checkpoint was made with {key}={meta.get(key)!r}; this run has {value!r}"
                )
        self._allocate(int(meta["seq_len"]))
        for lay in self.layers:
            prefix = f"stats.{lay}."
            self.stats[lay] = WelfordState.from_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, device="cpu"
            )
        self.reservoir.load_state_dict(
            {k[len("reservoir.") :]: v for k, v in tensors.items() if k.startswith("reservoir.")}
        )
        self.generator.set_state(tensors["probe_rng"].to("cpu", torch.uint8))
        self.done, self.batches = int(meta["done"]), int(meta["batches"])
        self.resumed = True

    def snapshots(self) -> Iterator[SensitivitySnapshot]:
        started = False
        for ids, mask in self.stream.batches(self.done, self.batches):
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
                f"a batch's input_ids must be a tensor [B, S], got "
                f"{getattr(ids, 'shape', type(ids).__name__)}"
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
        maps = position_sensitivity(
            self.model,
            ids,
            mask,
            layers=self.layers,
            source=self.source,
            method=self.method,
            probes=self.probes,
            chunk_size=self.chunk_size,
            mode=self.mode,
            generator=self.generator,
        )
        B, S_b = ids.shape
        pad = self.seq_len - S_b
        for lay in self.layers:
            x = torch.nn.functional.pad(
                maps[lay].detach().to("cpu", torch.float64), (0, pad, 0, pad), value=float("nan")
            )  # [B, S_max, S_max]
            valid = torch.isfinite(x)
            self.stats[lay].update(torch.where(valid, x, 0.0), mask=valid)
        self.reservoir.add(ids, None if mask is None else mask.bool(), maps)
        self.done += B
        self.batches += 1

    def _snapshot(self) -> SensitivitySnapshot:
        stats = LayerDict(
            {lay: st.clone() for lay, st in self.stats.items()}, num_layers=self.model.num_layers
        )
        return SensitivitySnapshot(
            stats=stats,
            done=self.done,
            total=self.stream.total,
            batches=self.batches,
            layers=list(self.layers),
            method=self.method,
            mode=self.mode,
            seq_len=self.seq_len,
            reservoir=self.reservoir.copy(),
            source=self.source,
            probes=self.probes,
            batch_size=self.batch_size,
            seed=self.seed,
            probe_rng=self.generator.get_state(),
        )
