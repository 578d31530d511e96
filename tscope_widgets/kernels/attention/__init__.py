"""Attention geometry: per-head weights, their spectra and effective ranks, attention over data sets.

Modules, data flowing down the list:

- :mod:`.heads`: :func:`head_weights`, every head's ``W_Q, W_K, W_V, W_O`` as views (the slicing of
  each architecture is the adapter's, :mod:`tscope_widgets.models.heads`);
- :mod:`.geometry`: :func:`head_spectra`, singular values of ``W_Q, W_K, W_V, W_O`` and of the circuits
  ``W_QK``, ``W_OV``, with participation ratio, entropy rank, stable rank and condition number.
"""

from ...models.heads import HeadWeights, LayerHeads
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
]
