"""Transformer theory: closed forms and the reproduction of Ormaniec, Dangel & Singh (ICLR 2025).

- :mod:`.norms`, :mod:`.attention`: pure computations from explicit formulas (no autograd), checked in
  float64 against autograd in ``tests/kernels/theory/``: LayerNorm/RMSNorm derivatives and the
  self-attention Hessian blocks.
- :mod:`.heterogeneity`: the dense Hessian by parameter blocks and the distributions of block entries.
- :mod:`.growth`: the growth of the query and value Hessian blocks with the embedding scale, measured on
  models through :class:`~tscope_widgets.kernels.curvature.HessianOperator` (a resumable generator);
  :mod:`.model_growth`: the same on any supported model, by redrawing its input embeddings.
"""

from .attention import self_attention_hessian
from .growth import (
    GROWTH_BLOCKS,
    GROWTH_PARTS,
    GrowthRates,
    GrowthSetting,
    crossing_sigma,
    growth_exponent,
    growth_model,
    growth_sigmas,
    iter_growth_rates,
)
from .heterogeneity import HessianHeatmap, entry_histograms, hessian_heatmap
from .model_growth import iter_model_growth_rates
from .norms import layernorm_hessian, layernorm_jacobian, rmsnorm_hessian, rmsnorm_jacobian

__all__ = [
    # LayerNorm / RMSNorm
    "layernorm_jacobian",
    "layernorm_hessian",
    "rmsnorm_jacobian",
    "rmsnorm_hessian",
    # self-attention (Ormaniec, Dangel & Singh 2025)
    "self_attention_hessian",
    # growth of Hessian blocks with the embedding scale (Ormaniec, Dangel & Singh 2025)
    "GrowthSetting",
    "GrowthRates",
    "iter_growth_rates",
    "iter_model_growth_rates",
    "growth_model",
    "growth_sigmas",
    "growth_exponent",
    "crossing_sigma",
    "GROWTH_BLOCKS",
    "GROWTH_PARTS",
    # heterogeneity of the Hessian (Ormaniec, Dangel & Singh 2025)
    "HessianHeatmap",
    "hessian_heatmap",
    "entry_histograms",
]
