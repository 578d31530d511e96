"""Attention geometry: per-head weights, their spectra and effective ranks, attention over data sets.

Modules, data flowing down the list:

- :mod:`.heads`: :func:`head_weights`, every head's ``W_Q, W_K, W_V, W_O`` as views (the slicing of
  each architecture is the adapter's, :mod:`tscope_widgets.models.heads`).
"""

from ...models.heads import HeadWeights, LayerHeads
from .heads import head_weights, stacked_heads

__all__ = ["HeadWeights", "LayerHeads", "head_weights", "stacked_heads"]
