r"""Two models on the same samples: per-sample sensitivity differences, streamed for a paired test.

When two runs saw the same samples (two models, or two checkpoints of one model, on one data set), the
per-sample difference :math:`d_{ij} = s^{(a)}_{ij} - s^{(b)}_{ij}` cancels the variation between samples
that both models share; its population statistics feed the paired t-test
(:func:`~tscope_widgets.kernels.compare.paired_statistics`). The statistics of a difference cannot be
recovered from the two runs' own :class:`~tscope_widgets.kernels.welford.WelfordState` (they lack the
covariance), so :func:`iter_paired_sensitivity` computes both models' maps batch by batch, on the same
batches, and folds ``s_a``, ``s_b`` and ``s_a - s_b`` into three states per layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ...data import batch_stream
from ...models.adapter import LayerDict, ModelAdapter
from ..fingerprint import DataHasher
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

__all__ = ["PairedSnapshot", "iter_paired_sensitivity"]


@dataclass
class PairedSnapshot:
    """Statistics of two models' maps on the same samples after some batches; one per batch.

    Attributes:
        a: ``LayerDict {layer: WelfordState}`` of model ``a``'s maps, cells ``[S_max, S_max]``, float64, CPU.
        b: The same for model ``b``.
        differences: The same for the per-sample differences ``s_a - s_b``.
        done: Samples processed so far.
        total: Samples in the data set when known, else ``None``.
        batches: Batches processed so far.
        layers: Canonical target layer labels (the same for both models).
        seq_len: ``S_max``.
        modes: ``(mode of a, mode of b)``, each ``"reverse"`` or ``"forward"``.
        data_sha256: sha256 of the batches processed so far (as ``SensitivitySnapshot.data_sha256``).
    """

    a: LayerDict
    b: LayerDict
    differences: LayerDict
    done: int
    total: int | None
    batches: int
    layers: list[Layer]
    seq_len: int
    modes: tuple[str, str]
    data_sha256: str


def iter_paired_sensitivity(
    model_a: ModelAdapter | torch.nn.Module,
    model_b: ModelAdapter | torch.nn.Module,
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
    seed: int = 0,
) -> Iterator[PairedSnapshot]:
    r"""Stream both models' sensitivity maps on the same batches and the statistics of their differences.

    For every batch, :func:`~.maps.position_sensitivity` maps ``[B, S_b, S_b]`` of both models are
    NaN-padded to ``[B, S_max, S_max]`` and folded into :class:`WelfordState` s of ``s_a``, ``s_b`` and
    ``d = s_a - s_b`` per layer (cells padded in either map are left out). With ``method="hutchinson"``
    the two models draw the same probes (two generators seeded alike): common random numbers, so the
    probe noise largely cancels in ``d`` when the models are close.

    Args:
        model_a: Model or :class:`ModelAdapter` of run ``a`` (analysed on a private copy).
        model_b: Model or adapter of run ``b``; its layers must resolve to the same labels as ``a``'s.
        data: Any data :func:`~.stream.iter_sensitivity` accepts; read once, each batch used by both models.
        layers: Target layer(s): ints (negative count from the end), ``"final"`` or ``"all"``.
        method: ``"exact"``, ``"hutchinson"`` or ``"full"``.
        batch_size: Samples per batch (``>= 1``) for tensors and strings.
        max_seq_len: Truncation length (``>= 1``).
        tokenizer: Hugging Face tokenizer, required for strings (shared by both models).
        source: ``"embeddings"`` or a block index.
        probes: ``K >= 1`` Hutchinson probes per position.
        chunk_size: Vectors per vmapped pass; ``None`` = automatic.
        dtype: Compute dtype of both analysis copies; ``None`` = each model's, at least float32.
        mode: ``"auto"``, ``"reverse"`` or ``"forward"`` (``"auto"`` resolved per model).
        seed: Seed of the Hutchinson probes (the same for both models).

    Returns:
        A generator of :class:`PairedSnapshot`, one per batch.

    Raises:
        ValueError: Layers that resolve differently for the two models, empty data, bad sizes, plus
            everything :func:`~.maps.position_sensitivity` raises (when the generator runs), e.g. token
            ids outside a model's vocabulary.
        TypeError: Unsupported data.
    """
    _check_method_options(method, mode, probes, chunk_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    models, modes, targets = [], [], []
    for m in (model_a, model_b):
        model = analysis_adapter(m, dtype)
        tg, src = _resolve_targets(model, layers, source)
        modes.append(choose_mode(method, mode, _depths(model, tg, src), model.d_model, model.d_model, probes,
                                 model.causal))
        models.append((model, src))
        targets.append(tg)
    if targets[0] != targets[1]:
        raise ValueError(
            f"layers={layers!r} resolves to {targets[0]} for model_a but {targets[1]} for model_b; pass layer "
            "labels both models have (e.g. 'final', or non-negative block indices)"
        )
    stream = batch_stream(data, batch_size, max_seq_len, tokenizer)
    return _paired(models, modes, targets[0], stream, method, probes, chunk_size, seed)


def _paired(models, modes, targets, stream, method, probes, chunk_size, seed) -> Iterator[PairedSnapshot]:
    generators = [torch.Generator().manual_seed(seed) for _ in models]
    seq_len = stream.seq_len
    states: dict[str, LayerDict] | None = None
    hasher = DataHasher()
    done = batches = 0
    num_layers = models[0][0].num_layers
    for ids, mask in stream.batches(0, 0):
        if seq_len is None:
            seq_len = ids.shape[1]
        if states is None:
            states = {k: LayerDict({lay: WelfordState((seq_len, seq_len)) for lay in targets}, num_layers=num_layers)
                      for k in ("a", "b", "differences")}
        if ids.shape[1] > seq_len:
            if stream.seq_len is None:
                raise ValueError(
                    f"batch {batches} has length {ids.shape[1]} > {seq_len} (the first batch's); pass max_seq_len"
                )
            ids, mask = ids[:, :seq_len], None if mask is None else mask[:, :seq_len]
        maps = [
            position_sensitivity(model, ids, mask, layers=targets, source=src, method=method, probes=probes,
                                 chunk_size=chunk_size, mode=m, generator=g)
            for (model, src), m, g in zip(models, modes, generators, strict=True)
        ]
        pad = seq_len - ids.shape[1]
        for lay in targets:
            xa, xb = (_padded(mp[lay], pad) for mp in maps)  # [B, S_max, S_max] each
            valid = torch.isfinite(xa) & torch.isfinite(xb)
            xa, xb = torch.where(valid, xa, 0.0), torch.where(valid, xb, 0.0)
            states["a"][lay].update(xa, mask=valid)
            states["b"][lay].update(xb, mask=valid)
            states["differences"][lay].update(xa - xb, mask=valid)
        hasher.add(ids, mask)
        done += ids.shape[0]
        batches += 1
        yield PairedSnapshot(
            **{k: LayerDict({lay: st.clone() for lay, st in v.items()}, num_layers=num_layers)
               for k, v in states.items()},
            done=done, total=stream.total, batches=batches, layers=list(targets), seq_len=seq_len,
            modes=tuple(modes), data_sha256=hasher.hexdigest(),
        )  # fmt: skip
    if states is None:
        raise ValueError("data is empty: it yielded no batches")


def _padded(x: Tensor, pad: int) -> Tensor:
    return torch.nn.functional.pad(x.detach().to("cpu", torch.float64), (0, pad, 0, pad), value=float("nan"))
