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
from ..fingerprint import LazyFingerprint, fingerprint_difference
from ..reservoir import SampleReservoir, set_generator_state
from ..streaming import BatchRun, check_counters, check_welford, checkpoint_where
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
        dtype: Compute dtype of the analysis copy, e.g. ``"torch.float64"``.
        max_seq_len: The ``max_seq_len`` argument of the run.
        data_sha256: sha256 of the batches processed so far (:class:`~..fingerprint.DataHasher`).
        model_fingerprint: :class:`~..fingerprint.LazyFingerprint` of the analysed model, or ``None``;
            computed when :meth:`meta` is first called (e.g. by a checkpoint writer).
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
    dtype: str = ""
    max_seq_len: int | None = None
    data_sha256: str = ""
    model_fingerprint: LazyFingerprint | None = field(default=None, repr=False, compare=False)

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
            "dtype": self.dtype,
            "max_seq_len": self.max_seq_len,
            "fingerprint": {
                "model": None if self.model_fingerprint is None else self.model_fingerprint.get(),
                "data_samples": self.done,
                "data_sha256": self.data_sha256,
            },
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
    probe generator and counters are restored and the first ``batches`` batches (``done`` samples)
    are read, hashed and skipped; the result is bit-identical to an uninterrupted run. A checkpoint
    of a finished run yields its snapshot again.

    A resume is refused (``ValueError`` saying what differs) unless the checkpoint was made with the
    same model (class, parameter names and shapes, sha256 of the values: see
    :func:`~..fingerprint.model_fingerprint`), the same settings (layers, method, mode, source,
    probes for Hutchinson, dtype, batch size, max_seq_len, reservoir size, seed) and the same data
    (the sha256 of its first ``done`` samples, and its size when known). The restored state is
    checked too: counters, counts (integral, at most ``done``), finite moments, ``min <= mean <= max``,
    reservoir token ids inside the vocabulary, generator states. Checkpoints written before
    fingerprints existed are refused: they cannot be checked, so start a new run.

    Args:
        adapter: Model or :class:`ModelAdapter`; analysed on a private copy, without the hooks
            registered on its modules (they are not run).
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
    run.max_seq_len = max_seq_len
    if resume is not None:
        run.restore(resume)
    return run.snapshots()


class _Run(BatchRun):
    """The state of one :func:`iter_sensitivity` run: statistics, reservoir, generator (counters and resume:
    :class:`~.streaming.BatchRun`)."""

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
        super().__init__(model, stream)
        self.layers, self.source = layers, source
        self.method, self.mode, self.probes, self.chunk_size = method, mode, probes, chunk_size
        self.batch_size, self.reservoir_size, self.seed = batch_size, reservoir_size, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.stats: LayerDict | None = None
        self.reservoir: SampleReservoir | None = None
        self.max_seq_len: int | None = None
        self.dtype = str(model.dtype)
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
        where = checkpoint_where(checkpoint)
        fingerprint = meta.get("fingerprint")
        if not isinstance(fingerprint, Mapping) or not isinstance(fingerprint.get("model"), Mapping):
            raise ValueError(
                f"{where} has no model and data fingerprint (it was written before checkpoints recorded "
                "one), so it cannot be checked against this model and data; start a new run"
            )
        want = {
            "layers": self.layers,
            "method": self.method,
            "mode": self.mode,
            "source": self.source,
            "reservoir_size": self.reservoir_size,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "max_seq_len": self.max_seq_len,
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
        diff = fingerprint_difference(fingerprint["model"], self.model_fp.get())
        if diff is not None:
            raise ValueError(f"the checkpoint was made with another model: {diff}")
        done, batches, seq_len = check_counters(meta, where)
        self._allocate(seq_len)
        for lay in self.layers:
            prefix = f"stats.{lay}."
            part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                self.stats[lay] = WelfordState.from_state_dict(part, device="cpu")
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where}: field stats.{lay}: {err}") from None
            check_welford(self.stats[lay], done, f"{where}: field stats.{lay}")
        try:
            self.reservoir.load_state_dict(
                {k[len("reservoir.") :]: v for k, v in tensors.items() if k.startswith("reservoir.")}
            )
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{where}: field reservoir: {err}") from None
        _check_reservoir(self.reservoir, done, self.model.vocab_size, where)
        if not isinstance(tensors.get("probe_rng"), Tensor):
            raise ValueError(f"{where}: field probe_rng is missing")
        _set_rng(self.generator, tensors["probe_rng"], f"{where}: field probe_rng")
        self.done, self.batches = done, batches
        self._skip_resumed(fingerprint)
        self.resumed = True

    def _update(self, ids: Tensor, mask: Tensor | None) -> None:
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
        S_b = ids.shape[1]
        pad = self.seq_len - S_b
        for lay in self.layers:
            x = torch.nn.functional.pad(
                maps[lay].detach().to("cpu", torch.float64), (0, pad, 0, pad), value=float("nan")
            )  # [B, S_max, S_max]
            valid = torch.isfinite(x)
            self.stats[lay].update(torch.where(valid, x, 0.0), mask=valid)
        self.reservoir.add(ids, None if mask is None else mask.bool(), maps)

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
            dtype=self.dtype,
            max_seq_len=self.max_seq_len,
            data_sha256=self.hasher.hexdigest(),
            model_fingerprint=self.model_fp,
        )


# ---------------------------------------------------------------------------- checks of a resumed state
def _check_reservoir(reservoir: SampleReservoir, done: int, vocab_size: int, where: str) -> None:
    """``seen`` equal to ``done``, token ids inside the vocabulary, sample indices below ``done``."""
    if reservoir.seen != done:
        raise ValueError(f"{where}: field reservoir.seen={reservoir.seen}, but meta.done is {done}")
    ids = reservoir.input_ids
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"{where}: field reservoir.input_ids holds ids in [{int(ids.min())}, {int(ids.max())}], "
            f"outside the model's vocabulary [0, {vocab_size})"
        )
    idx = reservoir.sample_index
    if idx.numel() and (int(idx.min()) < -1 or int(idx.max()) >= done):
        raise ValueError(f"{where}: field reservoir.sample_index outside [-1, {done})")


def _set_rng(generator: torch.Generator, state: Tensor, where: str) -> None:
    """Set a CPU generator's state from a checkpoint, refusing a malformed one (:func:`set_generator_state`)."""
    set_generator_state(generator, state, where)
