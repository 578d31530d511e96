"""Attention geometry: per-head weights, their spectra and effective ranks, attention over data sets.

Modules, data flowing down the list:

- :mod:`.heads`: :func:`head_weights`, every head's ``W_Q, W_K, W_V, W_O`` as views (the slicing of
  each architecture is the adapter's, :mod:`tscope_widgets.models.heads`);
- :mod:`.geometry`: :func:`head_spectra`, singular values of ``W_Q, W_K, W_V, W_O`` and of the circuits
  ``W_QK``, ``W_OV``, with participation ratio, entropy rank, stable rank and condition number;
- :mod:`.maps`: per-batch per-query attention entropy and attention rollout;
- :mod:`.stream`: :func:`iter_attention`, per-cell statistics of weights, entropy and rollout over a
  data set, streamed batch by batch and resumable;
- :mod:`.correlation`: :func:`attention_sensitivity_correlation`, Spearman correlation of mean attention
  (per head, head mean, rollout) with mean sensitivity over cells, with a bootstrap interval.
"""

from ...models.heads import HeadWeights, LayerHeads
from .correlation import (
    AttentionSensitivityCorrelation,
    attention_sensitivity_correlation,
    attention_sensitivity_samples,
    correlation_maps,
    layer_correlations,
)
from .geometry import (
    KINDS,
    HeadSpectra,
    circuit_singular_values,
    condition_number,
    entropy_rank,
    head_spectra,
    participation_ratio,
    stable_rank,
)
from .heads import head_weights, stacked_heads
from .maps import attention_entropy, attention_rollout
from .stream import AttentionSnapshot, iter_attention

__all__ = [
    "HeadWeights",
    "LayerHeads",
    "head_weights",
    "stacked_heads",
    "HeadSpectra",
    "head_spectra",
    "KINDS",
    "circuit_singular_values",
    "participation_ratio",
    "entropy_rank",
    "stable_rank",
    "condition_number",
    "attention_entropy",
    "attention_rollout",
    "iter_attention",
    "AttentionSnapshot",
    "attention_sensitivity_correlation",
    "attention_sensitivity_samples",
    "AttentionSensitivityCorrelation",
    "correlation_maps",
    "layer_correlations",
]
