"""``tscope run`` with ``[analysis] kind = "attention"``: its runner and what it writes.

:func:`run_attention` streams :func:`~tscope_widgets.kernels.attention.iter_attention` over the data (per-cell
Welford statistics of attention weights, per-query entropy and rollout), computes every head's spectra
(:func:`~tscope_widgets.kernels.attention.head_spectra`) and, with ``sensitivity = true``, the per-sample
attention, rollout and exact sensitivity maps of the first ``correlation_samples`` sequences and their
Spearman correlation with a bootstrap interval
(:func:`~tscope_widgets.kernels.attention.attention_sensitivity_correlation`: per head, the head mean and the
rollout against the layer's sensitivity). :func:`report_attention` writes ``attention.safetensors`` +
``meta.json`` and ``report.html`` (views in :mod:`tscope_widgets.figures.attention`). Kept apart from
:mod:`.runs` and :mod:`.reports`, which are long enough.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..models import ModelAdapter, adapt
from .config import AttentionConfig, ConfigError, RunConfig
from .prepare import Dataset, Prepared, position_token_labels
from .reports import _model_summary, _print_paths, _save_model, run_header
from .runs import _kernel_errors, _last_snapshot, parse_layers

__all__ = ["AttentionResult", "run_attention", "attention_tensors", "attention_meta", "report_attention"]


@dataclass
class AttentionResult:
    """What :func:`run_attention` computed.

    Attributes:
        snapshot: The last :class:`~tscope_widgets.kernels.attention.AttentionSnapshot` (whole data set).
        spectra: :class:`~tscope_widgets.kernels.attention.HeadSpectra` of the tracked layers (float64).
        layers: Block indices.
        correlation: ``{layer: AttentionSensitivityCorrelation}`` or None (``sensitivity = false``).
        correlation_samples: Sequences the correlation used (0 without it).
        correlation_data: ``{"input_ids": [n, S], "attention_mask"?: [n, S]}`` of those sequences.
        seconds: Time per step.
        warnings: Messages of the kernels' warnings.
    """

    snapshot: Any
    spectra: Any
    layers: list[int]
    correlation: dict[int, Any] | None = None
    correlation_samples: int = 0
    correlation_data: dict[str, Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def attention_layers(spec, adapter: ModelAdapter) -> list[int]:
    """``"all"`` → every block; else block indices (``"final"`` is refused: it is a norm, not attention)."""
    if spec == "all":
        return list(range(adapter.num_layers))
    layers = parse_layers(spec, adapter)
    if "final" in layers:
        raise ConfigError("[analysis].layers: 'final' is the final norm, not an attention layer; use block indices")
    return layers


def _first_sequences(dataset: Dataset, n: int, max_seq_len: int | None) -> tuple[Tensor, Tensor | None]:
    """The first ``n`` sequences of the data as ``(ids [n, S], mask [n, S] or None)``."""
    from ..data import batch_stream

    stream = batch_stream(dataset.data, n, max_seq_len, dataset.tokenizer)
    ids, mask = next(iter(stream.batches(0, 0)))
    return ids, mask


def run_attention(prepared: Prepared, dataset: Dataset, analysis: AttentionConfig, progress: bool) -> AttentionResult:
    """Attention statistics over the data, head spectra and (optionally) the correlation with sensitivity.

    Raises:
        ConfigError: For layers or arguments the kernels refuse, with the kernel's message.
    """
    from ..kernels.attention import (
        attention_sensitivity_correlation,
        attention_sensitivity_samples,
        head_spectra,
        iter_attention,
    )

    adapter = adapt(prepared.model)
    layers = attention_layers(analysis.layers, adapter)
    dtype = analysis.torch_dtype
    caught: list[str] = []
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    with _kernel_errors("[analysis]", caught):
        stream = iter_attention(adapter, dataset.data, layers=layers, batch_size=analysis.batch_size,
                                max_seq_len=analysis.max_seq_len, tokenizer=dataset.tokenizer, dtype=dtype)
        snapshot = _last_snapshot(stream, "attention", "sample", progress)
        lap("statistics")
        spectra = head_spectra(adapter, layers, dtype=torch.float64)
        lap("spectra")
        result = AttentionResult(snapshot, spectra, layers, seconds=seconds, warnings=caught)
        if analysis.sensitivity:
            ids, mask = _first_sequences(dataset, analysis.correlation_samples, analysis.max_seq_len)
            att, roll, sens = attention_sensitivity_samples(adapter, ids, mask, layers=layers, dtype=dtype,
                                                            chunk_size=analysis.chunk_size)
            n = att[layers[0]].shape[1]
            maps = {b: torch.cat([att[b], att[b].mean(1, keepdim=True), roll[b][:, None]], 1) for b in layers}
            labels = [f"head{h}" for h in range(n)] + ["head mean", "rollout"]
            result.correlation = attention_sensitivity_correlation(
                maps, {b: sens[b] for b in layers}, mask, labels=labels, causal=adapter.causal,
                num_bootstrap=analysis.bootstrap, seed=analysis.seed,
            )
            result.correlation_samples = int(ids.shape[0])
            result.correlation_data = {"input_ids": ids} | ({} if mask is None else {"attention_mask": mask})
            lap("correlation")
    return result


def attention_tensors(result: AttentionResult) -> dict[str, Tensor]:
    """The arrays of an attention run, as in ``attention.safetensors``.

    ``statistics.<weights|entropy|rollout>.<layer>.<welford key>`` (the snapshot's states),
    ``spectra.<singular_values|participation_ratio|...>.<kind>`` (``[L, n, r]`` / ``[L, n]``) and, with the
    correlation, ``correlation.<layer>.<rho|low|high|cells|attention_high|sensitivity_high|mean_sensitivity>``.
    """
    out = {f"statistics.{k}": v for k, v in result.snapshot.state_dict().items()}
    s = result.spectra
    for m in ("singular_values", "participation_ratio", "entropy_rank", "stable_rank", "condition_number"):
        out.update({f"spectra.{m}.{kind}": v.detach().cpu() for kind, v in getattr(s, m).items()})
    for layer, c in (result.correlation or {}).items():
        for name in ("rho", "low", "high", "cells", "attention_high", "sensitivity_high", "mean_sensitivity"):
            out[f"correlation.{layer}.{name}"] = getattr(c, name)
    out.update({f"correlation.{k}": v for k, v in result.correlation_data.items()})
    return out


def attention_meta(result: AttentionResult) -> dict[str, Any]:
    """The numbers of an attention run for ``meta.json``: counts, sizes, the correlation table, timings."""
    snap = result.snapshot
    meta = {
        "analysis": "attention",
        **snap.meta(),
        "samples": snap.done,
        "d_head": result.spectra.d_head,
        "quantity": "attention weights A_ij (query i, key j), per-query entropy (nats), rollout (Abnar & "
        "Zuidema 2020); singular values of W_Q, W_K, W_V, W_O, W_QK, W_OV per head",
        "seconds": result.seconds,
        "warnings": result.warnings,
    }
    if result.correlation is not None:
        first = next(iter(result.correlation.values()))
        meta["correlation"] = {
            "samples": result.correlation_samples,
            "confidence": first.confidence,
            "bootstrap": first.num_bootstrap,
            "interval": "percentile bootstrap over sequences (Efron & Tibshirani 1993)",
            "table": {str(layer): c.rows() for layer, c in result.correlation.items()},
        }
    return meta


def report_attention(
    config: str, cfg: RunConfig, out: Path, prepared: Prepared, dataset: Dataset, result: AttentionResult,
    start: float,
) -> None:
    """Write and print what a ``tscope run`` attention analysis found."""
    from ..export.html import save_report
    from ..export.results import save_results
    from ..figures.attention import attention_report_figures, correlation_lines

    output = cfg.output
    adapter = adapt(prepared.model)
    snap = result.snapshot
    meta = {**attention_meta(result), **run_header(config, cfg, prepared, dataset, start)}
    paths = {"results": save_results(out, "attention", attention_tensors(result), meta), "meta": out / "meta.json"}
    _save_model(paths, out, prepared, output)
    lines = []
    if result.correlation is not None:
        first = next(iter(result.correlation.values()))
        table = {layer: c.rows() for layer, c in result.correlation.items()}
        lines = correlation_lines(table, first.confidence, result.correlation_samples)
    ranks = result.spectra
    spectra_lines = [
        f"layer {layer} · head {h}: W_QK stable rank {ranks.stable_rank['qk'][i, h]:.3g}, entropy rank "
        f"{ranks.entropy_rank['qk'][i, h]:.3g}, condition number {ranks.condition_number['qk'][i, h]:.3g}; W_OV "
        f"stable rank {ranks.stable_rank['ov'][i, h]:.3g}, entropy rank {ranks.entropy_rank['ov'][i, h]:.3g}."
        for i, layer in enumerate(result.layers)
        for h in range(ranks.n_heads)
    ]
    if output.report:
        notes = [
            f"Model: {_model_summary(prepared, adapter)}.",
            f"Attention statistics over {snap.done} samples ({cfg.analysis.dtype}); maps: row i = query, column "
            "j = key; grey = no data.",
            *lines,
            *spectra_lines,
            *(f"Warning: {w}" for w in result.warnings),
        ]
        weights = {lay: snap.weights[lay].mean for lay in result.layers}
        rollout = {lay: snap.rollout[lay].mean for lay in result.layers}
        sens = None
        if result.correlation is not None:
            sens = {lay: c.mean_sensitivity for lay, c in result.correlation.items()}
        figures = attention_report_figures(
            weights, rollout, result.spectra.singular_values, result.layers, sens,
            token_labels=position_token_labels(dataset, snap.seq_len), log=output.log,
        )
        paths["report"] = save_report(out / "report.html", figures, title=f"tscope run: {Path(config).name}",
                                      notes=notes)
    _print_paths(paths)
    for line in lines:
        print(line)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"attention took {sum(result.seconds.values()):.1f} s.")
