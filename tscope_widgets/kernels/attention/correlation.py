r"""Attention against sensitivity: rank correlation of mean maps over cells, with a bootstrap interval.

For one layer, per-sample attention maps ``A_n [M, S, S]`` (``M`` = heads, the head mean, or the rollout)
and per-sample sensitivity maps ``s_n [S, S]`` of the *same* samples ``n = 1..N`` give the mean maps
:math:`\bar A_m(i, j)` and :math:`\bar s(i, j)` (each cell averaged over the samples in which it is a
token-token cell). Over the valid cells ``c = (i, j)`` (``i != j``, ``j < i`` for causal models, a token
pair in every sample) the statistic is Spearman's rank correlation

.. math::

    \rho_m = \operatorname{corr}\big(\operatorname{rank} \bar A_m(c), \operatorname{rank} \bar s(c)\big),

with average ranks for ties (as :func:`scipy.stats.spearmanr`). Its uncertainty over samples comes from
the nonparametric bootstrap (Efron, 1979, "Bootstrap methods: another look at the jackknife", Ann. Statist.
7(1)): ``B`` resamplings of the ``N`` samples with replacement, each giving mean maps and a :math:`\rho^*_b`;
the interval is the percentile interval, the :math:`\alpha/2` and :math:`1 - \alpha/2` quantiles of the
:math:`\rho^*_b` (Efron & Tibshirani, 1993, *An Introduction to the Bootstrap*, §13.3).

When it holds: ranks of *sample* means are noisy where the per-cell standard error of a mean is comparable
to the gaps between the cell means; rank swaps then pull :math:`\hat\rho` toward zero (attenuation), and
more cells (smaller gaps) pull harder. The interval covers the population value at its nominal rate when the
standard errors are small against those gaps (tested: 95% intervals, 28 cells, standard error 0.01 against
mean gaps of about 0.04, coverage 0.97-0.99), and under-covers a strong correlation otherwise (about 0.8 at
standard errors equal to the gaps; a bias-corrected interval over-corrects there and helps little). Use
more samples when the interval matters. The per-cell standard errors of the Welford states say which
regime a run is in.

Why per-sample maps of a bounded set, and not the streamed population means: a bootstrap over samples
needs the samples, and the two statistics must come from the same samples so that the resampling keeps
their pairing. :func:`attention_sensitivity_samples` computes both maps of one set of sequences (exact
sensitivity, eager attention, one analysis copy); the CLI takes its first ``correlation_samples`` sequences.
The Welford means of :func:`~.stream.iter_attention` and
:func:`~tscope_widgets.kernels.sensitivity.iter_sensitivity` over the whole data set are the numbers to
plot; this correlation is about a subset of them, and says how many samples it used.

Per-head "sensitivity through this head" (the Jacobian with every other head's output held fixed) is not
computed: it needs one full sensitivity computation per head with the others detached, ``n_heads``
times the cost of the layer's map, and adapters have no uniform hook inside the fused attention of every
family. Heads are compared with the layer's sensitivity instead.

The discordant cells of each map are listed: the ``top`` cells with the largest gap of normalised ranks
(rank / number of cells), one list where attention is high and sensitivity low and one for the opposite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ...models.adapter import Layer, LayerDict, ModelAdapter
from ..sensitivity.maps import analysis_adapter, position_sensitivity
from .maps import attention_rollout

__all__ = [
    "AttentionSensitivityCorrelation",
    "attention_sensitivity_correlation",
    "attention_sensitivity_samples",
    "layer_correlations",
    "correlation_maps",
    "average_ranks",
    "spearman",
]

BOOTSTRAP_CHUNK = 64  # replicates per vectorised block: [chunk, M, cells] in memory at a time


def average_ranks(x: Tensor) -> Tensor:
    """Ranks ``1..n`` along the last axis, ties given their average rank (as ``scipy.stats.rankdata``).

    Args:
        x: ``[..., n]`` floating, finite.

    Returns:
        ``[..., n]`` ranks in ``x``'s dtype.
    """
    s = x.sort(dim=-1).values.contiguous()
    left = torch.searchsorted(s, x.contiguous(), right=False)  # elements strictly smaller
    right = torch.searchsorted(s, x.contiguous(), right=True)  # elements smaller or equal
    return (left + right + 1).to(x.dtype) / 2


def spearman(x: Tensor, y: Tensor) -> Tensor:
    r"""Spearman's :math:`\rho` along the last axis: Pearson correlation of average ranks.

    Args:
        x: ``[..., n]`` floating, finite, ``n >= 2``.
        y: Broadcastable to ``x``.

    Returns:
        ``[...]``; NaN where one side is constant (as :func:`scipy.stats.spearmanr`).
    """
    x, y = torch.broadcast_tensors(x, y)
    rx, ry = average_ranks(x), average_ranks(y)
    rx = rx - rx.mean(-1, keepdim=True)
    ry = ry - ry.mean(-1, keepdim=True)
    den = (rx.square().sum(-1) * ry.square().sum(-1)).sqrt()
    return torch.where(den > 0, (rx * ry).sum(-1) / den, torch.full_like(den, math.nan))


@dataclass(frozen=True)
class AttentionSensitivityCorrelation:
    """Spearman correlation of one layer's mean attention maps with its mean sensitivity map.

    Attributes:
        labels: Names of the ``M`` attention maps (``"head0"``, ..., ``"mean"``, or ``"rollout"``).
        rho: ``[M]`` float64, Spearman's rho of each mean map with the mean sensitivity over ``cells``.
        low: ``[M]`` lower bound of the percentile bootstrap interval.
        high: ``[M]`` upper bound.
        confidence: Coverage of the interval, e.g. 0.95.
        num_bootstrap: Bootstrap replicates ``B``.
        num_samples: Samples ``N`` the maps were averaged over.
        cells: ``[C, 2]`` int64 ``(query i, key j)`` of the cells compared.
        attention_high: ``[M, k, 2]`` cells where attention ranks high and sensitivity low, most
            discordant first.
        sensitivity_high: ``[M, k, 2]`` cells where sensitivity ranks high and attention low.
        mean_attention: ``[M, S, S]`` float64 mean maps over the samples in which a cell is a token pair
            (every cell, the diagonal included; NaN where no sample has one), for plots.
        mean_sensitivity: ``[S, S]`` float64 mean sensitivity map, likewise.
    """

    labels: list[str]
    rho: Tensor
    low: Tensor
    high: Tensor
    confidence: float
    num_bootstrap: int
    num_samples: int
    cells: Tensor
    attention_high: Tensor
    sensitivity_high: Tensor
    mean_attention: Tensor
    mean_sensitivity: Tensor

    def rows(self) -> list[dict]:
        """One JSON-ready dict per map: label, rho, low, high, cells and samples (for tables)."""
        return [
            {
                "map": lab,
                "rho": float(self.rho[m]),
                "low": float(self.low[m]),
                "high": float(self.high[m]),
                "cells": int(self.cells.shape[0]),
                "samples": self.num_samples,
                "attention_high": self.attention_high[m].tolist(),
                "sensitivity_high": self.sensitivity_high[m].tolist(),
            }
            for m, lab in enumerate(self.labels)
        ]


def _check_maps(attention: Tensor, sensitivity: Tensor, token_mask: Tensor | None, where: str):
    if not isinstance(attention, Tensor) or not attention.dtype.is_floating_point or attention.ndim not in (3, 4):
        raise ValueError(
            f"{where}: attention must be a floating tensor [N, S, S] (rollout) or [N, n_heads, S, S], got "
            f"{getattr(attention, 'dtype', type(attention).__name__)} {list(getattr(attention, 'shape', []))}"
        )
    N, S = attention.shape[0], attention.shape[-1]
    if attention.shape[-2] != S:
        raise ValueError(f"{where}: attention maps must be square [.., S, S], got {list(attention.shape)}")
    if (
        not isinstance(sensitivity, Tensor)
        or not sensitivity.dtype.is_floating_point
        or tuple(sensitivity.shape) != (N, S, S)
    ):
        raise ValueError(
            f"{where}: sensitivity must be a floating tensor [N, S, S] = {[N, S, S]} (the same samples as the "
            f"attention maps), got {getattr(sensitivity, 'dtype', type(sensitivity).__name__)} "
            f"{list(getattr(sensitivity, 'shape', []))}"
        )
    if N < 2:
        raise ValueError(f"{where}: a bootstrap over samples needs at least 2 samples, got {N}")
    if token_mask is None:
        token_mask = torch.ones(N, S, dtype=torch.bool)
    elif not isinstance(token_mask, Tensor) or tuple(token_mask.shape) != (N, S):
        raise ValueError(
            f"{where}: attention_mask must be [N, S] = {[N, S]} (1 = token, 0 = padding), got "
            f"{list(getattr(token_mask, 'shape', [type(token_mask).__name__]))}"
        )
    return token_mask.to(attention.device).bool()


def _cell_mask(token_mask: Tensor, causal: bool) -> Tensor:
    """``[N, S, S]``: token-token cells off the diagonal (below it for causal models)."""
    S = token_mask.shape[1]
    i = torch.arange(S, device=token_mask.device)
    keep = (i[None, :] < i[:, None]) if causal else (i[None, :] != i[:, None])  # [S, S]
    return token_mask[:, :, None] & token_mask[:, None, :] & keep


def _percentile_interval(boot: Tensor, confidence: float) -> tuple[Tensor, Tensor]:
    """Percentile bounds ``[M]`` of replicates ``boot [B, M]`` (linear interpolation between order statistics)."""
    q = torch.tensor([0.5 - confidence / 2, 0.5 + confidence / 2], dtype=boot.dtype)
    low, high = torch.quantile(boot, q, dim=0)
    return low, high


def _correlate_layer(
    attention: Tensor,
    sensitivity: Tensor,
    token_mask: Tensor | None,
    labels: list[str] | None,
    causal: bool,
    num_bootstrap: int,
    confidence: float,
    generator: torch.Generator,
    top: int,
    where: str,
) -> AttentionSensitivityCorrelation:
    token_mask = _check_maps(attention, sensitivity, token_mask, where)
    A = attention.to(torch.float64)
    if A.ndim == 3:
        A = A[:, None]  # [N, 1, S, S]
    N, M, S, _ = A.shape
    if labels is None:
        labels = [f"map{m}" for m in range(M)]
    if len(labels) != M:
        raise ValueError(f"{where}: {len(labels)} labels for {M} attention maps")
    s = sensitivity.to(A.device, torch.float64)
    valid = _cell_mask(token_mask, causal)  # [N, S, S]
    every = valid.all(0)  # cells that are token-token in every sample
    if int(every.sum()) < 3:
        raise ValueError(
            f"{where}: only {int(every.sum())} off-diagonal cells are token pairs in every sample; a rank "
            "correlation needs at least 3: use longer sequences, or samples of equal length (less padding)"
        )
    finite = torch.isfinite(A[:, :, every]).all() and torch.isfinite(s[:, every]).all()
    if not finite:
        raise ValueError(
            f"{where}: attention or sensitivity is not finite on token cells; check the model and data "
            "(nan/inf), or compute the maps in float64"
        )
    pairs = token_mask[:, :, None] & token_mask[:, None, :]  # [N, S, S], every token-token cell
    count = pairs.sum(0)  # [S, S]
    nan = torch.full((S, S), math.nan, dtype=torch.float64, device=A.device)
    mean_s = torch.where(count > 0, (torch.where(pairs, s, 0.0)).sum(0) / count.clamp(min=1), nan)
    mean_a = torch.where(count > 0, (torch.where(pairs[:, None], A, 0.0)).sum(0) / count.clamp(min=1), nan)
    cells = every.nonzero()  # [C, 2]
    xa = A[:, :, every]  # [N, M, C]
    xs = s[:, every]  # [N, C] (every sample counts every such cell)
    rho = spearman(xa.mean(0), xs.mean(0)[None])  # [M]

    boots = []
    for start in range(0, num_bootstrap, BOOTSTRAP_CHUNK):
        b = min(BOOTSTRAP_CHUNK, num_bootstrap - start)
        idx = torch.randint(0, N, (b, N), generator=generator).to(A.device)
        counts = torch.zeros(b, N, dtype=torch.float64, device=A.device).scatter_add_(
            1, idx, torch.ones(b, N, dtype=torch.float64, device=A.device)
        )  # [b, N] resampling weights
        ma = torch.einsum("bn,nmc->bmc", counts, xa) / N
        ms = torch.einsum("bn,nc->bc", counts, xs) / N
        boots.append(spearman(ma, ms[:, None]))  # [b, M]
    boot = torch.cat(boots).cpu()
    low, high = _percentile_interval(boot, confidence)

    C = cells.shape[0]
    k = min(top, C)
    ra = average_ranks(xa.mean(0)) / C  # [M, C] normalised ranks
    rs = average_ranks(xs.mean(0)) / C  # [C]
    gap = ra - rs[None]  # [M, C]
    att_hi = cells[gap.topk(k, dim=-1).indices]  # [M, k, 2]
    sens_hi = cells[(-gap).topk(k, dim=-1).indices]
    return AttentionSensitivityCorrelation(
        labels=list(labels),
        rho=rho.cpu(),
        low=low,
        high=high,
        confidence=confidence,
        num_bootstrap=num_bootstrap,
        num_samples=N,
        cells=cells.cpu(),
        attention_high=att_hi.cpu(),
        sensitivity_high=sens_hi.cpu(),
        mean_attention=mean_a.cpu(),
        mean_sensitivity=mean_s.cpu(),
    )


def attention_sensitivity_correlation(
    attention: Tensor | Mapping[Layer, Tensor],
    sensitivity: Tensor | Mapping[Layer, Tensor],
    attention_mask: Tensor | None = None,
    *,
    labels: list[str] | Mapping[Layer, list[str]] | None = None,
    causal: bool = True,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    top: int = 10,
    seed: int = 0,
) -> AttentionSensitivityCorrelation | dict[Layer, AttentionSensitivityCorrelation]:
    r"""Spearman correlation of mean attention with mean sensitivity over cells, with a bootstrap interval.

    See the module docstring for the statistic, the valid cells, the percentile bootstrap interval and
    when it covers (per-cell standard errors small against the gaps between cell means). Attention of
    ``n_heads`` heads gives one correlation per head against the layer's sensitivity; add the head mean
    (or pass the rollout) as further maps along the ``M`` axis.

    Args:
        attention: Per-sample maps ``[N, M, S, S]`` or ``[N, S, S]`` (query rows, key columns), or
            ``{layer: ...}``; floating, finite on token cells.
        sensitivity: Per-sample ``s_ij`` ``[N, S, S]`` of the same samples, or ``{layer: ...}`` with the
            same layers. NaN at padding is allowed.
        attention_mask: ``[N, S]`` 1 for tokens, 0 for padding, or ``None`` (all tokens).
        labels: Names of the ``M`` maps (per layer with a mapping); default ``map0..``.
        causal: Compare only cells below the diagonal (``j < i``): above it a causal model has exact zeros.
        num_bootstrap: Replicates ``B >= 100``.
        confidence: Interval coverage in ``(0, 1)``.
        top: Discordant cells listed per map and direction (``>= 1``).
        seed: Seed of the resampling generator (results are reproducible).

    Returns:
        An :class:`AttentionSensitivityCorrelation`, or ``{layer: ...}`` for mappings.

    Raises:
        ValueError: Shapes that differ, fewer than 2 samples or 3 cells, non-finite maps, bad options.
        TypeError: A mapping on one side only.
    """
    if isinstance(num_bootstrap, bool) or not isinstance(num_bootstrap, int) or num_bootstrap < 100:
        raise ValueError(
            f"num_bootstrap must be an int >= 100 (percentile bounds need replicates), got {num_bootstrap!r}"
        )
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a float in (0, 1), e.g. 0.95, got {confidence!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an int >= 1, got {top!r}")
    gen = torch.Generator().manual_seed(seed)
    options = dict(causal=causal, num_bootstrap=num_bootstrap, confidence=float(confidence), generator=gen, top=top)
    if isinstance(attention, Mapping) != isinstance(sensitivity, Mapping):
        raise TypeError("attention and sensitivity must both be tensors or both be {layer: tensor} mappings")
    if not isinstance(attention, Mapping):
        return _correlate_layer(attention, sensitivity, attention_mask, labels, where="maps", **options)
    if set(attention) != set(sensitivity):
        raise ValueError(
            f"attention has layers {sorted(attention, key=str)} and sensitivity {sorted(sensitivity, key=str)}; "
            "pass the same layers"
        )
    out = {}
    for layer in attention:
        lab = labels.get(layer) if isinstance(labels, Mapping) else labels
        out[layer] = _correlate_layer(
            attention[layer], sensitivity[layer], attention_mask, lab, where=f"layer {layer}", **options
        )
    return out


def attention_sensitivity_samples(
    adapter: ModelAdapter | torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    layers: Layer | Iterable[Layer] = "all",
    dtype: torch.dtype | None = torch.float64,
    chunk_size: int | None = None,
) -> tuple[LayerDict, LayerDict, LayerDict]:
    """Per-sample attention, rollout and exact sensitivity maps of the same sequences, for the correlation.

    One analysis copy (eager attention) gives the attention weights of blocks ``0..max(layers)`` and the
    rollout (:func:`~.maps.attention_rollout`); :func:`position_sensitivity` (``method="exact"``, source
    the embeddings) gives ``s_ij`` of each requested block's output on the same copy.

    Args:
        adapter: Model or :class:`ModelAdapter` (not modified).
        input_ids: ``[N, S]`` token ids.
        attention_mask: ``[N, S]`` 1/0 or ``None``.
        layers: Block indices or ``"all"``.
        dtype: Compute dtype (float64 by default).
        chunk_size: Passed to :func:`position_sensitivity`.

    Returns:
        ``(attention, rollout, sensitivity)``: ``{block: [N, n_heads, S, S]}``, ``{block: [N, S, S]}``,
        ``{block: [N, S, S]}``, float64 on the CPU (sensitivity NaN at padding).
    """
    model = analysis_adapter(adapter, dtype)
    if model.attention_kind != "softmax":
        raise ValueError(f"the model's attention is {model.attention_kind!r}, not softmax: rollout is undefined")
    if isinstance(layers, str) and layers == "all":
        layers = range(model.num_layers)
    elif isinstance(layers, (int, str)):
        layers = [layers]
    blocks = sorted({model.attention_block(lay) for lay in layers})
    if not blocks:
        raise ValueError("no layers requested: pass block indices or 'all'")
    weights = model.attention_weights(input_ids, attention_mask, layers=range(blocks[-1] + 1))
    real = None if attention_mask is None else attention_mask.to("cpu").bool()
    roll = attention_rollout([weights[b].detach().cpu() for b in range(blocks[-1] + 1)], real)
    sens = position_sensitivity(
        model, input_ids, attention_mask, layers=blocks, method="exact", dtype=model.dtype, chunk_size=chunk_size
    )
    L = model.num_layers
    att = LayerDict({b: weights[b].detach().to("cpu", torch.float64) for b in blocks}, num_layers=L)
    rol = LayerDict({b: roll[b].to(torch.float64) for b in blocks}, num_layers=L)
    sen = LayerDict({b: sens[b].detach().to("cpu", torch.float64) for b in blocks}, num_layers=L)
    return att, rol, sen


def correlation_maps(attention: Tensor, rollout: Tensor) -> tuple[Tensor, list[str]]:
    """The maps one layer's correlation compares with sensitivity: every head, the head mean, the rollout.

    Args:
        attention: Per-sample weights ``[N, n_heads, S, S]``.
        rollout: Per-sample rollout after the layer ``[N, S, S]``.

    Returns:
        ``([N, n_heads + 2, S, S], labels)`` with labels ``head0 .. head{n-1}, "head mean", "rollout"``.
    """
    if attention.ndim != 4 or rollout.ndim != 3 or attention.shape[0] != rollout.shape[0]:
        raise ValueError(
            f"attention must be [N, n_heads, S, S] and rollout [N, S, S] of the same samples, got "
            f"{list(attention.shape)} and {list(rollout.shape)}"
        )
    n = attention.shape[1]
    maps = torch.cat([attention, attention.mean(1, keepdim=True), rollout[:, None].to(attention.dtype)], 1)
    return maps, [f"head{h}" for h in range(n)] + ["head mean", "rollout"]


def layer_correlations(
    adapter: ModelAdapter | torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    layers: Layer | Iterable[Layer] = "all",
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    top: int = 10,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
    chunk_size: int | None = None,
) -> dict[int, AttentionSensitivityCorrelation]:
    """Per layer, every head, the head mean and the rollout against the layer's sensitivity, same samples.

    :func:`attention_sensitivity_samples` then :func:`attention_sensitivity_correlation` with the maps of
    :func:`correlation_maps` (causal cells for causal models).

    Args:
        adapter: Model or :class:`ModelAdapter` (not modified).
        input_ids: ``[N, S]`` token ids, ``N >= 2``.
        attention_mask: ``[N, S]`` 1/0 or ``None``.
        layers: Block indices or ``"all"``.
        num_bootstrap: Replicates ``B >= 100`` (:func:`attention_sensitivity_correlation`).
        confidence: Interval coverage in ``(0, 1)``.
        top: Discordant cells listed per map and direction.
        seed: Seed of the resampling.
        dtype: Compute dtype of the maps (float64 by default).
        chunk_size: Passed to :func:`position_sensitivity`.

    Returns:
        ``{block: AttentionSensitivityCorrelation}`` with ``n_heads + 2`` maps each.
    """
    from ...models.registry import adapt

    model = adapt(adapter)
    att, roll, sens = attention_sensitivity_samples(
        model, input_ids, attention_mask, layers=layers, dtype=dtype, chunk_size=chunk_size
    )
    out = {}
    for block in att:
        maps, labels = correlation_maps(att[block], roll[block])
        out[block] = attention_sensitivity_correlation(
            maps, sens[block], attention_mask, labels=labels, causal=model.causal,
            num_bootstrap=num_bootstrap, confidence=confidence, top=top, seed=seed,
        )
    return out
